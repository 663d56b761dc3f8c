//! Reply formats: simple replies, extended headers from raw frames,
//! qemu-io over extended headers, 64-bit extents and opting out.

use super::*;

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
