//! The NBD protocol at its edges, against the real binary: negotiation
//! driven by hand, reply formats, the transmission phase under load, and
//! command flags (one submodule each). This module owns the raw python
//! client (`RAW`, `raw`) those tests and network/bounds/tls share.
use crate::common::*;
use std::process::Command;

mod commands;
mod negotiation;
mod pipelining;
mod replies;

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
