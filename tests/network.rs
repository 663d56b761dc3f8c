//! A server on a network: handshake timeouts and the connection limit
//! (300 idle clients against 256 open files; out of descriptors logged
//! once a second), socket safety (a live
//! socket is never taken over, `-U -` is private and unpredictable),
//! `$uri` percent-encoding, `--run` exit codes, and requests other servers
//! refuse early (a 5000-byte EXPORT_NAME, a 4 GiB WRITE).

use crate::common::*;
use crate::protocol::{raw, RAW};
use std::time::{Duration, Instant};

#[test]
fn a_live_socket_is_never_taken_over() {
    let a = Server::start(&["memory", "1M"]);
    let o = nbdscript()
        .arg("-f")
        .arg("-U")
        .arg(&a.sock)
        .args(["memory", "1M"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("address already in use"), "{err}");
    // The first server still has its socket.
    assert!(a.sock.exists());
    assert_eq!(read_all(&a.uri).len(), 1 << 20);
    // A stale socket file (nobody listening) is replaced, and removed at
    // exit; a path another process re-created meanwhile is left alone.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    let out = nbdscript()
        .arg("-U")
        .arg(&p)
        .args(["memory", "1M", "--run", "nbdinfo --size \"$uri\""])
        .env("PATH", sys_path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
    assert!(!p.exists(), "socket left behind");
    let replaced = format!(
        "rm -f {0}; /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{0}\")'; nbdinfo --size \"$uri\" || true",
        p.display()
    );
    let out = nbdscript()
        .arg("-U")
        .arg(&p)
        .args(["memory", "1M", "--run", &replaced])
        .env("PATH", sys_path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(p.exists(), "removed a socket another process created");
}

#[test]
fn private_temp_socket_uri_encoding_and_run_exit_codes() {
    let out = nbdscript()
        .args(["-U", "-", "-e", "é x", "memory", "1M"])
        .args([
            "--run",
            "echo \"$uri\"; stat -c %a \"$(dirname \"$unixsocket\")\"; basename \"$(dirname \"$unixsocket\")\"",
        ])
        .env("PATH", sys_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let l: Vec<&str> = text.lines().collect();
    assert!(l[0].starts_with("nbd+unix:///%C3%A9%20x?socket="), "{text}");
    assert_eq!(l[1], "700");
    let name = l[2].strip_prefix("nbdscript").expect("nbdscriptXXXX");
    assert!(
        name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit()),
        "predictable temp dir {name}"
    );
    let out = nbdscript()
        .args(["-e", "a?b#c", "memory", "1M", "--run", "echo \"$uri\""])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nbd+unix:///a%3Fb%23c?socket="));
    let st = nbdscript()
        .args(["memory", "1M", "--run", "kill -9 $$"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(137), "128 + SIGKILL");
    let st = nbdscript()
        .args(["memory", "1M", "--run", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
}

#[test]
fn long_export_name_and_huge_write_end_promptly() {
    let s = Server::start(&["memory", "1M"]);
    raw(
        &s,
        r#"
import time
c = C(); c.opt(1, b"x" * 5000); assert c.closed(), "5000-byte EXPORT_NAME must end the session"
c = C(); c.opt(8); c.reps(); c.go()
t = time.time()
c.req(1, 0, 0xffffffff, 9, data=b"y" * 1000)
rs = c.chunks(); assert errs(rs) == [22], rs
assert c.closed() and time.time() - t < 5, "no 4 GiB read"
c = C(); c.opt(11); c.reps(); c.go()
c.req(1, 0, 1 << 32, 10, data=b"y" * 1000, ext=True)
assert c.closed() or errs(c.chunks()) == [22]
"#,
    );
}

#[test]
fn idle_handshakes_time_out() {
    let s = Server::start(&["--timeout=1", "memory", "1M"]);
    raw(
        &s,
        r#"
import time
t = time.time(); c = C(flags=None)
assert c.closed() and 0.5 < time.time() - t < 5, time.time() - t
"#,
    );
    // A client that finished its handshake is not timed out.
    let o = s.nbdsh("import time\ntime.sleep(1.5)\nprint(h.pread(4, 0))");
    assert_eq!(o.trim(), "bytearray(b'\\x00\\x00\\x00\\x00')");
}

/// `nbdscript ARGS memory 1M` on `dir/s` limited to `nofile` open files,
/// its stderr in `dir/err`; returned once its pidfile says it is ready.
fn served_with_few_files(dir: &std::path::Path, nofile: u32, args: &[&str]) -> std::process::Child {
    let pid = dir.join("pid");
    let child = std::process::Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(bin())
        .arg("-f")
        .arg("-U")
        .arg(dir.join("s"))
        .arg("-P")
        .arg(&pid)
        .args(args)
        .args(["memory", "1M"])
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pid.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn idle_clients_cannot_lock_out_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let mut child = served_with_few_files(dir.path(), 256, &[]);
    let prog = format!(
        "{RAW}\n{}",
        r#"
import time
idle = []
for i in range(300):
    x = socket.socket(socket.AF_UNIX); x.connect(path); idle.append(x)
time.sleep(0.5)
t = time.time()
c = C(); c.opt(8); c.reps(); assert c.go()[-1][1] == 1
c.req(0, 0, 512, 1); rs = c.chunks(); assert rs[-1]["data"][8:] == bytes(512), rs
el = time.time() - t
assert el < 1.0, "good client waited %.2fs" % el
print("done %.3f" % el)
"#
    );
    let out = run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("done"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Out of descriptors for about a second: a warning or two, not one
    // per failed accept.
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    let w: Vec<&str> = err.lines().filter(|l| l.contains("accept fail")).collect();
    assert!(w.len() <= 3, "{} accept warnings: {w:#?}", w.len());
}

#[test]
fn out_of_descriptors_is_logged_once_a_second_with_a_count() {
    // Idle clients arriving for 2.5 s against 256 open files: once the
    // descriptors are gone every accept fails first and an idle handshake
    // is closed to make room (hundreds a second). The warnings stay at
    // about one a second, and count the failures they stand for.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let mut child = served_with_few_files(dir.path(), 256, &["--max-connections=1000"]);
    let prog = format!(
        "{RAW}\n{}",
        r#"
import resource, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
if soft < want: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
idle = []; t0 = time.time()
while time.time() - t0 < 2.5 and len(idle) < want - 100:
    x = socket.socket(socket.AF_UNIX); x.connect(path); x.settimeout(20); idle.append(x)
    x.recv(18)     # the greeting, or EOF when it was closed to make room
c = C(); c.opt(8); c.reps(); assert c.go()[-1][1] == 1
print("idle", len(idle))
"#
    );
    let out = run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("idle"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    let w: Vec<&str> = err.lines().filter(|l| l.contains("accept fail")).collect();
    assert!(
        w[0].ends_with("accept failed: Too many open files (os error 24)"),
        "{w:#?}"
    );
    // 2.5 s: three of each kind at most (at 0, 1 and 2 s).
    assert!(w.len() <= 6, "{} accept warnings: {w:#?}", w.len());
    // Every later warning counts the failures not logged before it.
    let counted: u64 = w[1..]
        .iter()
        .map(|l| {
            let n = match l.strip_suffix(" more since the last warning)") {
                Some(l) => l.rsplit_once(" (").map(|(_, n)| n),
                None => l.split_once("listen: ").and_then(|(_, r)| {
                    r.strip_suffix(" more accept failures since the last warning; accepting again")
                }),
            };
            n.unwrap_or_else(|| panic!("no count in {l:?}"))
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(
        counted >= 100,
        "only {counted} failures counted: {w:#?}\n{text}"
    );
}

/// Python for [`RAW`]: `conn()` connects with a 1 s timeout (no
/// greeting read), `handshake(c)` reads the greeting and negotiates.
const CONN_HELPERS: &str = r#"
def conn():
    x = socket.socket(socket.AF_UNIX); x.connect(path); x.settimeout(1.0)
    c = C.__new__(C); c.s = x
    return c
def handshake(c):
    g = c.rx(18); assert g[:16] == b"NBDMAGICIHAVEOPT", g
    c.s.settimeout(20); c.s.sendall(struct.pack(">I", 3))
    c.opt(8); c.reps(); assert c.go()[-1][1] == 1
"#;

#[test]
fn out_of_descriptors_never_closes_the_connection_just_accepted() {
    // Every descriptor held by clients past their handshake (none can be
    // closed to make room); one more waits to be accepted. When a client
    // leaves, it is accepted; the next client's accept then fails
    // (EMFILE) and must not close the one just accepted, the only one in
    // its handshake.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let mut child = served_with_few_files(dir.path(), 128, &["--max-connections=1000"]);
    let prog = format!(
        "{RAW}\n{CONN_HELPERS}\n{}",
        r#"
import time
good = []
while True:
    c = conn()
    try:
        handshake(c)
    except socket.timeout:
        waiting = c    # out of descriptors: not accepted yet
        break
    good.append(c)
    assert len(good) < 200, "never ran out of descriptors"
good.pop().s.close()
waiting.s.settimeout(10)
handshake(waiting)     # accepted in the freed descriptor
late = conn()          # its accept fails: out of descriptors again
time.sleep(0.5)
waiting.req(0, 0, 512, 1); rs = waiting.chunks(); assert rs[-1]["data"][8:] == bytes(512), rs
print("served", len(good))
"#
    );
    let out = run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("served"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn connection_limit_refusals_are_logged_once_a_second_with_a_count() {
    // Two clients past their handshake fill --max-connections=2; 300 more
    // are refused (closed at once), with a warning or two, not 300.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let mut child = served_with_few_files(dir.path(), 1024, &["--max-connections=2"]);
    let prog = format!(
        "{RAW}\n{CONN_HELPERS}\n{}",
        r#"
good = [conn(), conn()]
for c in good: handshake(c)
refused = 0
for i in range(300):
    c = conn(); c.s.settimeout(10)
    if c.s.recv(18) == b"": refused += 1
    c.s.close()
print("refused", refused)
"#
    );
    let out = run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused 300"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    let w: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("connection limit 2 reached"))
        .collect();
    assert!(
        w[0].contains("connection limit 2 reached: refusing"),
        "{w:#?}"
    );
    assert!(w.len() <= 4, "{} refusal warnings: {w:#?}", w.len());
    for l in &w[1..] {
        assert!(l.contains(" more refused since the last warning)"), "{l}");
    }
}

#[test]
fn errors_sent_to_clients_carry_no_server_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.rhai");
    std::fs::write(
        &path,
        "fn get_size(h) { 1048576 }\nfn pread(h, count, offset) { let x = [1][5]; blob(count) }\n",
    )
    .unwrap();
    let s = Server::start(&[path.to_str().unwrap()]);
    let out = raw(
        &s,
        r#"
c = C(); c.opt(8); c.reps(); c.go()
c.req(0, 0, 512, 1); cs = c.chunks(); assert errs(cs) == [5], cs
msg = cs[0]["data"][6:].decode()
print("msg:", msg)
"#,
    );
    let msg = out.lines().find_map(|l| l.strip_prefix("msg: ")).unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(!msg.is_empty() && !msg.contains(d), "{msg}");
    let (_, log) = s.stop();
    assert!(
        log.contains(&format!("{d}/bad.rhai:2:")),
        "the log keeps the path:\n{log}"
    );
}
