//! Issue 12, the script half: no script can abort or wedge the process.
//! Each case is a few-line script served by the real binary; a request
//! fails with the named errno, the log names the problem, another
//! connection is served meanwhile, RSS stays bounded, and the server is
//! alive afterwards.

use crate::common::*;
use std::time::{Duration, Instant};

/// VmRSS of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb >> 10
}

/// A python client (libnbd) on `uri`: runs `body` with `h` connected;
/// returns stdout, panicking with stderr when it fails.
fn py(uri: &str, body: &str) -> String {
    let code = format!("import nbd, errno, time\nh = nbd.NBD()\nh.connect_uri({uri:?})\n{body}\n");
    let out = client("/usr/bin/python3")
        .arg("-c")
        .arg(&code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Another connection reads while `f` runs; returns the slowest read (s).
fn served_meanwhile(uri: &str, offset: u64, f: impl FnOnce()) -> f64 {
    served_meanwhile_or(uri, offset, None, f)
}

/// As `served_meanwhile`, but each of the other connection's reads may
/// also be answered with `errno` (say ENOMEM while the script's shared
/// memory budget is full): what counts is that it is answered promptly.
fn served_meanwhile_or(uri: &str, offset: u64, errno: Option<&str>, f: impl FnOnce()) -> f64 {
    use std::io::{BufRead, BufReader, Read};
    let read = match errno {
        None => format!("assert h.pread(512, {offset}) == bytes(512)"),
        Some(e) => format!(
            "try:\n        assert h.pread(512, {offset}) == bytes(512)\n    except nbd.Error as e:\n        assert e.errnum == errno.{e}, e"
        ),
    };
    // The other connection is opened before `f` runs (it says so on
    // stdout): opening while `f` holds a shared budget full could fail.
    let code = format!(
        "import nbd, errno, time, sys\nh = nbd.NBD()\nh.connect_uri({uri:?})\nprint('connected', flush=True)\n\
         worst = 0\nfor i in range(20):\n    t = time.time()\n    {read}\n    worst = max(worst, time.time() - t)\n    time.sleep(0.02)\nprint(worst)"
    );
    let mut child = client("/usr/bin/python3")
        .arg("-c")
        .arg(&code)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mut rest = String::new();
    if first.trim() == "connected" {
        f();
        out.read_to_string(&mut rest).unwrap();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && first.trim() == "connected",
        "other connection failed: {first}{rest}\n{err}\n{code}"
    );
    rest.trim().parse().unwrap()
}

fn alive(s: &Server) {
    py(&s.uri, "assert h.pread(512, 4096) == bytes(512)");
    assert!(s.child.id() > 0);
}

/// Case 1: state nested one level more per read, and deep temporaries in
/// one call: EIO with file:line:col, never a stack overflow.
#[test]
fn nesting_fails_the_request_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "deep.rhai",
        "fn config(p) { #{ x: #{} } }\nfn thread_model() { \"parallel\" }\nfn get_size(h) { 1048576 }\n\
         fn pread(h, c, o) {\n  if o == 0 { for i in 0..100 { h.x = #{ x: h.x }; } }\n\
         \x20 if o == 512 { let a = #{}; for i in 0..2000 { a = #{ x: a }; } }\n  blob(c)\n}\n",
    );
    let s = Server::start(&["--script-timeout", "30000", &p]);
    let worst = served_meanwhile(&s.uri, 4096, || {
        // 100 levels per read: the 11th read would pass 1000 levels.
        let out = py(
            &s.uri,
            "n = 0\nfor i in range(20):\n    try:\n        h.pread(512, 0); n += 1\n    except nbd.Error as e:\n        assert e.errnum == errno.EIO, e\nprint(n)",
        );
        assert_eq!(
            out.trim(),
            "9",
            "reads that nest state up to the limit (1 + 9 * 100 levels)"
        );
        // A 2,000-deep temporary is built and dropped inside one call.
        py(&s.uri, "assert h.pread(512, 512) == bytes(512)");
    });
    assert!(worst < 2.0, "other connection waited {worst} s");
    assert!(
        rss_mib(s.child.id()) < 300,
        "RSS {} MiB",
        rss_mib(s.child.id())
    );
    alive(&s);
    let (_, err) = s.stop();
    assert!(
        err.contains("deep.rhai:5:35: pread: storing .x: the value nests arrays/maps more than 1000 levels deep (the client gets EIO)"),
        "{err}"
    );
    assert!(!err.contains("overflow"), "{err}");
}

