//! Concurrent load: fio verifying over one and two connections and big
//! requests, and waiting requests overlapping up to the thread count
//! (also over pipes with --single).

use super::*;

/// Random writes with fio, then fio reads them back and checks crc32c.
fn fio_verify(args: &[&str], job: &[&str]) {
    let s = Server::start(args);
    let uri = format!("--uri={}", s.uri);
    let mut all = vec![
        "--name=v",
        "--ioengine=nbd",
        &uri,
        "--rw=randwrite",
        "--iodepth=16",
    ];
    all.extend_from_slice(job);
    all.extend_from_slice(&[
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_state_save=0",
        "--output-format=json",
    ]);
    let out = run_ok("fio", &all);
    assert!(out.contains("\"error\" : 0"), "{out}");
    assert!(
        !out.contains("verify:"),
        "fio reported a verify problem: {out}"
    );
}

#[test]
fn fio_verify_two_connections() {
    fio_verify(
        &["memory", "size=64M"],
        &[
            "--bs=4k",
            "--size=16M",
            "--numjobs=2",
            "--offset_increment=16M",
        ],
    );
}

/// Big requests on one connection bring in a second worker thread (see
/// src/server/thread.rs): the data must still come back right.
#[test]
fn fio_verify_big_requests_one_connection() {
    fio_verify(
        &["memory", "size=64M"],
        &["--bsrange=256k-1m", "--size=64M", "--io_size=256M"],
    );
}

/// Requests to an export that waits (here the delay filter) overlap on one
/// connection: connection threads are added while all are busy, up to
/// `--threads`. With `--threads=1` they run one after another.
#[test]
fn waiting_requests_overlap_up_to_threads() {
    let script = "import time
h.pwrite(bytes(range(256)) * 16 * 6, 0)
t = time.monotonic()
bufs = [nbd.Buffer(4096) for i in range(6)]
cmds = [h.aio_pread(bufs[i], i * 4096) for i in range(6)]
while h.aio_in_flight() > 0:
    h.poll(-1)
assert all(bytes(b.to_bytearray()) == bytes(range(256)) * 16 for b in bufs)
print(time.monotonic() - t)";
    let args = ["--filter=delay", "memory", "size=1M", "delay-read=250ms"];
    let par = Server::start(&args);
    let t: f64 = par.nbdsh(script).trim().parse().unwrap();
    assert!(t >= 0.25, "6 reads delayed 250ms each took {t}s");
    assert!(t < 1.0, "6 parallel reads delayed 250ms each took {t}s");
    let mut one = vec!["--threads=1"];
    one.extend(args);
    let ser = Server::start(&one);
    let t: f64 = ser.nbdsh(script).trim().parse().unwrap();
    assert!(
        t >= 1.5,
        "with --threads=1, 6 reads delayed 250ms took only {t}s"
    );
}

/// `-s` over pipes (not a socket) takes the async loop: a raw client on
/// the server's stdin and stdout, with reads through the delay filter that
/// overlap and bytes that match what was written.
#[test]
fn single_over_pipes_overlaps_waiting_requests() {
    let prog = format!(
        r#"
import struct, subprocess, time
p = subprocess.Popen([{bin:?}, "-s", "--filter=delay", "memory", "1M", "delay-read=250ms"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
i, o = p.stdout, p.stdin
def rx(n):
    b = b""
    while len(b) < n:
        c = i.read(n - len(b)); assert c, "server closed"
        b += c
    return b
assert rx(16) == b"NBDMAGICIHAVEOPT"
rx(2)
o.write(struct.pack(">I", 3)); o.write(b"IHAVEOPT" + struct.pack(">II", 1, 0)); o.flush()
size, tflags = struct.unpack(">QH", rx(10))
assert size == 1 << 20, size
def req(typ, cookie, off, n, data=b""):
    o.write(struct.pack(">IHHQQI", 0x25609513, 0, typ, cookie, off, n) + data)
data = bytes(range(256)) * 16 * 6
req(1, 99, 0, len(data), data); o.flush()
m, e, c = struct.unpack(">IIQ", rx(16)); assert (m, e, c) == (0x67446698, 0, 99), (m, e, c)
t = time.monotonic()
for k in range(6):
    req(0, k, k * 4096, 4096)
o.flush()
got = {{}}
for _ in range(6):
    m, e, c = struct.unpack(">IIQ", rx(16)); assert m == 0x67446698 and e == 0, (m, e)
    got[c] = rx(4096)
took = time.monotonic() - t
assert all(got[k] == data[k * 4096:(k + 1) * 4096] for k in range(6))
req(2, 7, 0, 0); o.flush(); o.close()
assert p.wait(10) == 0
print(took)
"#,
        bin = bin()
    );
    let out = run_ok("/usr/bin/python3", &["-c", &prog]);
    let t: f64 = out.trim().parse().unwrap();
    assert!(t >= 0.25, "6 reads delayed 250ms each took {t}s");
    assert!(
        t < 1.0,
        "6 reads over pipes delayed 250ms each took {t}s: not overlapped"
    );
}
