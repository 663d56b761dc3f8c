//! The test harness: start the real `nbdscript` binary on a private Unix
//! socket (readiness from `--print-uri`, never a sleep) and run real
//! clients (nbdsh, nbdinfo, nbdcopy, qemu-img, qemu-io, fio) against it.
#![allow(dead_code)]

mod live;
mod twin;
pub use live::*;
pub use twin::*;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nbdscript")
}

/// A `Command` for the binary under test.
pub fn nbdscript() -> Command {
    Command::new(bin())
}

/// PATH with /usr/bin first, so nbdsh finds the system python3 that has
/// the `nbd` module.
pub fn sys_path() -> String {
    format!(
        "/usr/bin:/usr/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A running server on a private socket; stopped (SIGTERM) when dropped.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub uri: String,
    pub stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Start `nbdscript -f -U SOCK --print-uri ARGS...` and wait until it prints
    /// its URI (it does so once the socket accepts connections).
    pub fn start(args: &[&str]) -> Server {
        match Self::try_start(args) {
            Ok(s) => s,
            Err(e) => panic!("nbdscript {args:?} did not start: {e}"),
        }
    }

    /// Like `start`, but returns the server's stderr if it exits instead.
    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        Self::try_start_in(args, None)
    }

    /// Start with the working directory set (for relative paths).
    pub fn try_start_in(args: &[&str], cwd: Option<&Path>) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let sock = dir.path().join("nbd.sock");
        let mut cmd = nbdscript();
        cmd.arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg("--print-uri")
            .args(args)
            .env("PATH", sys_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut line = String::new();
        let mut r = BufReader::new(stdout);
        let _ = r.read_line(&mut line);
        if line.trim().is_empty() {
            let _ = child.wait();
            let err = err_thread.join().unwrap_or_default();
            return Err(format!("server exited before it was ready: {err}"));
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        Ok(Server {
            child,
            dir,
            sock,
            uri: line.trim().to_string(),
            stderr: Some(err_thread),
        })
    }

    /// `--image-opts` string for qemu tools.
    pub fn qemu_opts(&self) -> String {
        format!("driver=nbd,path={}", self.sock.display())
    }

    /// Run nbdsh with `--base-allocation -u URI -c SCRIPT` (`h` is the
    /// handle, `nbd` the module).
    /// Panics with stderr unless it succeeds; returns stdout.
    pub fn nbdsh(&self, script: &str) -> String {
        let out = self.nbdsh_output(&["--base-allocation"], script);
        assert!(
            out.status.success(),
            "nbdsh failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// nbdsh with extra options (e.g. `--base-allocation`), raw output.
    pub fn nbdsh_output(&self, opts: &[&str], script: &str) -> Output {
        client("nbdsh")
            .args(opts)
            .arg("-u")
            .arg(&self.uri)
            .arg("-c")
            .arg(script)
            .output()
            .expect("run nbdsh")
    }

    /// Stop with SIGTERM and return (exit status, stderr).
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.terminate();
        let st = self.child.wait().ok().and_then(|s| s.code());
        let err = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (st, err)
    }

    fn terminate(&mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// Seconds a client may run before it is killed (exit status 124), so a
/// hung client fails its test instead of stalling the whole run.
const CLIENT_TIMEOUT: &str = "180";

/// `prog` under coreutils `timeout`, with /usr/bin first on PATH.
pub fn client(prog: &str) -> Command {
    let mut c = Command::new("timeout");
    c.env("PATH", sys_path())
        .args(["-k", "5", CLIENT_TIMEOUT, prog]);
    c
}

/// Run a program with /usr/bin first on PATH; returns its output.
pub fn run(prog: &str, args: &[&str]) -> Output {
    client(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// Run a program and insist on success; returns stdout.
pub fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `sh -c SCRIPT`; returns the output.
pub fn sh(script: &str) -> Output {
    client("sh").arg("-c").arg(script).output().expect("run sh")
}

/// Read the whole export (or `len` bytes from 0) with nbdcopy / nbdsh.
pub fn read_all(uri: &str) -> Vec<u8> {
    let out = Command::new("nbdcopy")
        .env("PATH", sys_path())
        .arg(uri)
        .arg("-")
        .output()
        .expect("run nbdcopy");
    assert!(
        out.status.success(),
        "nbdcopy {uri} - failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Bytes of an nbdkit export: `nbdkit -U - ARGS --run 'nbdcopy $uri -'`.
pub fn nbdkit_bytes(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("nbdkit")
        .env("PATH", sys_path())
        .arg("-U")
        .arg("-")
        .args(args)
        .arg("--run")
        .arg("nbdcopy \"$uri\" -")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Bytes of an nbdscript export through captive `--run`.
pub fn nbdscript_bytes(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = nbdscript()
        .env("PATH", sys_path())
        .args(args)
        .arg("--run")
        .arg("nbdcopy \"$uri\" -")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Wait (at most `secs`) until the file at `path` contains `what` — a log
/// line a server writes when something happened (a request reached the
/// plugin, a connection ended); returns the file's text. Never a fixed
/// sleep: it returns as soon as the line is there.
pub fn wait_file_for(path: &Path, what: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what:?} not in {} after {secs} s:\n{text}", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
