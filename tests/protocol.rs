//! The NBD protocol at its edges, against the real binary: negotiation
//! driven by hand (nbdsh opt mode, compared with nbdkit 1.32 `memory 1M`),
//! raw frames from a socket (malformed options, bad flags, extended
//! headers, pipelining, DISC draining, bad magic), qemu-io over extended
//! headers, FUA / FAST_ZERO / CACHE on the `file` plugin, and commands
//! the export did not advertise.

use crate::common::*;
use std::process::Command;

/// A raw NBD client in python3 (only `socket` and `struct`), prepended to
/// every raw test. `C()` connects to `sys.argv[1]` and reads the greeting.
pub const RAW: &str = r#"
import socket, struct, sys
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3e889045565a9
path = sys.argv[1]
class C:
    def __init__(s, flags=3, read_greeting=True):
        s.s = socket.socket(socket.AF_UNIX); s.s.connect(path); s.s.settimeout(20)
        if read_greeting:
            g = s.rx(18); assert g[:16] == b"NBDMAGICIHAVEOPT", g
            s.hflags = struct.unpack(">H", g[16:])[0]
        if flags is not None: s.s.sendall(struct.pack(">I", flags))
    def rx(s, n):
        b = b""
        while len(b) < n:
            c = s.s.recv(n - len(b))
            if not c: raise EOFError("eof after %d of %d" % (len(b), n))
            b += c
        return b
    def closed(s):
        try:
            while True:
                c = s.s.recv(65536)
                if c == b"": return True
        except socket.timeout: return False
        except ConnectionResetError: return True
    def opt(s, o, data=b""):
        s.s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)
    def rep(s):
        m, o, t, l = struct.unpack(">QIII", s.rx(20))
        assert m == REPMAGIC, hex(m)
        return o, t, s.rx(l)
    def reps(s):
        r = []
        while True:
            o, t, d = s.rep(); r.append((o, t, d))
            if t == 1 or t & 0x80000000: return r
    def last(s, o, data=b""):
        s.opt(o, data); r = s.reps()[-1]; return (r[0], r[1])
    def go(s, name=b"", infos=()):
        s.opt(7, struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
              + b"".join(struct.pack(">H", i) for i in infos))
        return s.reps()
    def req(s, typ, off, ln, cookie, flags=0, data=b"", ext=False):
        if ext: h = struct.pack(">IHHQQQ", 0x21e41c71, flags, typ, cookie, off, ln)
        else: h = struct.pack(">IHHQQI", 0x25609513, flags, typ, cookie, off, ln)
        s.s.sendall(h + data)
    def simple(s, readlen=0):
        m, e, c = struct.unpack(">IIQ", s.rx(16)); assert m == 0x67446698, hex(m)
        return c, e, (s.rx(readlen) if e == 0 else b"")
    def chunk(s):
        m = struct.unpack(">I", s.rx(4))[0]
        if m == 0x668e33ef:
            f, t, c, l = struct.unpack(">HHQI", s.rx(16)); off = None
        elif m == 0x6e8a278c:
            f, t, c, off, l = struct.unpack(">HHQQQ", s.rx(28))
        else: raise AssertionError("not a chunk: magic %x" % m)
        return dict(flags=f, type=t, cookie=c, off=off, data=s.rx(l), magic=m)
    def chunks(s):
        r = []
        while True:
            c = s.chunk(); r.append(c)
            if c["flags"] & 1: return r
def errs(cs): return [struct.unpack(">I", c["data"][:4])[0] for c in cs if c["type"] & 0x8000]
def types(cs): return [c["type"] for c in cs]
ERR = 0x80000000
"#;

