//! The server core against real clients: nbdinfo, nbdsh, nbdcopy, qemu-img,
//! qemu-io, fio; memory, null and file plugins; bad input of every kind.

use crate::common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

#[test]
fn nbdinfo_reports_size_and_flags() {
    let s = Server::start(&["memory", "64M"]);
    let out = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(out.contains("\"export-size\": 67108864"), "{out}");
    for flag in [
        "can_trim",
        "can_zero",
        "can_fua",
        "can_flush",
        "can_multi_conn",
        "can_fast_zero",
        "can_cache",
        "can_df",
    ] {
        assert!(
            out.contains(&format!("\"{flag}\": true")),
            "{flag} in {out}"
        );
    }
    assert!(out.contains("\"is_read_only\": false"), "{out}");
    assert!(out.contains("base:allocation"), "{out}");
    let ro = Server::start(&["-r", "memory", "size=1M"]);
    let out = run_ok("nbdinfo", &["--json", &ro.uri]);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains("\"can_trim\": false"), "{out}");
}

#[test]
fn nbdsh_every_command_and_flag() {
    let s = Server::start(&["memory", "size=4M"]);
    let out = s.nbdsh(
        r#"
h.pwrite(b"\x55" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\x55" * 65536
h.pwrite(b"abc", 65535)
assert h.pread(4, 65534) == b"\x55abc"
h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 0) == bytes(4096)
h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(8, 4096) == bytes(8)
h.trim(65536, 1 << 20)
h.flush()
h.cache(65536, 0)
exts = []
def cb(meta, off, e, err):
    exts.extend(e)
h.block_status(4 << 20, 0, cb)
assert exts[1] == 0, exts          # first 64K+ is data
assert exts[-1] == 3, exts         # tail is hole+zero
one = []
def cb1(meta, off, e, err):
    one.extend(e)
h.block_status(4 << 20, 0, cb1, nbd.CMD_FLAG_REQ_ONE)
assert len(one) == 2, one
# structured read with DF: one data chunk
chunks = []
def rcb(buf, off, status, err):
    chunks.append((off, status, len(buf)))
h.pread_structured(4096, 65536, rcb, nbd.CMD_FLAG_DF)
assert chunks == [(65536, nbd.READ_DATA, 4096)], chunks
# a big sparse read: data then a hole chunk
chunks.clear()
buf = h.pread_structured(1 << 20, 0, rcb)
assert buf[:3] == bytes(3) and buf[65535:65538] == b"abc", buf[65530:65540]
assert any(st == nbd.READ_HOLE for (_, st, _) in chunks), chunks
print("ok", h.get_size(), h.can_multi_conn())
"#,
    );
    assert_eq!(out.trim(), "ok 4194304 True");
}

#[test]
fn errors_have_the_right_errno_and_keep_the_connection() {
    let s = Server::start(&["memory", "size=1M"]);
    let out = s.nbdsh(
        r#"
import errno
h.set_strict_mode(0)
def code(f):
    try:
        f()
    except nbd.Error as e:
        return e.errno
    return 0
print(code(lambda: h.pread(512, 1 << 20)))             # EINVAL
print(code(lambda: h.pwrite(b"x" * 512, (1 << 20) - 1)))  # ENOSPC
print(code(lambda: h.zero(512, (1 << 20))))             # ENOSPC
print(code(lambda: h.trim(512, (1 << 20))))             # EINVAL
print(code(lambda: h.pread(0, 0)))                      # EINVAL
print(code(lambda: h.pread(512, 0, 1 << 7)))            # EINVAL (unknown flag)
print(code(lambda: h.pread(512, (1 << 64) - 512)))     # EINVAL (offset near 2^64)
print(code(lambda: h.cache(512, 1 << 20)))              # EINVAL
assert h.pread(4, 0) == bytes(4)
assert h.pread(4, 0, nbd.CMD_FLAG_FUA) == bytes(4)   # FUA on a read is accepted
"#,
    );
    let codes: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        codes,
        vec!["EINVAL", "ENOSPC", "ENOSPC", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL"],
        "{out}"
    );

    let ro = Server::start(&["-r", "memory", "size=1M"]);
    let out = ro.nbdsh(
        r#"
h.set_strict_mode(0)
for f in (lambda: h.pwrite(b"x", 0), lambda: h.trim(512, 0), lambda: h.zero(512, 0)):
    try:
        f(); print(0)
    except nbd.Error as e:
        print(e.errno)
"#,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["EPERM", "EPERM", "EPERM"]
    );
}

