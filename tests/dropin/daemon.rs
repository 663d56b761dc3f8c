//! Process life as nbdkit's: forking into the background once ready,
//! foreground flags, a daemon that fails to start, --exit-with-parent,
//! and SIGINT during a delayed read.

use super::*;

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Wait (bounded) until `pid` has gone.
fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn forks_into_the_background_once_ready() {
    let d = tempfile::tempdir().unwrap();
    let pidf = d.path().join("pid");
    let sock = d.path().join("sock");
    // output() waits for the parent and for stdout/stderr to close: the
    // daemon must have let go of both.
    let o = client(bin())
        .args([
            "-P",
            pidf.to_str().unwrap(),
            "-U",
            sock.to_str().unwrap(),
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let pid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid), "the pidfile names a live daemon");
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    assert_eq!(run_ok("nbdinfo", &["--size", &uri]).trim(), "1048576");
    sh(&format!("kill -TERM {pid}"));
    assert!(gone(pid), "the daemon did not exit on SIGTERM");
    assert!(!sock.exists(), "socket left behind");
}

/// `-f` and `--exit-with-parent` keep the server in the foreground, as
/// nbdkit: the process started is the one serving and named in the pidfile.
#[test]
fn foreground_flags_do_not_fork() {
    for flag in ["-f", "--exit-with-parent"] {
        let d = tempfile::tempdir().unwrap();
        let pidf = d.path().join("pid");
        let sock = d.path().join("sock");
        let mut child = nbdscript()
            .args([flag, "--print-uri", "-P", pidf.to_str().unwrap()])
            .args(["-U", sock.to_str().unwrap(), "memory", "1M"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("nbd+unix://"), "{flag}: {line:?}");
        let pid: u32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, child.id(), "{flag}: the pidfile names another process");
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        assert_eq!(run_ok("nbdinfo", &["--size", &uri]).trim(), "1048576");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{flag}: the process started has exited"
        );
        sh(&format!("kill -TERM {pid}"));
        assert_eq!(child.wait().unwrap().code(), Some(0), "{flag}");
    }
}

#[test]
fn a_daemon_that_fails_to_start_reports_it() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("sock");
    let o = client(bin())
        .args(["-U", sock.to_str().unwrap(), "memory", "size=lots"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("size=lots"), "{}", stderr_of(&o));
}

#[test]
fn exit_with_parent_exits_when_the_parent_dies() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("sock");
    // sh is the parent; the server stays in the foreground and prints its
    // URI when ready.
    let mut parent = std::process::Command::new("sh")
        .arg("-c")
        .arg("\"$0\" --exit-with-parent --print-uri -U \"$1\" memory 1M & wait")
        .arg(bin())
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("nbd+unix://"), "{line:?}");
    parent.kill().unwrap();
    parent.wait().unwrap();
    // The server holds the pipe's write end until it exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(20)).is_ok(),
        "the server outlived its parent"
    );
}

#[test]
fn sigint_interrupts_a_delayed_read() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let lf = format!("logfile={}", log.display());
    let s = Server::start(&[
        "--filter=log",
        "--filter=delay",
        "memory",
        "1M",
        "rdelay=60",
        &lf,
    ]);
    let uri = s.uri.clone();
    let reader = std::thread::spawn(move || {
        client("nbdsh")
            .args(["-u", &uri, "-c", "h.pread(512, 0)"])
            .output()
            .unwrap()
    });
    // The log filter (above delay) writes the Read line as the read
    // enters the delay.
    let mut seen = false;
    for _ in 0..400 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" Read id=1 ")
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(seen, "the read never reached the server");
    let t = std::time::Instant::now();
    sh(&format!("kill -INT {}", s.child.id()));
    let mut s = s;
    let st = s.child.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(0));
    let out = reader.join().unwrap();
    assert!(!out.status.success(), "the interrupted read succeeded");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Preconnect id=1 readonly=0 ..."), "{text}");
}