/// Run `RAW + body` with `/usr/bin/python3` against the server's socket.
pub fn raw(s: &Server, body: &str) -> String {
    let prog = format!("{RAW}\n{body}\nprint('done')\n");
    let out = run("/usr/bin/python3", &["-c", &prog, s.sock.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("done"),
        "raw client failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A libnbd script driving negotiation by hand; prints one line per
/// answer. Only answers the protocol fixes are printed (block sizes and
/// duplicate meta-context replies may legitimately differ).
const OPT_PROBE: &str = r#"
import nbd, sys
uri = sys.argv[1]
out = []
def P(*a): out.append(" ".join(str(x) for x in a))
def T(name, f):
    try: P(name, "ok", f())
    except nbd.Error as e: P(name, "err", e.errno)
def conn(sr=True, hf=None):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_request_structured_replies(sr)
    if hf is not None: h.set_handshake_flags(hf)
    h.connect_uri(uri)
    return h
for sr in (True, False):
  for hf in (None, 0, nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE):
    h = conn(sr, hf)
    P("== sr", sr, "hf", hf, h.get_structured_replies_negotiated(), h.get_handshake_flags(), h.get_protocol())
    names = []
    T("list", lambda: (h.opt_list(lambda n, d: names.append((n, d))), names)[1])
    for q in ([], ["base:allocation"], ["base:"], ["qemu:"], ["base:foo"], ["x-foo:bar", "base:allocation"]):
        h2 = conn(sr, hf)
        for x in q: h2.add_meta_context(x)
        got = []
        T("list_meta %s" % q, lambda: (h2.opt_list_meta_context(lambda n: got.append(n)), got)[1])
        h2.opt_abort()
    T("info", h.opt_info)
    T("size", h.get_size)
    T("canonical", h.get_canonical_export_name)
    T("description", h.get_export_description)
    h.set_export_name("other")
    T("info other", h.opt_info)
    h.set_export_name("")
    h.set_full_info(True)
    T("info full", h.opt_info)
    T("canonical", h.get_canonical_export_name)
    T("description", h.get_export_description)
    h.add_meta_context("base:allocation")
    T("go", h.opt_go)
    for f in "can_flush can_fua can_trim can_zero can_fast_zero can_df can_multi_conn can_cache is_read_only is_rotational".split():
        T(f, getattr(h, f))
    T("can_meta_context", lambda: h.can_meta_context("base:allocation"))
    T("write", lambda: h.pwrite(b"abc", 1000, nbd.CMD_FLAG_FUA))
    T("read", lambda: bytes(h.pread(5, 999)))
    T("zero", lambda: h.zero(2, 1001, nbd.CMD_FLAG_NO_HOLE))
    T("read", lambda: bytes(h.pread(5, 999)))
    T("trim", lambda: h.trim(4096, 8192))
    T("cache", lambda: h.cache(4096, 0))
    T("flush", h.flush)
    h.set_strict_mode(0)
    ops = (("read", lambda o, n: h.pread(n, o)), ("write", lambda o, n: h.pwrite(b"x" * n, o)),
           ("zero", lambda o, n: h.zero(n, o)), ("trim", lambda o, n: h.trim(n, o)),
           ("cache", lambda o, n: h.cache(n, o)))
    for nm, f in ops:
        for (o, n) in ((1048574, 5), (1048576, 1), (2**64 - 1, 2), (2**63, 1), (1048575, 1), (0, 0)):
            T("%s %d+%d" % (nm, o, n), lambda: f(o, n))
    T("read badflag", lambda: h.pread(1, 0, 0x40))
    T("write badflag", lambda: h.pwrite(b"x", 0, 0x40))
    T("read nohole", lambda: h.pread(1, 0, nbd.CMD_FLAG_NO_HOLE))
    T("write nohole", lambda: h.pwrite(b"x", 0, nbd.CMD_FLAG_NO_HOLE))
    T("trim nohole", lambda: h.trim(4096, 0, nbd.CMD_FLAG_NO_HOLE))
    T("read fua", lambda: bytes(h.pread(1, 1000, nbd.CMD_FLAG_FUA)))
    T("flush fua", lambda: h.flush(nbd.CMD_FLAG_FUA))
    if sr:
        T("read df", lambda: bytes(h.pread(1, 1000, nbd.CMD_FLAG_DF)))
        T("block_status", lambda: (lambda l: (h.block_status(65536, 0, lambda m, o, e, err: l.append((m, o, e))), l)[1])([]))
        T("block_status 0", lambda: h.block_status(0, 0, lambda *a: 0))
        T("block_status past", lambda: h.block_status(10, 1048574, lambda *a: 0))
    T("zero fast", lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))
    T("still", lambda: bytes(h.pread(3, 1000)))
    h.shutdown()
print("\n".join(out))
"#;

fn probe(server: &mut Command, dir: &std::path::Path) -> String {
    let script = dir.join("probe.py");
    std::fs::write(&script, OPT_PROBE).unwrap();
    let out = server
        .env("PATH", sys_path())
        .arg("--run")
        .arg(format!("python3 {} \"$uri\"", script.display()))
        .output()
        .expect("run server");
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn opt_mode_answers_match_nbdkit() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Command::new("nbdkit");
    k.args(["-U", "-", "memory", "1M"]);
    let theirs = probe(&mut k, dir.path());
    let mut o = nbdscript();
    o.args(["memory", "1M"]);
    let ours = probe(&mut o, dir.path());
    assert!(ours.lines().count() > 300, "{ours}");
    for (a, b) in theirs.lines().zip(ours.lines()) {
        assert_eq!(
            a, b,
            "nbdkit vs nbdscript\n--- nbdkit:\n{theirs}\n--- ours:\n{ours}"
        );
    }
    assert_eq!(theirs.lines().count(), ours.lines().count());
    // Spot checks that the comparison saw the interesting answers.
    for want in [
        "list_meta [] ok ['base:allocation']",
        "list_meta ['base:'] ok ['base:allocation']",
        "list_meta ['base:foo'] ok []",
        "read 0+0 err EINVAL",
        "write 0+0 err ENOSPC",
        "trim 0+0 err EINVAL",
        "write 18446744073709551615+2 err ENOSPC",
        "read 1048575+1 ok bytearray(b'\\x00')",
        "read ok b'\\x00a\\x00\\x00\\x00'",
    ] {
        assert!(ours.contains(want), "{want:?} in\n{ours}");
    }
}

#[test]
fn block_size_is_sane_and_within_the_request_limit() {
    let s = Server::start(&["memory", "1M"]);
    let out = s.nbdsh(
        r#"
mn, pr, mx = (h.get_block_size(k) for k in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM))
assert mn >= 1 and mn & (mn - 1) == 0 and mn <= 65536, mn
assert pr >= max(mn, 512) and pr & (pr - 1) == 0, pr
assert pr <= mx <= 64 << 20, mx
# the advertised maximum is really accepted (the export is 1M: read 1M)
assert h.pread(1 << 20, 0) == bytes(1 << 20)
print(mx)
"#,
    );
    assert_eq!(out.trim(), (64u32 << 20).to_string().as_str());
}

#[test]
fn simple_reply_mode_reads_writes_and_errors() {
    let s = Server::start(&["memory", "1M"]);
    let script = r#"
import nbd, sys
h = nbd.NBD()
h.set_request_structured_replies(False)
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
assert not h.get_structured_replies_negotiated()
assert not h.can_df() and not h.can_meta_context("base:allocation")
h.pwrite(b"\xaa" * 300000, 1000, nbd.CMD_FLAG_FUA)
assert h.pread(300002, 999) == b"\0" + b"\xaa" * 300000 + b"\0"
h.zero(1000, 2000)
assert h.pread(3000, 1000) == b"\xaa" * 1000 + bytes(1000) + b"\xaa" * 1000
h.set_strict_mode(0)
for f, e in ((lambda: h.pread(2, (1 << 20) - 1), "EINVAL"), (lambda: h.pwrite(b"ab", (1 << 20) - 1), "ENOSPC"),
             (lambda: h.pread(1, 0, nbd.CMD_FLAG_DF), "EINVAL"), (lambda: h.zero(1, 1 << 20), "ENOSPC")):
    try:
        f(); raise SystemExit("no error")
    except nbd.Error as x:
        assert x.errno == e, (x.errno, e)
assert h.pread(2, 1000) == b"\xaa\xaa"
print("ok")
"#;
    let o = run("/usr/bin/python3", &["-c", script, &s.uri]);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim() == "ok",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Block status without a meta context is refused by the server itself
    // (libnbd would refuse it locally): simple and structured.
    raw(
        &s,
        r#"
c = C(); c.opt(1, b""); c.rx(10)
c.req(7, 0, 512, 1); assert c.simple() == (1, 22, b"")
c.req(0, 0, 4, 2, flags=4); assert c.simple() == (2, 22, b""), "DF without SR"
c.req(0, 0, 4, 3); assert c.simple(4) == (3, 0, bytes(4))
c = C(); assert c.last(8) == (8, 1); assert c.go()[-1][1] == 1
c.req(7, 0, 512, 4); cs = c.chunks(); assert types(cs) == [0x8001] and errs(cs) == [22], cs
# SET_META_CONTEXT for another export name does not carry over to GO
c = C(); c.last(8)
c.opt(10, struct.pack(">I", 3) + b"foo" + struct.pack(">II", 1, 15) + b"base:allocation"); assert c.reps()[-1][1] == 1
assert c.go(b"")[-1][1] == 1
c.req(7, 0, 512, 5); assert errs(c.chunks()) == [22]
# ... and does for the same one
c = C(); c.last(8)
c.opt(10, struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation")
r = c.reps(); assert [t for _, t, _ in r] == [4, 1] and r[0][2] == b"\0\0\0\x01base:allocation", r
c.go()
c.req(7, 0, 512, 6); cs = c.chunks(); assert types(cs) == [5], cs
assert cs[0]["data"] == struct.pack(">III", 1, 1 << 20, 3) or cs[0]["data"][:4] == b"\0\0\0\x01", cs
"#,
    );
}

#[test]
fn raw_negotiation_edges() {
    let s = Server::start(&["memory", "1M"]);
    raw(
        &s,
        r#"
c = C()
assert c.hflags == 3
assert c.last(99) == (99, ERR + 1), "unknown option: ERR_UNSUP"
assert c.last(4) == (4, ERR + 1), "PEEK_EXPORT: ERR_UNSUP"
assert c.last(0x7fffffff, b"junk") == (0x7fffffff, ERR + 1)
assert c.last(3, b"x") == (3, ERR + 3), "LIST with data: ERR_INVALID"
assert c.last(8, b"x") == (8, ERR + 3), "STRUCTURED_REPLY with data"
assert c.last(11, b"x") == (11, ERR + 3), "EXTENDED_HEADERS with data"
assert c.last(5)[1] in (ERR + 1, ERR + 2), "STARTTLS: UNSUP or POLICY"
assert c.last(6, b"\0\0\0\x05ab") == (6, ERR + 3), "INFO, name past the end"
assert c.last(7, b"\0\0\0\0\0\x02\0\x03") == (7, ERR + 3), "GO, count disagrees"
# negotiation went on after every error
c.opt(3); r = c.reps()
assert [t for _, t, _ in r] == [2, 1] and r[0][2] == b"\0\0\0\0", r
c.opt(2); assert c.reps() == [(2, 1, b"")]
assert c.closed(), "ABORT closes"
# an option payload over the limit is skipped with ERR_TOO_BIG ...
c = C(); c.opt(6, bytes(1 << 20)); assert c.reps()[-1][1] == ERR + 9
c.opt(3); assert c.reps()[-1][1] == 1, "... and negotiation goes on"
# ... and an absurd one closes the connection without reading it
c = C(); c.s.sendall(struct.pack(">QII", IHAVEOPT, 3, 0x7fffffff)); assert c.closed()
# bad option magic
c = C(); c.s.sendall(struct.pack(">QII", 0x1122334455667788, 3, 0)); assert c.closed()
# unknown client flags: disconnect
for fl in (4, 1 << 31, 0xffffffff):
    c = C(flags=fl); assert c.closed(), fl
# the client sends flags and an option before reading the greeting
c = C(flags=None, read_greeting=False)
c.s.sendall(struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, 3, 0))
assert c.rx(18)[:8] == b"NBDMAGIC"
assert [t for _, t, _ in c.reps()] == [2, 1]
# EXPORT_NAME with and without NO_ZEROES
for fl, pad in ((1, 124), (3, 0)):
    c = C(flags=fl); c.opt(1, b"")
    size, tf = struct.unpack(">QH", c.rx(10))
    assert size == 1 << 20 and tf & 1 and not tf & 0x80, hex(tf)  # HAS_FLAGS, no DF without SR
    if pad: assert c.rx(pad) == bytes(pad)
    c.req(1, 0, 4, 1, data=b"abcd"); assert c.simple() == (1, 0, b"")
    c.req(0, 0, 4, 2); assert c.simple(4) == (2, 0, b"abcd")
    c.req(3, 0, 1, 3); assert c.simple() == (3, 22, b""), "FLUSH with a length"
    c.req(3, 1, 0, 4); assert c.simple() == (4, 22, b""), "FLUSH with an offset"
    c.req(3, 0, 0, 5); assert c.simple() == (5, 0, b"")
    c.req(99, 0, 0, 6); assert c.simple() == (6, 22, b""), "unknown command"
    c.req(1, 0, 2, 7, flags=0x40, data=b"zz"); assert c.simple() == (7, 22, b""), "unknown flag, payload skipped"
    c.req(0, 0, 4, 8); assert c.simple(4) == (8, 0, b"abcd")
    c.req(2, 0, 0, 9); assert c.closed(), "DISC closes"
# INFO answers INFO_EXPORT first, unknown info types are ignored, GO matches INFO
c = C(); c.last(8)
i = c.go(b"", ()); 
c2 = C(); c2.last(8)
c2.opt(6, struct.pack(">IH", 0, 2) + struct.pack(">HH", 77, 1)); r = c2.reps()
assert r[0][1] == 3 and r[0][2][:2] == b"\0\0" and len(r[0][2]) == 12, r
assert r[-1][1] == 1 and all(t != 3 or d[:2] in (b"\0\0", b"\0\1") for _, t, d in r), r
c2.opt(7, struct.pack(">IH", 0, 2) + struct.pack(">HH", 77, 1)); r2 = c2.reps()
assert [d for _, t, d in r] == [d for _, t, d in r2], (r, r2)
"#,
    );
    // The server survived all of that.
    assert_eq!(s.nbdsh("print(h.get_size())").trim(), "1048576");
}

#[test]
fn extended_headers_raw() {
    let s = Server::start(&["memory", "1M"]);
    raw(
        &s,
        r#"
c = C()
assert c.last(11) == (11, 1), "EXTENDED_HEADERS acked"
assert c.last(8) == (8, ERR + 10), "STRUCTURED_REPLY after extended headers: EXT_HEADER_REQD (as qemu-nbd)"
c.opt(10, struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation")
assert [t for _, t, _ in c.reps()] == [4, 1]
g = c.go(b"", (3,))
assert g[-1][1] == 1 and g[0][2][:2] == b"\0\0", g
tf = struct.unpack(">H", g[0][2][10:12])[0]
assert tf & 0x80 and not tf & (1 << 12), hex(tf)  # DF; no BLOCK_STATUS_PAYLOAD
E = True
EXT = 0x6e8a278c
# WRITE without PAYLOAD_LEN (qemu 10) and with it
c.req(1, 0, 8, 1, data=b"12345678", ext=E); cs = c.chunks()
assert [(x["type"], x["magic"], x["cookie"], x["off"]) for x in cs] == [(0, EXT, 1, 0)], cs
c.req(1, 8, 8, 2, flags=32, data=b"abcdefgh", ext=E); cs = c.chunks()
assert [(x["type"], x["magic"], x["cookie"], x["off"]) for x in cs] == [(0, EXT, 2, 8)], cs
c.req(0, 4, 8, 3, ext=E); cs = c.chunks()
assert [(x["type"], x["magic"], x["off"], x["data"]) for x in cs] == [(1, EXT, 4, struct.pack(">Q", 4) + b"5678abcd")], cs
# BLOCK_STATUS answers BLOCK_STATUS_EXT (type 6) with 64-bit descriptors
c.req(7, 0, 1 << 20, 4, ext=E); cs = c.chunks()
assert types(cs) == [6] and cs[0]["magic"] == EXT, cs
d = cs[0]["data"]; cid, n = struct.unpack(">II", d[:8]); assert cid == 1 and len(d) == 8 + 16 * n, d
ext = [struct.unpack(">QQ", d[8 + 16 * i:24 + 16 * i]) for i in range(n)]
assert ext[0][1] == 0 and ext[-1][1] == 3 and sum(l for l, _ in ext) == 1 << 20, ext
c.req(7, 0, 1 << 20, 5, flags=8, ext=E); cs = c.chunks()
assert types(cs) == [6] and struct.unpack(">II", cs[0]["data"][:8]) == (1, 1), cs
# a read over 64 MiB (64-bit length) is refused, the connection goes on
for ln in (65 << 20, 1 << 40, (1 << 64) - 1):
    c.req(0, 0, ln, 6, ext=E); cs = c.chunks()
    assert [(x["type"], x["magic"]) for x in cs] == [(0x8001, EXT)] and errs(cs) == [22], (ln, cs)
# zero beyond the end with a 64-bit length: ENOSPC; within: fine
c.req(6, 0, 1 << 40, 7, ext=E); assert errs(c.chunks()) == [28]
c.req(6, 2, 2, 8, ext=E); assert types(c.chunks()) == [0]
# every reply is an extended chunk, errors included
c.req(3, 0, 0, 9, ext=E); assert [(x["type"], x["magic"]) for x in c.chunks()] == [(0, EXT)]
c.req(99, 0, 0, 10, ext=E); cs = c.chunks(); assert cs[0]["magic"] == EXT and errs(cs) == [22]
# a failing WRITE with PAYLOAD_LEN still has its payload consumed
c.req(1, 1 << 20, 4, 11, flags=32, data=b"zzzz", ext=E); assert errs(c.chunks()) == [28]
# PAYLOAD_LEN on READ: payload consumed, EINVAL
c.req(0, 0, 4, 12, flags=32, data=b"pppp", ext=E); cs = c.chunks(); assert errs(cs) == [22], cs
c.req(0, 0, 12, 13, ext=E); cs = c.chunks()
assert cs[0]["data"][8:] == b"12\0\0" + b"5678abcd", cs
# pipelined extended requests: every cookie once
for i in range(16):
    c.req(1, 4096 * i, 4096, 100 + i, data=bytes([i]) * 4096, ext=E)
    c.req(0, 4096 * i, 4096, 200 + i, ext=E)
seen = [c.chunk() for _ in range(32)]
assert sorted(x["cookie"] for x in seen) == list(range(100, 116)) + list(range(200, 216))
assert all(x["magic"] == EXT for x in seen)
# a compact request on an extended connection is a protocol violation
c.req(0, 0, 4, 14, ext=False); c.s.sendall(bytes(4)); assert c.closed()
# EXPORT_NAME after EXTENDED_HEADERS: the client MUST NOT; we hang up
c = C(); c.last(11); c.opt(1, b""); assert c.closed()
"#,
    );
    assert_eq!(s.nbdsh("print(h.get_size())").trim(), "1048576");
}

#[test]
fn pipelined_replies_each_cookie_once_and_disc_drains() {
    let s = Server::start(&["memory", "64M"]);
    raw(
        &s,
        r#"
import hashlib
c = C(); c.last(8); c.go()
# Mixed sizes: small ones run inline, big ones on the worker pool, so
# replies come back in any order; every cookie exactly once.
# Requests are sent from a thread while replies are read, as real clients
# do (nbdkit, too, stops reading requests while its replies are unread).
import threading
sizes = [512, 1 << 20, 4096, 3 << 20, 65536, 300000, 1, 2 << 20] * 4
off = 0; want = {}
for i, n in enumerate(sizes):
    want[2000 + i] = (off, bytes([(i * 7 + 1) & 255]) * n); off += n
def sender():
    for i, n in enumerate(sizes):
        o, data = want[2000 + i]
        c.req(1, o, n, 1000 + i, data=data)
        c.req(0, o, n, 2000 + i)
t = threading.Thread(target=sender); t.start()
done = set(); chunks = {}
while len(done) < 2 * len(sizes):
    x = c.chunk()
    assert x["cookie"] not in done, ("answered twice", x["cookie"])
    chunks.setdefault(x["cookie"], []).append(x)
    if x["flags"] & 1: done.add(x["cookie"])
t.join()
assert sorted(done) == sorted([1000 + i for i in range(len(sizes))] + list(want)), sorted(done)
for i in range(len(sizes)):
    assert types(chunks[1000 + i]) == [0], chunks[1000 + i]
for k, (o, data) in want.items():
    # reads may run before or after their write: chunks tile the range
    covered = 0
    for x in chunks[k]:
        assert x["type"] in (1, 2), x["type"]
        p = struct.unpack(">Q", x["data"][:8])[0] - o
        assert p == covered, (k, p, covered)
        covered += len(x["data"]) - 8 if x["type"] == 1 else struct.unpack(">I", x["data"][8:12])[0]
    assert covered == len(data), (k, covered)
# now that every write was answered, all of it reads back
off = 0
for i, n in enumerate(sizes):
    c.req(0, off, n, 3000 + i, flags=4)
    cs = c.chunks(); assert types(cs) == [1] and cs[0]["data"][8:] == want[2000 + i][1], i
    off += n
# DISC after pipelined writes: all applied before the socket closes
c = C(); c.last(8); c.go()
blobs = []
for i in range(12):
    data = hashlib.sha256(bytes([i])).digest() * (1 << 15)  # 1 MiB
    blobs.append(data)
    c.req(1, (1 << 20) * i, len(data), 5000 + i, data=data)
c.req(2, 0, 0, 6000)
n = 0
try:
    while True:
        x = c.chunk(); assert x["type"] == 0 and 5000 <= x["cookie"] < 5012, x; n += 1
except EOFError: pass
assert n == 12, n
c = C(); c.last(8); c.go()
for i in range(12):
    c.req(0, (1 << 20) * i, 1 << 20, 7000 + i, flags=4)  # DF: one data chunk
    cs = c.chunks(); assert cs[0]["data"][8:] == blobs[i], i
"#,
    );
}

#[test]
fn many_small_requests_in_one_send_each_get_their_reply() {
    // Hundreds of small requests of every kind arrive in one send, so a
    // worker takes many at a time and writes their replies together:
    // each must still get exactly its own reply (data, error, block
    // status), writes with FUA must land, and simple replies too.
    let s = Server::start(&["memory", "4M"]);
    raw(
        &s,
        r#"
pat = bytes(range(256)) * 1024
for structured in (True, False):
    c = C(); c.last(8) if structured else None; c.go()
    c.req(1, 0, len(pat), 1, data=pat)
    if structured: assert types(c.chunks()) == [0]
    else: assert c.simple()[1] == 0
    h = lambda t, f, ck, o, n: struct.pack(">IHHQQI", 0x25609513, f, t, ck, o, n)
    out, want = [], {}
    for i in range(400):
        ck, k, o = 10000 + i, i % 8, (i * 1000) % (255 << 10)
        if k == 0: out.append(h(0, 0, ck, o, 777)); want[ck] = ("data", pat[o:o + 777])
        elif k == 1:
            out.append(h(1, 1, ck, (1 << 20) + i * 512, 512) + bytes([i % 251 + 1]) * 512); want[ck] = ("ok",)
        elif k == 2: out.append(h(3, 0, ck, 0, 0)); want[ck] = ("ok",)
        elif k == 3: out.append(h(6, 0, ck, (2 << 20) + i * 512, 512)); want[ck] = ("ok",)
        elif k == 4: out.append(h(4, 0, ck, (3 << 20) + i * 512, 512)); want[ck] = ("ok",)
        elif k == 5: out.append(h(0, 0, ck, (4 << 20) - 100, 200)); want[ck] = ("err", 22)
        elif k == 6: out.append(h(99, 0, ck, 0, 0)); want[ck] = ("err", 22)
        else: out.append(h(0, 0, ck, o + 1, 4096)); want[ck] = ("data", pat[o + 1:o + 4097])
    c.s.sendall(b"".join(out))
    got = {}
    for _ in range(len(want)):
        if structured:
            cs = c.chunks(); ck = cs[0]["cookie"]
            assert all(x["cookie"] == ck for x in cs), cs
            if errs(cs): r = ("err", errs(cs)[0])
            elif types(cs) == [0]: r = ("ok",)
            else:
                assert types(cs) == [1] and struct.unpack(">Q", cs[0]["data"][:8])[0] is not None, cs
                r = ("data", cs[0]["data"][8:])
        else:
            m, e, ck = struct.unpack(">IIQ", c.rx(16)); assert m == 0x67446698
            r = ("err", e) if e else (("data", c.rx(len(want[ck][1]))) if want[ck][0] == "data" else ("ok",))
        assert ck not in got, ("answered twice", ck)
        got[ck] = r
    assert got == want, [(k, got.get(k), v) for k, v in want.items() if got.get(k) != v][:3]
    for i in range(1, 400, 8):
        c.req(0, (1 << 20) + i * 512, 512, 1, flags=4 if structured else 0)
        d = c.chunks()[0]["data"][8:] if structured else c.simple(512)[2]
        assert d == bytes([i % 251 + 1]) * 512, i
"#,
    );
}

#[test]
fn disc_drains_even_without_reading_replies() {
    // The client never reads: replies pile up in the socket while writes
    // complete; after DISC and EOF everything is on the export.
    let s = Server::start(&["memory", "32M"]);
    raw(
        &s,
        r#"
c = C(); c.last(8); c.go()
for i in range(24):
    c.req(1, (1 << 20) * i, 1 << 20, i, data=bytes([i + 1]) * (1 << 20), flags=1 if i % 2 else 0)
c.req(2, 0, 0, 99)
c.s.shutdown(socket.SHUT_WR)
n = 0
try:
    while True:
        x = c.chunk(); n += 1
except EOFError: pass
assert n == 24, n
"#,
    );
    let out = s.nbdsh(
        "print(all(h.pread(1 << 20, i << 20) == bytes([i + 1]) * (1 << 20) for i in range(24)))",
    );
    assert_eq!(out.trim(), "True");
}

#[test]
fn bad_request_magic_closes_only_that_connection() {
    let s = Server::start(&["memory", "1M"]);
    raw(
        &s,
        r#"
good = C(); good.last(8); good.go()
good.req(1, 0, 3, 1, data=b"xyz"); assert types(good.chunks()) == [0]
bad = C(); bad.last(8); bad.go()
bad.s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 4)); assert bad.closed()
bad2 = C(); bad2.opt(1, b""); bad2.rx(10)
bad2.s.sendall(struct.pack(">IHHQQQ", 0x21e41c71, 0, 0, 1, 0, 4)); assert bad2.closed(), "extended magic on a compact connection"
good.req(0, 0, 3, 2); assert good.chunks()[0]["data"][8:] == b"xyz"
new = C(); new.last(8); new.go(); new.req(0, 0, 3, 3); assert new.chunks()[0]["data"][8:] == b"xyz"
"#,
    );
}