/// Case 1, a deep value returned by a call: refused (EIO) and dropped
/// without recursion on the caller's small stack.
#[test]
fn a_deep_result_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "ret.rhai",
        "fn get_size(h) { 1048576 }\nfn pread(h, c, o) { blob(c) }\n\
         fn extents(h, c, o, f) { let a = [[0, c, 0]]; for i in 0..1500 { a = [a]; } a }\n",
    );
    let s = Server::start(&[&p]);
    let out = s.nbdsh_output(
        &["--base-allocation"],
        "import errno\ntry:\n    h.block_status(512, 0, lambda *a: 0)\n    assert False\nexcept nbd.Error as e:\n    assert e.errnum == errno.EIO, e\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alive(&s);
    let (_, err) = s.stop();
    assert!(
        err.contains("ret.rhai: extents: the result: the value nests arrays/maps more than 1000 levels deep (the client gets EIO)"),
        "{err}"
    );
}

/// Case 6: an import that resolves (through a symlinked file or
/// directory) outside the script's directory is refused, at start and on
/// reload (the old version keeps serving).
#[test]
fn imports_through_symlinks_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("in");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(inside.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.rhai"), "fn n() { 42 }\n").unwrap();
    std::fs::write(inside.join("sub/fine.rhai"), "fn n() { 7 }\n").unwrap();
    std::os::unix::fs::symlink("../outside/secret.rhai", inside.join("link.rhai")).unwrap();
    std::os::unix::fs::symlink("../outside", inside.join("dirlink")).unwrap();
    let main = |m: &str, size: u32| {
        format!(
            "import \"{m}\" as s;\nfn get_size(h) {{ {size} }}\nfn pread(h, c, o) {{ blob(c) }}\n"
        )
    };
    let real_out = std::fs::canonicalize(&outside).unwrap();
    for m in ["link", "dirlink/secret"] {
        let p = script(&inside, "main.rhai", &main(m, 512));
        let err = Server::try_start(&["--no-watch", &p])
            .err()
            .expect("refused");
        assert!(
            err.contains(&format!(
                "Module not found: {m} (it resolves to {}/secret.rhai, outside the script's directory",
            real_out.display())),
            "{err}"
        );
    }
    // Inside (a subdirectory) is fine; a reload to a symlinked import is
    // refused and the old version (size 4096) keeps serving.
    let p = script(&inside, "main.rhai", &main("sub/fine", 4096));
    let s = Server::start(&[&p]);
    assert_eq!(run_ok("nbdinfo", &["--size", &s.uri]).trim(), "4096");
    std::fs::write(&p, main("link", 8192)).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(run_ok("nbdinfo", &["--size", &s.uri]).trim(), "4096");
    let (_, err) = s.stop();
    assert!(err.contains("outside the script's directory"), "{err}");
    assert!(err.contains("this version is refused"), "{err}");
}

