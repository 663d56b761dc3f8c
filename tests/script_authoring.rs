//! What a script author sees: reloads that never stall in a busy
//! directory, top-level declarations in callbacks, every mistake in the
//! log at the default level as `file:line:col: callback: message`,
//! did-you-mean warnings, parameters, `--dump-plugin`, and the examples'
//! header commands run as written.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// A server whose stderr arrives line by line, at the default log level
/// (no `-v`, no `RUST_LOG`).
struct Live {
    child: Child,
    uri: String,
    log: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Live {
    fn start(args: &[&str]) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let mut child = nbdscript()
            .arg("-U")
            .arg(&sock)
            .arg("--print-uri")
            .args(args)
            .env("PATH", sys_path())
            .env_remove("RUST_LOG")
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
        Live {
            child,
            uri: uri.trim().to_string(),
            log,
            _dir: dir,
        }
    }

    /// Wait (bounded) for a log line containing `what`.
    fn wait_log(&self, what: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.log.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l.contains(what) => return l,
                Ok(l) => seen.push(l),
                Err(e) => panic!("no log line with {what:?} ({e}); got {seen:#?}"),
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// 20 saves while another process appends to a file in the script's
/// directory every 10 ms: every save is visible to a connected client
/// within 100 ms.
#[test]
fn reload_ignores_a_busy_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.rhai");
    let version = |n: u32| {
        format!("fn get_size(h) {{ 4096 }}\nfn pread(h, count, offset) {{ blob(count, {n}) }}\n")
    };
    write(&path, &version(0));
    let s = Live::start(&[path.to_str().unwrap()]);
    let mut noise = Command::new("sh")
        .arg("-c")
        .arg("while :; do echo line >> noise.log; sleep 0.01; done")
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let template = version(1234567).replace("1234567", "%d");
    let prog = format!(
        r#"
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
path = sys.argv[2]
template = {template:?}
worst = 0.0
for i in range(1, 21):
    time.sleep(0.05)
    t = time.monotonic()
    with open(path, "w") as f:
        f.write(template % i)
    while h.pread(1, 0)[0] != i:
        if time.monotonic() - t > 5:
            print("save", i, "not seen after 5 s"); sys.exit(1)
        time.sleep(0.001)
    worst = max(worst, time.monotonic() - t)
print("%.1f" % (worst * 1000))
"#
    );
    let out = run(
        "/usr/bin/python3",
        &["-c", &prog, &s.uri, path.to_str().unwrap()],
    );
    let _ = noise.kill();
    let _ = noise.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worst: f64 = stdout.trim().parse().unwrap();
    eprintln!("reload latency under directory activity: max {worst:.1} ms over 20 saves");
    assert!(worst < 100.0, "a save took {worst} ms to be seen");
}

/// Top-level `const`, `let` and `import ... as` are seen by every
/// callback (`config` too) and re-evaluated on reload.
#[test]
fn top_level_declarations_are_visible_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("helper.rhai"),
        "fn fill(n, v) { blob(n, v) }\nexport const SECTOR = 512;\n",
    );
    let path = dir.path().join("top.rhai");
    let version = |byte: u32| {
        format!(
            "import \"helper\" as hp;\nconst BYTE = {byte};\nlet sectors = 8;\n\
             fn config(p) {{ #{{ size: sectors * hp::SECTOR }} }}\n\
             fn get_size(h) {{ h.size }}\n\
             fn pread(h, count, offset) {{ hp::fill(count, BYTE + sectors) }}\n"
        )
    };
    write(&path, &version(1));
    let s = Live::start(&[path.to_str().unwrap()]);
    let prog = r#"
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print(h.get_size(), h.pread(4, 0).hex())
sys.stdout.flush()
sys.stdin.readline()
t = time.monotonic()
while h.pread(4, 0) == bytes([9] * 4) and time.monotonic() - t < 5:
    time.sleep(0.005)
print(h.pread(4, 0).hex())
"#;
    let mut c = client("/usr/bin/python3")
        .args(["-c", prog, &s.uri])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "4096 09090909");
    write(&path, &version(2));
    use std::io::Write;
    writeln!(c.stdin.as_mut().unwrap()).unwrap();
    l.clear();
    out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "0a0a0a0a");
    assert!(c.wait().unwrap().success());
}