#[test]
fn qemu_uses_extended_headers_and_works() {
    let s = Server::start(&["-v", "memory", "8M"]);
    let opts = s.qemu_opts();
    let io = run_ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x3c 0 192k",
            "-c",
            "write -P 0x77 1M 64k",
            "-c",
            "read -P 0x3c 0 192k",
            "-c",
            "write -z 64k 64k",
            "-c",
            "read -P 0 64k 64k",
            "-c",
            "read -P 0x3c 128k 64k",
            "-c",
            "discard 1M 64k",
            "-c",
            "write -P 0x11 4M 1M",
            "-c",
            "write -z -u 6M 1M",
            "-c",
            "flush",
            "--image-opts",
            &opts,
        ],
    );
    assert!(!io.contains("Pattern verification failed"), "{io}");
    assert_eq!(io.matches("read ").count(), 3, "{io}");
    let io_wb = run_ok(
        "qemu-io",
        &[
            "-t",
            "writeback",
            "-c",
            "write -P 0x22 2M 4k",
            "-c",
            "read -P 0x22 2M 4k",
            "--image-opts",
            &opts,
        ],
    );
    assert!(!io_wb.contains("Pattern verification failed"), "{io_wb}");
    let map = run_ok("qemu-img", &["map", "--output=json", "--image-opts", &opts]);
    // 0-64k data, 64k-128k zero (NO_HOLE: still allocated), 128k-192k data,
    // 1M-1M+64k trimmed (zero), 2M data, 4M-5M data, the rest zero.
    let v: Vec<(u64, u64, bool, bool)> = map
        .lines()
        .filter(|l| l.contains("\"start\""))
        .map(|l| {
            let num = |k: &str| -> u64 {
                let i = l.find(k).unwrap() + k.len();
                l[i..]
                    .trim_start_matches([':', ' '])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (
                num("\"start\""),
                num("\"length\""),
                l.contains("\"data\": true"),
                l.contains("\"zero\": true"),
            )
        })
        .collect();
    let at = |off: u64| {
        v.iter()
            .find(|e| e.0 <= off && off < e.0 + e.1)
            .copied()
            .unwrap_or_else(|| panic!("{off} not mapped: {map}"))
    };
    assert!(at(0).2 && !at(0).3, "{map}");
    assert!(at(64 << 10).3, "{map}");
    assert!(at((1 << 20) + 100).3, "{map}");
    assert!(at(2 << 20).2, "{map}");
    assert!(at(4 << 20).2 && !at(4 << 20).3, "{map}");
    assert!(at(7 << 20).3, "{map}");
    assert_eq!(v.iter().map(|e| e.1).sum::<u64>(), 8 << 20, "{map}");
    // The bytes as libnbd sees them.
    let out = s.nbdsh(
        r#"
assert h.pread(65536, 0) == b"\x3c" * 65536
assert h.pread(65536, 65536) == bytes(65536)
assert h.pread(65536, 131072) == b"\x3c" * 65536
assert h.pread(4096, 2 << 20) == b"\x22" * 4096
assert h.pread(1 << 20, 4 << 20) == b"\x11" * (1 << 20)
assert h.pread(1 << 20, 6 << 20) == bytes(1 << 20)
print("ok")
"#,
    );
    assert_eq!(out.trim(), "ok");
    let (_, err) = s.stop();
    assert!(
        err.contains("Extended"),
        "qemu did not use extended headers:\n{err}"
    );
}