/// Case 2: a per-script memory budget. State that grows by 20 MB Blobs,
/// one huge `pad`, and Blobs built by `+` (not checked beforehand: the
/// next operation stops the call) all fail with ENOMEM; RSS stays near
/// the budget.
#[test]
fn memory_budget_holds() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "mem.rhai",
        "fn config(p) { #{ n: 0 } }\nfn thread_model() { \"parallel\" }\nfn get_size(h) { 1048576 }\n\
         fn pread(h, c, o) {\n  if o == 0 { h.n += 1; h[\"k\" + h.n] = blob(20000000); }\n\
         \x20 if o == 512 { let a = []; a.pad(60000000, 0); }\n\
         \x20 if o == 1024 { let x = blob(1000000); for i in 0..100 { h[\"t\" + i] = x + x; } }\n  blob(c)\n}\n",
    );
    let s = Server::start(&["--script-memory", "64M", &p]);
    // The budget is the script's, shared by its connections: while this
    // client holds it full, the other one's reads may get ENOMEM, promptly.
    let worst = served_meanwhile_or(&s.uri, 4096, Some("ENOMEM"), || {
        let out = py(
            &s.uri,
            "n = 0\nwhile True:\n    try:\n        h.pread(512, 0); n += 1\n    except nbd.Error as e:\n        assert e.errnum == errno.ENOMEM, e\n        break\nprint(n)\n\
             for off in (512, 1024):\n    try:\n        h.pread(512, off); assert False\n    except nbd.Error as e:\n        assert e.errnum == errno.ENOMEM, e\n",
        );
        // 3 x 20 MB fit in 64 MiB; the 4th is refused before it is allocated.
        assert_eq!(out.trim(), "3");
    });
    assert!(worst < 2.0, "other connection waited {worst} s");
    let rss = rss_mib(s.child.id());
    assert!(rss < 64 + 100, "RSS {rss} MiB with a 64 MiB budget");
    alive(&s);
    let (_, err) = s.stop();
    for want in [
        "mem.rhai:5:40: pread: blob: 20000000 more bytes would take the script over its memory budget: it holds ",
        " MiB of 64 MiB (--script-memory) (the client gets ENOMEM)",
        "mem.rhai:6:31: pread: pad: 960000000 more bytes would take the script over its memory budget",
        "pread: stopped: over the script's memory budget: it holds",
    ] {
        assert!(err.contains(want), "{want:?} in\n{err}");
    }
}

/// Case 1b: every call's arguments (the handle's copy, a `pwrite`
/// buffer's box) are freed inside the call, so they are counted there too:
/// 30,000 writes leave a 1 MiB budget as it was, and a 1.5 MB temporary is
/// still refused (it once drifted down about 48 bytes a call until it let
/// such a temporary through).
#[test]
fn many_calls_leave_the_budget_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "drift.rhai",
        "fn thread_model() { \"parallel\" }\nfn open(readonly) { #{ n: 0 } }\nfn get_size(h) { 1048576 }\n\
         fn pread(h, c, o) {\n  if o == 0 { let a = blob(1500000); }\n  blob(c)\n}\nfn pwrite(h, buf, o) { }\n",
    );
    let s = Server::start(&["--script-memory", "1M", &p]);
    let out = py(
        &s.uri,
        "def probe():\n    try:\n        h.pread(512, 0); return 'allowed'\n    except nbd.Error as e:\n        assert e.errnum == errno.ENOMEM, e\n        return 'ENOMEM'\n\
         print(probe())\nbuf = bytes(512)\nfor i in range(30000):\n    h.pwrite(buf, 512 * (1 + i % 1000))\nprint(probe())\n",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["ENOMEM", "ENOMEM"]
    );
    alive(&s);
    let (_, err) = s.stop();
    let want = "drift.rhai:5:23: pread: blob: 1500000 more bytes would take the script over its memory budget";
    assert_eq!(err.matches(want).count(), 2, "{want:?} twice in\n{err}");
}

