//! Filters that decide who connects, when, and how many at once (ip,
//! exitwhen, noparallel), with real clients, against nbdkit where it has
//! the same filter.

use crate::common::*;
use std::time::{Duration, Instant};

/// `PROG -U - ARGS --run CMD`: did CMD succeed?
fn captive_ok(prog: &str, args: &[&str], cmd: &str) -> bool {
    let mut a = vec!["-U", "-"];
    a.extend(args);
    a.extend(["--run", cmd]);
    run(prog, &a).status.success()
}

fn id(flag: &str) -> String {
    run_ok("id", &[flag]).trim().to_string()
}

#[test]
fn ip_filter_unix_credentials_as_nbdkit() {
    let (uid, gid) = (id("-u"), id("-g"));
    let cases: Vec<(Vec<String>, bool)> = vec![
        (vec![format!("allow=uid:{uid}"), "deny=all".into()], true),
        (vec![format!("deny=uid:{uid}")], false),
        (vec![format!("allow=gid:{gid}"), "deny=all".into()], true),
        (vec![format!("deny=gid:{gid}")], false),
        (vec!["deny=anyunix".into()], false),
        (vec!["allow=anyunix".into(), "deny=all".into()], true),
        (vec!["deny=anyipv4,anyipv6".into()], true),
        (vec!["allow=uid:99999".into(), "deny=all".into()], false),
    ];
    for (rules, want) in cases {
        for prog in [bin(), "nbdkit"] {
            let mut args = vec!["--filter=ip", "null", "size=512"];
            args.extend(rules.iter().map(String::as_str));
            let ok = captive_ok(prog, &args, "nbdinfo --size \"$uri\"");
            assert_eq!(ok, want, "{prog} {rules:?}");
        }
    }
}

#[test]
fn ip_filter_pid_over_stdin_socketpair() {
    // nbdsh runs the server with -s on a socketpair: its peer pid is
    // nbdsh's own.
    for (rule, want) in [("allow=pid:{pid}", true), ("deny=pid:{pid}", false)] {
        let py = format!(
            "import os\n\
             rule = '{rule}'.replace('{{pid}}', str(os.getpid()))\n\
             try:\n\
             \x20   h.connect_command(['{}', '-s', '--filter=ip', 'null', 'size=512', rule, 'deny=all'])\n\
             \x20   print('size', h.get_size())\n\
             except nbd.Error as e:\n\
             \x20   print('refused')\n",
            bin()
        );
        let out = run_ok("nbdsh", &["-c", &py]);
        let expect = if want { "size 512\n" } else { "refused\n" };
        assert_eq!(out, expect, "{rule}");
    }
}

#[test]
fn ip_filter_tcp_addresses_and_prefixes() {
    // The default listener is dual-stack: an IPv4 client is matched as
    // IPv4, not as an IPv4-mapped IPv6 address.
    let cases = [
        ("allow=127.0.0.1 deny=all", true),
        ("deny=127.0.0.0/8", false),
        ("deny=128.0.0.0/1", true),
        ("deny=anyipv4", false),
        ("deny=anyipv6", true),
        ("allow=::1 deny=all", false),
        ("deny=::ffff:127.0.0.1", true),
    ];
    for (rules, want) in cases {
        let mut args = vec!["-p", "0", "--filter=ip", "null", "size=512"];
        args.extend(rules.split(' '));
        args.extend(["--run", "nbdinfo --size nbd://127.0.0.1:$port"]);
        let out = run(bin(), &args);
        assert_eq!(out.status.success(), want, "{rules}");
    }
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "--filter=ip",
            "null",
            "allow=1.2.3.4/40",
            "--run",
            "true",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("ip: allow=1.2.3.4/40: expected"), "{err}");
}