#[test]
fn file_fua_and_cache_native_fast_zero_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let log = dir.path().join("log.txt");
    let s = Server::start(&[
        "file",
        img.to_str().unwrap(),
        "--filter",
        "log",
        &format!("logfile={}", log.display()),
    ]);
    let out = s.nbdsh(
        r#"
assert h.can_fua() and h.can_cache() and h.can_zero()
assert not h.can_fast_zero()      # file: no fast zero, so it is not advertised
h.pwrite(b"A" * 4096, 0, nbd.CMD_FLAG_FUA)
h.pwrite(b"B" * 4096, 4096)
h.cache(65536, 0)
h.set_strict_mode(0)
try:
    h.zero(4096, 8192, nbd.CMD_FLAG_FAST_ZERO)
    raise SystemExit("FAST_ZERO accepted without being advertised")
except nbd.Error as e:
    assert e.errno == "EINVAL", e.errno
assert h.pread(4096, 8192) == b"\x5a" * 4096   # data unchanged
h.zero(4096, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8192) == bytes(4096)
print("ok")
"#,
    );
    assert_eq!(out.trim(), "ok");
    // The server flushes a connection still open at SIGTERM: wait until it
    // has seen this one end, so any Flush in the log came from a request.
    wait_file_for(&log, "Disconnect transactions=", 20);
    let (_, _) = s.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("return")).collect();
    let pos = |pat: &str| {
        lines
            .iter()
            .position(|l| l.contains(pat))
            .unwrap_or_else(|| panic!("{pat} not in log:\n{text}"))
    };
    // FUA is native in the file plugin (fdatasync after the write, as
    // nbdkit): the flag reaches the plugin and no flush stands in for it.
    assert!(text.contains(" fua=2 "), "{text}");
    let w1 = pos("Write id=1 offset=0x0 count=0x1000 fua=1");
    assert!(!lines[w1 + 1].contains("Flush"), "{text}");
    pos("offset=0x1000 count=0x1000 fua=0");
    // CACHE is native too (posix_fadvise WILLNEED): no reads.
    pos("Cache id=3 offset=0x0 count=0x10000");
    assert!(!text.contains("Read id=3"), "{text}");
    let z = pos("Zero");
    assert!(lines[z].contains("fua=1"), "{text}");
    assert!(!text.contains("Flush"), "{text}");
    assert!(
        !text.contains("fast=1"),
        "fast zero reached the plugin: {text}"
    );
}