/// Case 1c: the server reuses a read reply's buffer for the next read, and
/// a filter's `next.pread` may get it: it is charged to the script as if
/// allocated, so a filter keeping 64 KiB Blobs under a 4 MiB budget is
/// stopped with ENOMEM after 3,000 reads it did not keep (it once kept
/// 1,023, 64 MiB, those reads having taken their buffers off its budget).
#[test]
fn reused_read_buffers_count_in_a_filters_budget() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "keep.rhai",
        "fn config(p) { #{ keep: [] } }\nfn open(next, state, readonly) { state }\n\
         fn pread(next, h, c, o, f) {\n  if o == 65536 { h.keep.push(next.pread(c, 0, f)); }\n  next.pread(c, o, f)\n}\n",
    );
    let filter = format!("--filter={p}");
    let s = Server::start(&["--script-memory", "4M", &filter, "memory", "16M"]);
    let out = py(
        &s.uri,
        "for i in range(3000):\n    h.pread(65536, 0)\nkept = 0\n\
         try:\n    while kept < 500:\n        h.pread(65536, 65536); kept += 1\n\
         except nbd.Error as e:\n    assert e.errnum == errno.ENOMEM, e\nprint(kept)\n",
    );
    let kept: usize = out.trim().parse().unwrap();
    assert!(
        (8..64).contains(&kept),
        "kept {kept} Blobs of 64 KiB under 4 MiB"
    );
    alive(&s);
    let (_, err) = s.stop();
    let want = "pread: stopped: over the script's memory budget";
    assert!(err.contains(want), "{want:?} in\n{err}");
}

/// Case 2, a map filled one key at a time (`m["k" + i] = i`, 2,000,000
/// keys): Rhai checks only the new entry there, so the memory budget
/// bounds it (ENOMEM, logged at the callback), another connection is
/// served meanwhile, and the server keeps serving.
#[test]
fn a_map_filled_key_by_key_is_bounded_by_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "map.rhai",
        "fn thread_model() { \"parallel\" }\nfn get_size(h) { 1048576 }\nfn pread(h, c, o) {\n\
         \x20 if o == 0 { let m = #{}; for i in 0..2000000 { m[\"k\" + i] = i; } }\n  blob(c)\n}\n",
    );
    let s = Server::start(&["--script-memory", "16M", &p]);
    let worst = served_meanwhile(&s.uri, 4096, || {
        py(
            &s.uri,
            "try:\n    h.pread(512, 0); assert False\nexcept nbd.Error as e:\n    assert e.errnum == errno.ENOMEM, e\nassert h.pread(512, 512) == bytes(512)\n",
        );
    });
    assert!(worst < 2.0, "other connection waited {worst} s");
    alive(&s);
    let (_, err) = s.stop();
    let want = "map.rhai:3:1: pread: stopped: over the script's memory budget: it holds ";
    let line = err
        .lines()
        .find(|l| l.contains(want))
        .unwrap_or_else(|| panic!("{want:?} in\n{err}"));
    assert!(
        line.ends_with(" MiB of 16 MiB (--script-memory) (the client gets ENOMEM)"),
        "{line}"
    );
}

/// Case 3: `--script-timeout` holds inside long native operations
/// (`reverse`, `fill` on big values, thousands of times in one call).
#[test]
fn time_budget_holds_inside_bulk_functions() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "slow.rhai",
        "fn thread_model() { \"parallel\" }\nfn get_size(h) { 1048576 }\nfn pread(h, c, o) {\n\
         \x20 if o == 0 { let a = []; a.pad(2000000, 1); for i in 0..3000 { a.reverse(); } }\n\
         \x20 if o == 512 { let b = blob(64000000); for i in 0..3000 { b.fill(0); } }\n  blob(c)\n}\n",
    );
    let s = Server::start(&["--script-timeout", "1000", &p]);
    for off in [0, 512] {
        let worst = served_meanwhile(&s.uri, 4096, || {
            let out = py(
                &s.uri,
                &format!("t = time.time()\ntry:\n    h.pread(512, {off}); assert False\nexcept nbd.Error as e:\n    assert e.errnum == errno.EIO, e\nprint(time.time() - t)"),
            );
            let took: f64 = out.trim().parse().unwrap();
            // Twice the budget (or budget + 1 s), with room for a loaded machine.
            assert!(took < 2.5, "the call ran {took} s with a 1 s budget");
        });
        assert!(worst < 1.0, "other connection waited {worst} s");
    }
    assert!(rss_mib(s.child.id()) < 400);
    alive(&s);
    let (_, err) = s.stop();
    assert_eq!(
        err.matches("slow.rhai:3:1: pread: stopped: the call ran past its time limit (--script-timeout) (the client gets EIO)").count(),
        2,
        "{err}"
    );
}