#[test]
fn exitwhen_refuses_new_clients_and_exits_after_the_last() {
    let d = tempfile::tempdir().unwrap();
    let ev = d.path().join("stop");
    let p = format!("exit-when-file-created={}", ev.display());
    let mut s = Server::start(&["--filter=exitwhen", "memory", "1M", &p]);
    let mut c = Client::start(
        &s.uri,
        "import sys\nfor l in sys.stdin:\n    h.pread(512, 0); print('ok', flush=True)\n",
    );
    c.step("read");
    std::fs::write(&ev, b"").unwrap();
    // A new client is refused before the handshake.
    let out = run("nbdinfo", &["--size", &s.uri]);
    assert!(!out.status.success(), "a new client was let in");
    // The connected one is served until it leaves.
    c.step("read");
    assert_eq!(
        exits_within(&mut s, 1),
        None,
        "exited with a client connected"
    );
    drop(c);
    assert_eq!(exits_within(&mut s, 10), Some(0));
}

/// Wait (bounded) for the server to exit; its status.
fn exits_within(s: &mut Server, secs: u64) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Ok(Some(st)) = s.child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn exitwhen_polls_while_idle_and_exits_at_start() {
    let d = tempfile::tempdir().unwrap();
    let flag = d.path().join("flag");
    let script = format!("test -e {} && exit 88; exit 0", flag.display());
    let p = format!("exit-when-script={script}");
    let mut s = Server::start(&["--filter=exitwhen", "memory", "1M", &p, "exit-when-poll=1"]);
    assert_eq!(run_ok("nbdinfo", &["--size", &s.uri]), "1048576\n");
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(exits_within(&mut s, 5), Some(0), "idle server did not exit");
    // An event that already holds: nothing is served.
    let gone = format!("exit-when-file-deleted={}", d.path().join("none").display());
    let t = Instant::now();
    for prog in [bin(), "nbdkit"] {
        let out = run(prog, &["-f", "-U", "-", "--filter=exitwhen", "null", &gone]);
        assert_eq!(out.status.code(), Some(0), "{prog}");
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn noparallel_connections_one_client_at_a_time() {
    let s = Server::start(&[
        "--filter=noparallel",
        "--filter=delay",
        "memory",
        "1M",
        "serialize=connections",
        "rdelay=60",
    ]);
    let out = s.nbdsh("print(h.can_multi_conn())");
    assert_eq!(out, "False\n");
    let mut a = Client::start(
        &s.uri,
        "import sys\nfor l in sys.stdin:\n    print('ok', flush=True)\n",
    );
    a.step("connected");
    // A second client waits in its handshake while the first is there.
    let out = run("timeout", &["2", "nbdinfo", "--size", &s.uri]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "the second client was not held"
    );
    drop(a);
    assert_eq!(run_ok("nbdinfo", &["--size", &s.uri]), "1048576\n");
    // A client killed during a 60 s delayed read frees its place at once
    // (the delay ends when the client hangs up), as nbdkit.
    let qemu = format!("nbd+unix:///?socket={}", s.sock.display());
    let out = run(
        "timeout",
        &["1", "qemu-io", "-f", "raw", &qemu, "-c", "r 0 512"],
    );
    assert_eq!(out.status.code(), Some(124));
    let t = Instant::now();
    let out = run(
        "timeout",
        &["5", "qemu-io", "-f", "raw", &qemu, "-c", "quit"],
    );
    assert!(out.status.success(), "the second client was not let in");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn noparallel_modes_are_checked() {
    for mode in ["requests", "all-requests", "connections"] {
        let m = format!("serialize={mode}");
        let args = ["--filter=noparallel", "memory", "1M", m.as_str()];
        let s = Server::start(&args);
        let out = s.nbdsh("h.pwrite(b'x' * 512, 0)\nprint(bytes(h.pread(1, 0)))");
        assert_eq!(out, "b'x'\n", "{mode}");
    }
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "--filter=noparallel",
            "null",
            "serialize=x",
            "--run",
            "true",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "noparallel: unknown serialize mode 'x' (expected requests, all-requests or connections)"
    ));
}