#[test]
fn fast_zero_that_cannot_be_fast_is_enotsup_like_nbdkit() {
    // The blocksize filter advertises fast zero (memory has it) but an
    // unaligned one needs read-modify-write: ENOTSUP, data unchanged.
    let script = r#"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.can_fast_zero()
h.pwrite(b"\x77" * 8192, 0)
try:
    h.zero(512, 512, nbd.CMD_FLAG_FAST_ZERO); print("ok")
except nbd.Error as e:
    print(e.errno)
print(h.pread(8192, 0) == b"\x77" * 8192)
h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO)
print(h.pread(8192, 0) == b"\x77" * 4096 + bytes(4096))
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fz.py");
    std::fs::write(&p, script).unwrap();
    let run_cmd = format!("python3 {} \"$uri\"", p.display());
    let theirs = run_ok(
        "nbdkit",
        &[
            "-U",
            "-",
            "--filter=blocksize",
            "memory",
            "1M",
            "minblock=4096",
            "--run",
            &run_cmd,
        ],
    );
    let ours = nbdscript()
        .env("PATH", sys_path())
        .args([
            "memory",
            "1M",
            "--filter",
            "blocksize",
            "minblock=4096",
            "--run",
            &run_cmd,
        ])
        .output()
        .unwrap();
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert_eq!(theirs, "ENOTSUP\nTrue\nTrue\n");
    assert_eq!(ours, theirs);
}

