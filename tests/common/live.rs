//! Servers and clients that live through a test: a server whose stderr
//! arrives line by line (to wait for exact log lines), an nbdsh connection
//! driven step by step through its stdin, and script files written into a
//! test's directory.

use super::{client, nbdscript, sys_path};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// The path of `examples/NAME`.
pub fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Write `text` as `dir/NAME`; returns the path as a string.
pub fn script(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A server whose stderr arrives line by line (to wait for log messages);
/// killed when dropped.
pub struct LiveServer {
    pub child: Child,
    pub uri: String,
    pub log: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl LiveServer {
    /// Serve `args` on a private socket, with the caller's `RUST_LOG`.
    pub fn start(args: &[&str]) -> LiveServer {
        Self::spawn(args, false)
    }

    /// Serve `args` at the default log level (no `RUST_LOG`): what a user
    /// sees.
    pub fn start_default_log(args: &[&str]) -> LiveServer {
        Self::spawn(args, true)
    }

    fn spawn(args: &[&str], default_log: bool) -> LiveServer {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let mut cmd = nbdscript();
        cmd.arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg("--print-uri")
            .args(args)
            .env("PATH", sys_path());
        if default_log {
            cmd.env_remove("RUST_LOG");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut uri = String::new();
        out.read_line(&mut uri).unwrap();
        assert!(
            !uri.trim().is_empty(),
            "server did not start: {:?}",
            log.try_iter().collect::<Vec<_>>()
        );
        LiveServer {
            child,
            uri: uri.trim().to_string(),
            log,
            _dir: dir,
        }
    }

    /// Wait (at most `secs` between lines) for a log line containing `what`.
    pub fn wait_log_for(&self, what: &str, secs: u64) -> String {
        let mut seen = Vec::new();
        loop {
            match self.log.recv_timeout(Duration::from_secs(secs)) {
                Ok(l) if l.contains(what) => return l,
                Ok(l) => seen.push(l),
                Err(e) => panic!("no log line with {what:?} ({e}); got {seen:#?}"),
            }
        }
    }

    /// Wait (bounded) for a log line containing `what`.
    pub fn wait_log(&self, what: &str) -> String {
        self.wait_log_for(what, 10)
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nbdsh on one connection running `py`, driven step by step through its
/// stdin: each step writes a line and reads the line `py` answers.
pub struct Client {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Client {
    pub fn start(uri: &str, py: &str) -> Client {
        let mut child = client("nbdsh")
            .args(["-u", uri, "-c", py])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Client { child, out }
    }

    /// Send `cmd`; the answer, which must start with "ok".
    pub fn step(&mut self, cmd: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        assert!(l.starts_with("ok"), "client step {cmd:?} failed: {l:?}");
        l
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
