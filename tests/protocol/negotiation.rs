//! Option haggling by hand: nbdsh opt mode compared with nbdkit 1.32,
//! raw malformed options, block sizes, SIGTERM during the handshake.

use super::*;

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
