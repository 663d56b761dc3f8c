//! nbdkit's command line as scripts written for nbdkit use it: forking
//! into the background, --exit-with-parent, -D, bare values anywhere,
//! --dump-plugin, --version probes, --dump-config, IPv6, -v backend
//! debugging, -D data.AST=1.

use crate::common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

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

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
fn nbdkit_flags_are_accepted() {
    let o = run(
        bin(),
        &[
            "-D",
            "memory.foo=1",
            "--newstyle",
            "--mask-handshake=3",
            "memory",
            "1M",
            "--run",
            "nbdinfo --size \"$uri\"",
        ],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1048576");
    assert!(
        stderr_of(&o).contains("nbdscript: warning: debug flag -D memory.foo was not used"),
        "{}",
        stderr_of(&o)
    );
    let o = run(bin(), &["-D", "memory", "memory", "1M", "--run", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("-D memory: a debug flag must have the format NAME.FLAG=N"));
}

#[test]
fn bare_values_go_to_the_magic_key_anywhere() {
    let args = ["data", "size=512", "1 2 3"];
    let ours = nbdscript_bytes(&args).unwrap();
    assert_eq!(ours, nbdkit_bytes(&args).unwrap());
    assert_eq!(&ours[..4], &[1, 2, 3, 0]);
    assert_eq!(ours.len(), 512);
    let o = run(bin(), &["memroy", "1M", "size=2", "--run", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("nbdscript: unknown plugin \"memroy\""),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn dump_plugin_needs_no_parameters_and_has_nbdkit_keys() {
    let out = run_ok(bin(), &["curl", "--dump-plugin"]);
    assert!(out.contains("thread_model=parallel"), "{out}");
    assert!(out.contains("magic_config_key=url"), "{out}");
    assert!(out.contains("param.url="), "{out}");
    let out = run_ok(bin(), &["memory", "--dump-plugin"]);
    for want in [
        "name=memory",
        "mlock=yes",
        "magic_config_key=size",
        "has_pread=1",
        "param.allocator=",
    ] {
        assert!(out.lines().any(|l| l.starts_with(want)), "{want}: {out}");
    }
    let o = run(bin(), &["--dump-plugin", "-s", "null"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(stderr_of(&o).contains("cannot be used in this combination"));
}

#[test]
fn version_probes_layers() {
    let out = run_ok(bin(), &["--filter=log", "null", "--version"]);
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            format!("nbdscript {v}"),
            format!("log {v}"),
            format!("null {v}")
        ]
    );
    let o = run(bin(), &["nosuchplugin", "--version"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("unknown plugin \"nosuchplugin\""));
    let o = run(bin(), &["--filter=nosuchfilter", "null", "--version"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("unknown filter \"nosuchfilter\""));
    let out = run_ok(bin(), &["--dump-config"]);
    assert!(out.lines().any(|l| l == "host_os=linux-gnu"), "{out}");
    assert!(out.lines().any(|l| l == format!("version={v}")), "{out}");
}

#[test]
fn tcp_listens_on_ipv6_and_ipv4() {
    let mut child = nbdscript()
        .args(["-f", "-p", "0", "--print-uri", "memory", "1M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for host in ["[::1]", "127.0.0.1"] {
        let out = run(
            "qemu-img",
            &["info", "--output=json", &format!("nbd://{host}:{port}")],
        );
        assert!(out.status.success(), "{host}: {}", stderr_of(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"virtual-size\": 1048576"));
    }
    let _ = child.kill();
    let _ = child.wait();
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

/// What libnbd sees of a server: `handshake flags, protocol, structured
/// replies`, then the first bytes after a write (the data path works).
fn handshake_view(prog: &str, mask: &str) -> String {
    let script = r#"export uri; /usr/bin/python3 -c '
import nbd, os
h = nbd.NBD()
h.connect_uri(os.environ["uri"])
print(h.get_handshake_flags(), h.get_protocol(), h.get_structured_replies_negotiated())
h.pwrite(b"ab" * 256, 0)
print(h.pread(4, 0))
'"#;
    let mut args = vec!["-U", "-"];
    if !mask.is_empty() {
        args.push(mask);
    }
    args.extend(["memory", "1M", "--run", script]);
    let o = run(prog, &args);
    assert!(o.status.success(), "{prog} {mask}: {}", stderr_of(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn mask_handshake_masks_global_flags_as_nbdkit() {
    let cases = [
        ("", "3 newstyle-fixed True\n"),
        ("--mask-handshake=0", "0 newstyle False\n"),
        ("--mask-handshake=1", "1 newstyle-fixed True\n"),
        ("--mask-handshake=2", "2 newstyle False\n"),
    ];
    for (mask, want) in cases {
        let ours = handshake_view(bin(), mask);
        assert_eq!(ours, format!("{want}bytearray(b'abab')\n"), "{mask}");
        assert_eq!(
            ours,
            handshake_view("nbdkit", mask),
            "{mask} differs from nbdkit"
        );
    }
    let o = run(
        bin(),
        &["--mask-handshake=x", "memory", "1M", "--run", "true"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).contains("--mask-handshake=x: give an unsigned number"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn run_as_nbdkit_it_answers_version_probes_as_the_nbdkit_it_follows() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("nbdkit");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let link = link.to_str().unwrap();
    let key = |out: &str, k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {k}= in:\n{out}"))
    };
    let ours = run_ok(link, &["--dump-config"]);
    let theirs = run_ok("nbdkit", &["--dump-config"]);
    for k in ["name", "version", "version_major", "version_minor"] {
        assert_eq!(key(&ours, k), key(&theirs, k), "{k}=");
    }
    let bindir = std::path::Path::new(bin()).parent().unwrap();
    assert_eq!(key(&ours, "bindir"), bindir.to_str().unwrap());
    assert_eq!(key(&ours, "nbdscript_version"), env!("CARGO_PKG_VERSION"));
    let v = run_ok(link, &["--filter=offset", "file", "--version"]);
    let want_nbdkit = run_ok("nbdkit", &["--version"]);
    let nbdkit_v = want_nbdkit.trim();
    assert_eq!(
        v,
        format!(
            "{nbdkit_v} (nbdscript {})\noffset {}\nfile {}\n",
            env!("CARGO_PKG_VERSION"),
            &nbdkit_v["nbdkit ".len()..],
            &nbdkit_v["nbdkit ".len()..]
        )
    );
    // Under its own name it is nbdscript.
    let own = run_ok(bin(), &["--dump-config"]);
    assert_eq!(key(&own, "name"), "nbdscript");
    assert_eq!(key(&own, "version"), env!("CARGO_PKG_VERSION"));
    assert!(run_ok(bin(), &["--version"]).starts_with("nbdscript "));
}

#[test]
fn verbose_logs_every_layer_call_as_nbdkit() {
    let cases = [
        (None, true, true),
        (Some("nbdkit.backend.controlpath=0"), false, true),
        (Some("nbdkit.backend.datapath=0"), true, false),
    ];
    for (flag, open, pread) in cases {
        let mut a = vec!["-U", "-", "-v"];
        if let Some(f) = flag {
            a.extend(["-D", f]);
        }
        a.extend([
            "--filter=noextents",
            "memory",
            "1M",
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pread(512, 0)'",
        ]);
        let out = run(bin(), &a);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        let has = |what: &str| {
            err.lines()
                .any(|l| l.starts_with("nbdscript: debug: ") && l.contains(what))
        };
        for layer in ["noextents", "memory"] {
            let o = format!("debug: {layer}: open readonly=0 exportname=\"\" tls=0");
            assert_eq!(has(&o), open, "{flag:?} {o}\n{err}");
            let p = format!("debug: {layer}: pread count=512 offset=0 flags=0x0");
            assert_eq!(has(&p), pread, "{flag:?} {p}\n{err}");
        }
        assert!(!err.contains("was not used"), "{err}");
    }
}

/// The lines between `BEGIN AST` and `END AST` of a `-fv -D data.AST=1`
/// run of `prog`, each without the `PREFIX: debug: ` that must start it.
fn data_ast(prog: &str, prefix: &str, data: &str) -> Vec<String> {
    let out = run(
        prog,
        &[
            "-U",
            "-",
            "-fv",
            "-D",
            "data.AST=1",
            "data",
            data,
            "--run",
            "true",
        ],
    );
    let err = stderr_of(&out);
    assert!(out.status.success(), "{prog} data {data:?}: {err}");
    let mut lines = err.lines();
    let begin = format!("{prefix}: debug: BEGIN AST (-D data.AST=1)");
    assert!(lines.any(|l| l == begin), "no {begin:?} in:\n{err}");
    let end = format!("{prefix}: debug: END AST");
    lines
        .take_while(|l| *l != end)
        .map(|l| {
            l.strip_prefix(&format!("{prefix}: debug: "))
                .unwrap_or_else(|| panic!("{l:?} in:\n{err}"))
                .to_string()
        })
        .collect()
}

#[test]
fn data_ast_debug_flag_prints_the_optimized_tree_as_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("nbdkit");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let link = link.to_str().unwrap();
    // Cases of nbdkit's test-data-optimum.sh and the other node kinds.
    let cases: &[(&str, &[&str])] = &[
        ("1", &["1"]),
        ("\"1111\" 0x31", &["fill(49*5)"]),
        (
            "(0x31 0x32 0x33)*4*4",
            &[&format!("\"{}\"", "123".repeat(16))],
        ),
        (
            "(((2 2 2) 2)) (1 1 1 (1 3))",
            &[
                "(",
                "    fill(2*4)",
                "    fill(1*3)",
                "    \"\\x01\\x03\"",
                ")",
            ],
        ),
        ("\"123456\"[1:2]", &["50"]),
        ("(1 1 1 1 1 1)[1:6]", &["fill(1*5)"]),
        ("()[6:]*0", &["null"]),
        (
            "\"a b\\\\\" 0xff (1 2)*5 @^4 @+3 @-1 (4 5) -> \\x \\x",
            &[
                "(",
                "    \"a b\\\\xff\"",
                "    (",
                "        \"\\x01\\x02\"",
                "    ) *5",
                "    @^4",
                "    @3",
                "    @-1",
                "    (",
                "        \"\\x04\\x05\"",
                "    ) -> \\x",
                "    \\x",
                ")",
            ],
        ),
    ];
    for (data, want) in cases {
        let ours = data_ast(bin(), "nbdscript", data);
        assert_eq!(ours, *want, "data {data:?}");
        // Run as `nbdkit`, the lines are nbdkit's own.
        assert_eq!(data_ast(link, "nbdkit", data), ours, "data {data:?}");
        assert_eq!(data_ast("nbdkit", "nbdkit", data), ours, "data {data:?}");
    }
    // Only with -v; with another plugin the flag is not used (a warning).
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "-f",
            "-D",
            "data.AST=1",
            "data",
            "1",
            "--run",
            "true",
        ],
    );
    assert!(out.status.success());
    assert!(!stderr_of(&out).contains("AST"), "{}", stderr_of(&out));
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "-v",
            "-D",
            "data.AST=1",
            "memory",
            "1M",
            "--run",
            "true",
        ],
    );
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(!err.contains("BEGIN AST"), "{err}");
    assert!(
        err.contains("nbdscript: warning: debug flag -D data.AST was not used"),
        "{err}"
    );
}