#[test]
fn nbdcopy_round_trip_and_map() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let back = dir.path().join("back.img");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().take(1 << 20) {
        *b = (i * 7 % 251) as u8;
    }
    data[3 << 20] = 9;
    std::fs::write(&src, &data).unwrap();
    let s = Server::start(&["memory", "size=4M"]);
    run_ok("nbdcopy", &[src.to_str().unwrap(), &s.uri]);
    run_ok("nbdcopy", &[&s.uri, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["0", "1048576", "0"], "{map}");
    assert!(rows.iter().any(|r| r[2] == "3"), "{map}");
    // every byte again, through a second path
    assert_eq!(read_all(&s.uri), data);
}

#[test]
fn qemu_img_and_qemu_io() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let s = Server::start(&["memory", "size=8M"]);
    let info = run_ok("qemu-img", &["info", "--image-opts", &s.qemu_opts()]);
    assert!(info.contains("8 MiB"), "{info}");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &s.uri,
        ],
    );
    let cmp = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &s.uri,
        ],
    );
    // sizes differ (2M file, 8M export): compare checks the tail is zero
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let map = run_ok(
        "qemu-img",
        &["map", "--output=json", "--image-opts", &s.qemu_opts()],
    );
    assert!(
        map.contains("\"start\": 0, \"length\": 2097152") && map.contains("\"data\": true"),
        "{map}"
    );
    assert!(map.contains("\"zero\": true"), "{map}");
    let io = run_ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x5a 1M 64k",
            "-c",
            "read -P 0x5a 1M 64k",
            "-c",
            "write -z 3M 1M",
            "-c",
            "read -P 0 3M 1M",
            "-c",
            "discard 4M 64k",
            "-c",
            "flush",
            "--image-opts",
            &s.qemu_opts(),
        ],
    );
    assert!(!io.contains("Pattern verification failed"), "{io}");
    assert!(
        io.contains("read 65536/65536 bytes at offset 1048576"),
        "{io}"
    );
}

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

#[test]
fn file_plugin_reads_writes_and_maps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    let s = Server::start(&["file", img.to_str().unwrap()]);
    s.nbdsh(
        r#"
h.pwrite(b"\x11" * 65536, 1 << 20, nbd.CMD_FLAG_FUA)
h.flush()
h.zero(65536, 0)
h.trim(65536, 1 << 20)
h.pwrite(b"end", (8 << 20) - 3)
"#,
    );
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(&bytes[(8 << 20) - 3..], b"end");
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    assert!(map.lines().next().unwrap().contains("hole,zero"), "{map}");
    drop(s);
    // read-only when asked
    let ro = Server::start(&["-r", "file", &format!("file={}", img.display())]);
    let out = run_ok("nbdinfo", &["--json", &ro.uri]);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert_eq!(read_all(&ro.uri), bytes);
}

