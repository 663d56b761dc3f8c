//! The `log` filter: the lines it writes and `logscript=` run once per
//! line like nbdkit's.

use super::*;

#[test]
fn log_filter_writes_lines() {
    let d = scratch();
    let log = d.path().join("nbd.log");
    let lf = format!("logfile={}", log.display());
    let s = Server::start(&["--filter=log", "memory", "size=1M", &lf]);
    s.nbdsh("h.pwrite(b\"x\" * 512, 4096)\nh.pread(512, 4096)\nh.flush()\nh.trim(4096, 65536)\nh.zero(512, 0)");
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    for want in [
        "Ready thread_model=3",
        "Preconnect id=1 readonly=0 ...",
        "...Preconnect id=1 return=0",
        "connection=1 Connect export=\"\" tls=0 size=0x100000",
        "connection=1 Write id=1 offset=0x1000 count=0x200 fua=0 ...",
        "connection=1 ...Write id=1 return=0",
        "connection=1 Read id=2 offset=0x1000 count=0x200 ...",
        "connection=1 Flush id=3 ...",
        "connection=1 Trim id=4 offset=0x10000 count=0x1000 fua=0 ...",
        "connection=1 Zero id=5 offset=0x0 count=0x200 trim=1 fua=0 fast=0 ...",
        "connection=1 Disconnect transactions=5",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// `logscript=`'s lines for reads and writes, as nbdkit's
/// test-log-script.sh checks them.
fn logscript_lines(prog: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let script = format!(
        "logscript=if [ \"$act\" = Read -o \"$act\" = Write ]; then \
         echo $act $type $connection $id $offset $count $return ${{extents[*]}} >> {}; fi",
        out.display()
    );
    let o = run(
        prog,
        &[
            "-U",
            "-",
            "--filter=log",
            "memory",
            "size=1K",
            &script,
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pread(512, 0)' -c 'h.pwrite(bytearray(512), 0)' \
             -c 'h.pwrite(bytearray(512), 512)' -c 'h.pread(512, 512)'",
        ],
    );
    assert!(
        o.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn log_logscript_runs_per_line_like_nbdkit() {
    let ours = logscript_lines(bin());
    assert!(
        ours.starts_with("Read ENTER 1 1 0x0 0x200\nRead LEAVE 1 1 0\n"),
        "{ours}"
    );
    assert!(
        ours.contains("Write ENTER 1 3 0x200 0x200\nWrite LEAVE 1 3 0\n"),
        "{ours}"
    );
    assert_eq!(ours.lines().count(), 8, "{ours}");
    // nbdkit's lines are the same, though its order varies from run to run.
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&ours), sorted(&logscript_lines("nbdkit")));
}

#[test]
fn log_shows_only_client_requests_when_stopped_with_a_client_connected() {
    // SIGTERM with a connection open: the server still flushes its data
    // (the plugin's flush runs) but the log, as nbdkit's, shows only what
    // the client sent.
    let d = scratch();
    let log = d.path().join("nbd.log");
    let lf = format!("logfile={}", log.display());
    let plugin = script(
        d.path(),
        "flushes.rhai",
        "fn config(p) { #{ disk: disk(\"1M\") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset, flags) { h.disk.pwrite(buf, offset) }
fn flush(h, flags) { print(\"plugin flush\") }
",
    );
    let s = Server::start(&["--filter=log", &plugin, &lf]);
    let mut c = Client::start(
        &s.uri,
        "import sys\nfor l in sys.stdin:\n    h.pwrite(b\"x\" * 512, 0); print(\"ok\", flush=True)\n",
    );
    c.step("write");
    wait_file_for(&log, "connection=1 ...Write id=1 return=0", 20);
    let (code, err) = s.stop();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("plugin flush").count(), 1, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Flush"), "{text}");
    assert!(
        text.contains("connection=1 Disconnect transactions=1"),
        "{text}"
    );
}

/// A client's FUA write, FUA zero (emulated by a write) and FUA trim,
/// then a plain write and a flush, under `--filter=log`.
const FUA_REQUESTS: &str = "nbdsh -u \"$uri\" -c 'h.pwrite(b\"x\" * 512, 0, nbd.CMD_FLAG_FUA)' \
     -c 'h.zero(4096, 8192, nbd.CMD_FLAG_FUA)' -c 'h.trim(4096, 65536, nbd.CMD_FLAG_FUA)' \
     -c 'h.pwrite(b\"y\" * 512, 512)' -c 'h.flush()'";

/// The log's request lines without their timestamps.
fn request_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .filter(|l| l.contains(" connection="))
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_string())
        .collect()
}

/// A plugin with flush but no native FUA (nbdkit's NBDKIT_FUA_EMULATE),
/// that prints its calls: ours a script, nbdkit's an eval plugin.
const EMULATED_FUA_PLUGIN: &str = "fn config(p) { #{ disk: disk(\"1M\") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) { h.disk.pread(count, offset) }
fn fua(flags) { if (flags & nbd::FUA) != 0 { \"fua\" } else { \"\" } }
fn pwrite(h, buf, offset, flags) { print(`call pwrite ${offset} ${fua(flags)}`); h.disk.pwrite(buf, offset) }
fn trim(h, count, offset, flags) { print(`call trim ${offset} ${fua(flags)}`) }
fn flush(h, flags) { print(\"call flush\") }
";

/// Log lines and plugin calls: `(ours, nbdkit's)` for the request lines
/// of `--filter=log` with `filters` around it (ARGS are the filters'
/// parameters), and `(ours, nbdkit's)` for the calls the plugin got, for
/// the nbdsh command `requests`.
type Twin = (Vec<String>, Vec<String>);
fn emulated_fua_logs(filters: &[&str], args: &[&str], requests: &str) -> (Twin, Twin) {
    let d = scratch();
    let plugin = script(d.path(), "emulated-fua.rhai", EMULATED_FUA_PLUGIN);
    let ours_log = d.path().join("ours.log");
    let ours_lf = format!("logfile={}", ours_log.display());
    let mut a: Vec<&str> = vec!["-U", "-"];
    a.extend(filters);
    a.extend([plugin.as_str(), ours_lf.as_str()]);
    a.extend(args);
    a.extend(["--run", requests]);
    let o = run(bin(), &a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let ours_calls = err
        .lines()
        .filter_map(|l| l.split_once("call ").map(|(_, c)| c.trim().to_string()))
        .collect();

    let calls = d.path().join("calls");
    let c = calls.display();
    let theirs_log = d.path().join("theirs.log");
    let theirs_lf = format!("logfile={}", theirs_log.display());
    let pwrite = format!("pwrite=echo pwrite $4 $5 >> {c}; cat >/dev/null");
    let trim = format!("trim=echo trim $4 $5 >> {c}");
    let flush = format!("flush=echo flush >> {c}");
    let mut a: Vec<&str> = vec!["-U", "-"];
    a.extend(filters);
    a.extend([
        "eval",
        "get_size=echo 1M",
        "pread=dd if=/dev/zero bs=$3 count=1 status=none",
        &pwrite,
        &trim,
        &flush,
        "can_write=exit 0",
        "can_trim=exit 0",
        "can_flush=exit 0",
        "can_fua=echo emulate",
        &theirs_lf,
    ]);
    a.extend(args);
    a.extend(["--run", requests]);
    let o = run("nbdkit", &a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs_calls = std::fs::read_to_string(&calls).unwrap();
    let theirs_calls = theirs_calls.lines().map(|l| l.trim().to_string()).collect();
    (
        (request_lines(&ours_log), request_lines(&theirs_log)),
        (ours_calls, theirs_calls),
    )
}

#[test]
fn log_sees_emulated_fua_as_nbdkit_one_write_and_no_flush() {
    // The emulation is in the plugin layer, below every filter, so the log
    // shows each request once with fua=1 and no Flush, line for line as
    // nbdkit's for an eval plugin with the same capabilities; and the
    // plugin still gets its flush after each FUA request, in the same
    // order as nbdkit's plugin gets it.
    let ((ours, theirs), (ours_calls, theirs_calls)) =
        emulated_fua_logs(&["--filter=log"], &[], FUA_REQUESTS);
    for want in [
        "connection=1 Write id=1 offset=0x0 count=0x200 fua=1 ...",
        "connection=1 Write id=2 offset=0x2000 count=0x1000 fua=1 ...",
        "connection=1 Trim id=3 offset=0x10000 count=0x1000 fua=1 ...",
        "connection=1 Flush id=5 ...",
    ] {
        assert!(
            ours.iter().any(|l| l == want),
            "{want:?} missing: {ours:#?}"
        );
    }
    assert_eq!(ours.iter().filter(|l| l.contains(" Flush ")).count(), 1);
    assert_eq!(ours, theirs);
    // Durable: the plugin flushed after every FUA request.
    let want = [
        "pwrite 0",
        "flush",
        "pwrite 8192",
        "flush",
        "trim 65536",
        "flush",
        "pwrite 512",
        "flush",
    ];
    assert_eq!(ours_calls, want);
    assert_eq!(theirs_calls, want);
}

#[test]
fn blocksize_over_emulated_fua_flushes_once_after_the_pieces_as_nbdkit() {
    // blocksize splits an 8 KiB FUA write at maxdata=4k: with FUA emulated
    // below it sends the pieces without FUA and one flush (nbdkit's
    // blocksize filter), not a flush per piece.
    let req = "nbdsh -u \"$uri\" -c 'h.pwrite(b\"x\" * 8192, 0, nbd.CMD_FLAG_FUA)'";
    let ((ours, theirs), (ours_calls, theirs_calls)) = emulated_fua_logs(
        &["--filter=blocksize", "--filter=log"],
        &["maxdata=4k"],
        req,
    );
    for want in [
        "connection=1 Write id=1 offset=0x0 count=0x1000 fua=0 ...",
        "connection=1 Write id=2 offset=0x1000 count=0x1000 fua=0 ...",
        "connection=1 Flush id=3 ...",
    ] {
        assert!(
            ours.iter().any(|l| l == want),
            "{want:?} missing: {ours:#?}"
        );
    }
    assert_eq!(ours, theirs);
    assert_eq!(ours_calls, ["pwrite 0", "pwrite 4096", "flush"]);
    assert_eq!(ours_calls, theirs_calls);
}

#[test]
fn fua_filter_emulate_flushes_after_the_write_as_nbdkit() {
    // fuamode=emulate: the fua filter itself turns a FUA write into a
    // write without FUA and a flush, so the log below it shows both, as
    // nbdkit's fua filter does, and the plugin flushes.
    let req = "nbdsh -u \"$uri\" -c 'h.pwrite(b\"x\" * 512, 0, nbd.CMD_FLAG_FUA)'";
    let ((ours, theirs), (ours_calls, theirs_calls)) =
        emulated_fua_logs(&["--filter=fua", "--filter=log"], &["fuamode=emulate"], req);
    for want in [
        "connection=1 Write id=1 offset=0x0 count=0x200 fua=0 ...",
        "connection=1 Flush id=2 ...",
    ] {
        assert!(
            ours.iter().any(|l| l == want),
            "{want:?} missing: {ours:#?}"
        );
    }
    assert_eq!(ours, theirs);
    assert_eq!(ours_calls, ["pwrite 0", "flush"]);
    assert_eq!(ours_calls, theirs_calls);
}
