//! The server as a process: captive `--run` with its exit status and
//! variables, pidfile and socket activation, TCP with nodelay, bad
//! parameters and bad clients, and `--hexdump`.

use super::*;

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