#[test]
fn null_plugin_is_zeros_and_one_hole() {
    let s = Server::start(&["null", "size=1G"]);
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "1073741824", "3", "hole,zero"]
    );
    let out = s.nbdsh("h.pwrite(b'x'*512, 0); assert h.pread(512, 0) == bytes(512); print('ok')");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn captive_run_exit_status_and_variables() {
    let out = nbdscript()
        .env("PATH", sys_path())
        .args([
            "memory",
            "1M",
            "-e",
            "foo",
            "--run",
            "echo \"$uri|$nbd|$exportname\"; test -S \"$unixsocket\"; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("nbd+unix:///foo?socket="), "{line}");
    assert!(line.contains("|foo\n"), "{line}");
    let list = nbdscript()
        .env("PATH", sys_path())
        .args([
            "-U",
            "-",
            "-e",
            "foo",
            "memory",
            "1M",
            "--run",
            "nbdinfo --list \"$uri\"",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("export=\"foo\""));
}

#[test]
fn pidfile_single_and_socket_activation() {
    // -s: libnbd's connect_command talks over stdin/stdout.
    let out = run_ok(
        "nbdsh",
        &["-c", &format!("h.connect_command(['{}', '-s', 'memory', '1M']); h.pwrite(b'q', 5); print(bytes(h.pread(1, 5)), h.get_size())", bin())],
    );
    assert_eq!(out.trim(), "b'q' 1048576");
    // systemd socket activation, as `nbdinfo -- [ CMD ]` does
    let out = run_ok(
        "nbdinfo",
        &["--size", "--", "[", bin(), "memory", "3M", "]"],
    );
    assert_eq!(out.trim(), "3145728");
    // -P: pid written once ready; SIGTERM removes the socket and exits 0
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    let sock = dir.path().join("s");
    let mut child = nbdscript()
        .args([
            "-f",
            "-P",
            pid.to_str().unwrap(),
            "-U",
            sock.to_str().unwrap(),
            "memory",
            "1M",
            "--print-uri",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    let p: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(p, child.id());
    assert!(sock.exists());
    sh(&format!("kill -TERM {p}"));
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn bad_clients_do_not_take_the_server_down() {
    let s = Server::start(&["memory", "size=1M"]);
    // garbage instead of a handshake
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xffu8; 64][..], b""] {
        let mut c = UnixStream::connect(&s.sock).unwrap();
        let mut g = [0u8; 18];
        c.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], b"NBDMAGIC");
        let _ = c.write_all(junk);
    }
    // a client that vanishes in the middle of a write payload
    let py = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.recv(18); s.sendall(struct.pack('>I', 3))
s.sendall(struct.pack('>QII', 0x49484156454F5054, 1, 0))   # EXPORT_NAME ""
s.recv(10)
s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 1, 0, 65536) + b'x' * 100)
s.close()
# a 4 GiB read is refused without allocating it; the connection goes on
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.recv(18); s.sendall(struct.pack('>I', 3))
s.sendall(struct.pack('>QII', 0x49484156454F5054, 1, 0))
s.recv(10)
s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, 5, 0, 0xffffffff))
magic, err, cookie = struct.unpack('>IIQ', s.recv(16))
assert (magic, err, cookie) == (0x67446698, 22, 5), (magic, err, cookie)
s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, 6, 0, 4))
r = b''
while len(r) < 20: r += s.recv(20 - len(r))
assert struct.unpack('>IIQ', r[:16]) == (0x67446698, 0, 6) and r[16:] == bytes(4), r
s.close()
"#;
    let out = run("/usr/bin/python3", &["-c", py, s.sock.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 200 connections at once
    let conns: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&s.sock).unwrap())
        .collect();
    drop(conns);
    // still serving
    let out = s.nbdsh("h.pwrite(b'ok', 0); print(h.pread(2, 0).decode())");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn bad_parameters_exit_2_with_a_clear_message() {
    for (args, want) in [
        (vec!["memory"], "size= is required"),
        (vec!["memory", "size=12Q"], "size=12Q"),
        (vec!["memory", "1M", "bogus=1"], "unknown parameter bogus=1"),
        (vec!["memory", "1M", "allocator=weird"], "unknown allocator"),
        (vec!["nosuchplugin"], "unknown plugin"),
        (vec!["memory", "1M", "--filter=nosuch"], "unknown filter"),
        (vec!["file", "/nonexistent/x"], "cannot open"),
    ] {
        let out = nbdscript().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn hexdump_preview() {
    let out = nbdscript()
        .args(["memory", "64k", "--hexdump"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n00010000\n"
    );
}

#[test]
fn tcp_listener_with_nodelay() {
    // Port 0 picks a free port; $port and $uri name the real one.
    let out = nbdscript()
        .env("PATH", sys_path())
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "memory",
            "2M",
            "--run",
            "echo $port; nbdinfo --size \"$uri\"",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].parse::<u16>().unwrap() > 0, "{text}");
    assert_eq!(lines[1], "2097152");
}

#[test]
fn hexdump_window_takes_hex_and_sizes() {
    let out = nbdscript()
        .args([
            "data",
            "data=@0x1fe 0x55 0xAA",
            "size=1M",
            "--hexdump=0x1f0:0x20",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000001f0  00 00 00 00 00 00 00 00  00 00 00 00 00 00 55 aa  |..............U.|\n\
         00000200  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         00000210\n"
    );
    let bad = nbdscript()
        .args(["null", "1M", "--hexdump=zz"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--hexdump=zz"));
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