#[test]
fn extended_headers_64_bit_extents_and_opt_out() {
    let s = Server::start(&["memory", "16G"]);
    raw(
        &s,
        r#"
def bs_ext(c, cookie, ln, flags=0):
    c.req(7, 0, ln, cookie, flags=flags, ext=True); cs = c.chunks(); assert types(cs) == [6], cs
    d = cs[0]["data"]; n = struct.unpack(">I", d[4:8])[0]
    return [struct.unpack(">QQ", d[8 + 16 * i:24 + 16 * i]) for i in range(n)]
c = C(); c.last(11)
c.opt(10, struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation"); c.reps(); c.go()
c.req(1, 5 << 30, 4096, 1, data=b"x" * 4096, ext=True); assert types(c.chunks()) == [0]
e = bs_ext(c, 2, 16 << 30)
assert e[0] == (5 << 30, 3), e            # one 5 GiB hole: a 64-bit length
assert e[1][1] == 0 and sum(l for l, _ in e) == 16 << 30, e
# 64-bit zero and trim lengths
c.req(6, 0, 8 << 30, 3, ext=True); assert types(c.chunks()) == [0]
c.req(4, 8 << 30, 8 << 30, 4, ext=True); assert types(c.chunks()) == [0]
assert bs_ext(c, 5, 16 << 30) == [(16 << 30, 3)]
# compact: descriptors stay 32-bit and within the request
c = C(); c.last(8)
c.opt(10, struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation"); c.reps(); c.go()
c.req(1, 5 << 30, 4096, 1, data=b"y" * 4096); assert types(c.chunks()) == [0]
c.req(7, 4 << 30, 0xffffffff, 2); cs = c.chunks(); assert types(cs) == [5], cs
d = cs[0]["data"][4:]; e = [struct.unpack(">II", d[i:i + 8]) for i in range(0, len(d), 8)]
assert e[0] == (1 << 30, 3) and e[1][1] == 0 and sum(l for l, _ in e) <= 0xffffffff, e
"#,
    );
    let off = Server::start(&["--no-extended-headers", "memory", "1M"]);
    raw(
        &off,
        r#"
c = C()
assert c.last(11) == (11, ERR + 1), "EXTENDED_HEADERS: ERR_UNSUP when turned off"
assert c.last(8) == (8, 1)
assert c.go()[-1][1] == 1
c.req(0, 0, 4, 1); cs = c.chunks(); assert cs[0]["magic"] == 0x668e33ef, cs
"#,
    );
}

#[test]
fn sigterm_with_a_client_idle_in_the_handshake_exits() {
    use std::io::Read;
    let s = Server::start(&["memory", "1M"]);
    let mut idle = std::os::unix::net::UnixStream::connect(&s.sock).unwrap();
    let mut g = [0u8; 18];
    idle.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], b"NBDMAGIC");
    // The client now says nothing. SIGTERM must still end the server.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(s.stop());
    });
    let (code, err) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("server did not exit on SIGTERM with a client in the handshake");
    assert_eq!(code, Some(0), "{err}");
    // The idle client sees the connection closed.
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn read_only_answers_match_nbdkit() {
    let script = r#"
import nbd, sys
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1]); h.set_strict_mode(0)
print([getattr(h, f)() for f in "can_flush can_fua can_trim can_zero can_fast_zero can_df can_multi_conn can_cache is_read_only".split()])
for nm, f in (("write", lambda: h.pwrite(b"x", 0)), ("write fua", lambda: h.pwrite(b"x", 0, nbd.CMD_FLAG_FUA)),
              ("zero", lambda: h.zero(1, 0)), ("zero fast", lambda: h.zero(1, 0, nbd.CMD_FLAG_FAST_ZERO)),
              ("trim", lambda: h.trim(1, 0)), ("flush", lambda: h.flush()), ("cache", lambda: h.cache(1, 0)),
              ("read", lambda: h.pread(1, 0)), ("read fua", lambda: h.pread(1, 0, nbd.CMD_FLAG_FUA)),
              ("write past", lambda: h.pwrite(b"x", 1 << 20)), ("trim past", lambda: h.trim(1, 1 << 20)),
              ("read past", lambda: h.pread(1, 1 << 20))):
    try: f(); print(nm, "ok")
    except nbd.Error as e: print(nm, e.errno)
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ro.py");
    std::fs::write(&p, script).unwrap();
    let run_cmd = format!("python3 {} \"$uri\"", p.display());
    let theirs = run_ok(
        "nbdkit",
        &["-r", "-U", "-", "memory", "1M", "--run", &run_cmd],
    );
    let ours = nbdscript()
        .env("PATH", sys_path())
        .args(["-r", "memory", "1M", "--run", &run_cmd])
        .output()
        .unwrap();
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert!(
        theirs.contains("zero fast EPERM") && theirs.contains("read fua EINVAL"),
        "{theirs}"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn a_client_that_never_reads_replies_cannot_balloon_the_server() {
    let s = Server::start(&["memory", "64M"]);
    let body = r#"
import time
def rss(): return int([l for l in open("/proc/PID/status") if l.startswith("VmRSS")][0].split()[1]) >> 10
c = C(); c.last(8); c.go()
base = rss()
# 24 reads of 64 MiB (1.5 GiB of replies) in 768 bytes of requests; DF
# makes each a single 64 MiB buffer. The client reads nothing for a while.
for i in range(24): c.req(0, 0, 64 << 20, 100 + i, flags=4)
peak = 0; t0 = time.time()
while time.time() - t0 < 4:
    peak = max(peak, rss() - base)
    assert peak < 700, "server buffered %d MiB of replies" % peak
    time.sleep(0.05)
# now read everything: every cookie answered once, all data zero
c.s.settimeout(60)
buf = bytearray(64 << 20); seen = set()
while len(seen) < 24:
    h = c.rx(20); m, f, t, ck, ln = struct.unpack(">IHHQI", h)
    assert m == 0x668e33ef and t == 1 and f & 1 and ln == 8 + (64 << 20), (m, f, t, ln)
    c.rx(8); mv = memoryview(buf); got = 0
    while got < len(buf): 
        n = c.s.recv_into(mv[got:]); assert n; got += n
    assert ck not in seen; seen.add(ck)
assert buf.count(0) == len(buf)
print("peak", peak)
"#
    .replace("PID", &s.child.id().to_string());
    let out = raw(&s, &body);
    assert!(out.contains("peak"), "{out}");
}

#[test]
fn sigterm_with_a_client_that_never_reads_replies_exits() {
    use std::io::BufRead;
    let s = Server::start(&["memory", "64M"]);
    // 24 reads of 64 MiB, never read: the connection's thread is stuck in
    // a write when SIGTERM comes. The server must still exit, cleanly.
    let prog = format!(
        "{RAW}\nimport time\nc = C(); c.last(8); c.go()\n\
         for i in range(24): c.req(0, 0, 64 << 20, 100 + i, flags=4)\n\
         print('sent', flush=True)\ntime.sleep(60)\n"
    );
    let mut client = Command::new("/usr/bin/python3")
        .args(["-c", &prog, s.sock.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sent");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(s.stop());
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(40));
    let _ = client.kill();
    let _ = client.wait();
    let (code, err) = got.expect("server did not exit on SIGTERM with a stuck writer");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn commands_the_export_did_not_advertise_are_einval_like_nbdkit() {
    // A script with pread and pwrite only (no FLUSH, TRIM, CACHE, FUA)
    // under nozero (no WRITE_ZEROES). Each such request sent anyway is
    // EINVAL (nbdkit's validate_request) and never reaches the plugin.
    let dir = tempfile::tempdir().unwrap();
    let path = script(
        dir.path(),
        "bare.rhai",
        r#"
fn config(params) { #{ disk: disk("1M", "sparse") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset) { h.disk.pwrite(take(buf), offset) }
"#,
    );
    let log = dir.path().join("log.txt");
    let s = Server::start(&[
        "-v",
        &path,
        "--filter",
        "nozero",
        "--filter",
        "log",
        &format!("logfile={}", log.display()),
    ]);
    let out = s.nbdsh(
        r#"
flags = [getattr(h, f)() for f in "can_flush can_trim can_zero can_fast_zero can_cache can_fua is_read_only".split()]
assert flags == [False] * 7, flags
h.pwrite(b"\x33" * 4096, 0)
h.set_strict_mode(0)
for nm, f in (("trim", lambda: h.trim(4096, 0)), ("zero", lambda: h.zero(4096, 0)),
              ("zero fast", lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)),
              ("cache", lambda: h.cache(4096, 0)), ("flush", lambda: h.flush()),
              ("write fua", lambda: h.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA))):
    try: f(); print(nm, "ok")
    except nbd.Error as e: print(nm, e.errno)
assert h.pread(4096, 0) == b"\x33" * 4096
"#,
    );
    assert_eq!(
        out,
        "trim EINVAL\nzero EINVAL\nzero fast EINVAL\ncache EINVAL\nflush EINVAL\nwrite fua EINVAL\n"
    );
    let (_, err) = s.stop();
    for line in [
        "request failed: EINVAL: NBD_CMD_TRIM: trim operation not supported",
        "request failed: EINVAL: NBD_CMD_WRITE_ZEROES: write zeroes operation not supported",
        "request failed: EINVAL: NBD_CMD_CACHE: cache operation not supported",
        "request failed: EINVAL: NBD_CMD_FLUSH: flush operation not supported",
    ] {
        assert!(err.contains(line), "{line:?} not in the log:\n{err}");
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    for verb in ["Trim", "Zero", "Cache", "Flush"] {
        assert!(
            !calls.contains(&format!("{verb} id=")),
            "{verb} reached the plugin:\n{calls}"
        );
    }
    let writes = calls.lines().filter(|l| l.contains(" Write id=")).count();
    assert_eq!(writes, 1, "the FUA write reached the plugin:\n{calls}");
}
