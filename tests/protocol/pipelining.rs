//! The transmission phase under load: pipelined cookies, many requests
//! per send, writes and reads of the same blocks in one stream, DISC
//! draining, bad magic, clients that never read replies.

use super::*;

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
fn writes_then_reads_of_the_same_blocks_in_one_send_see_each_write() {
    // A write whose payload has all arrived is run from the receive
    // buffer itself (no copy); one whose payload straddles receives gets
    // its own buffer. Either way each read, sent right after its write in
    // the same stream, must see exactly that write: the same blocks are
    // rewritten many times, all at once and then in odd-sized pieces so
    // payloads straddle receives. Native memory and a script plugin (which
    // copies the payload into its own blob).
    for args in [
        vec!["memory".to_string(), "1M".into()],
        vec![example("ramdisk.rhai"), "size=1M".into()],
    ] {
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let s = Server::start(&args);
        raw(
            &s,
            r#"
import threading, time
h = lambda t, ck, o, n: struct.pack(">IHHQQI", 0x25609513, 0, t, ck, o, n)
pat = lambda i: bytes((i * 31 + j) & 255 for j in range(256)) * 16
for piece in (None, 4099, 1000):
    c = C(); c.go()
    out, want = [], {}
    for i in range(240):
        blk = (i * 7) % 40
        out.append(h(1, 2 * i, blk * 4096, 4096) + pat(i))
        out.append(h(0, 2 * i + 1, blk * 4096, 4096)); want[2 * i + 1] = pat(i)
    stream = b"".join(out)
    def sender():  # from a thread while replies are read, as clients do
        if piece is None: c.s.sendall(stream)
        else:
            for k in range(0, len(stream), piece):
                c.s.sendall(stream[k:k + piece]); time.sleep(0.0002)
    t = threading.Thread(target=sender); t.start()
    got = {}
    for _ in range(480):
        ck, e, _ = c.simple(); assert e == 0, (ck, e)
        got[ck] = c.rx(4096) if ck in want else None
    t.join()
    assert all(got[k] == v for k, v in want.items()), [k for k, v in want.items() if got[k] != v][:5]
"#,
        );
    }
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
