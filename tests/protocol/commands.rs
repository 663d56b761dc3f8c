//! Command flags and refusals: FUA / CACHE / FAST_ZERO on the `file`
//! plugin, read-only answers and unadvertised commands, compared with
//! nbdkit.

use super::*;

#[test]
fn file_fua_and_cache_native_fast_zero_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let log = dir.path().join("log.txt");
    let s = Server::start(&[
        "file",
        img.to_str().unwrap(),
        "--filter",
        "log",
        &format!("logfile={}", log.display()),
    ]);
    let out = s.nbdsh(
        r#"
assert h.can_fua() and h.can_cache() and h.can_zero()
assert not h.can_fast_zero()      # file: no fast zero, so it is not advertised
h.pwrite(b"A" * 4096, 0, nbd.CMD_FLAG_FUA)
h.pwrite(b"B" * 4096, 4096)
h.cache(65536, 0)
h.set_strict_mode(0)
try:
    h.zero(4096, 8192, nbd.CMD_FLAG_FAST_ZERO)
    raise SystemExit("FAST_ZERO accepted without being advertised")
except nbd.Error as e:
    assert e.errno == "EINVAL", e.errno
assert h.pread(4096, 8192) == b"\x5a" * 4096   # data unchanged
h.zero(4096, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8192) == bytes(4096)
print("ok")
"#,
    );
    assert_eq!(out.trim(), "ok");
    // The server flushes a connection still open at SIGTERM: wait until it
    // has seen this one end, so any Flush in the log came from a request.
    wait_file_for(&log, "Disconnect transactions=", 20);
    let (_, _) = s.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("return")).collect();
    let pos = |pat: &str| {
        lines
            .iter()
            .position(|l| l.contains(pat))
            .unwrap_or_else(|| panic!("{pat} not in log:\n{text}"))
    };
    // FUA is native in the file plugin (fdatasync after the write, as
    // nbdkit): the flag reaches the plugin and no flush stands in for it.
    assert!(text.contains(" fua=2 "), "{text}");
    let w1 = pos("Write id=1 offset=0x0 count=0x1000 fua=1");
    assert!(!lines[w1 + 1].contains("Flush"), "{text}");
    pos("offset=0x1000 count=0x1000 fua=0");
    // CACHE is native too (posix_fadvise WILLNEED): no reads.
    pos("Cache id=3 offset=0x0 count=0x10000");
    assert!(!text.contains("Read id=3"), "{text}");
    let z = pos("Zero");
    assert!(lines[z].contains("fua=1"), "{text}");
    assert!(!text.contains("Flush"), "{text}");
    assert!(
        !text.contains("fast=1"),
        "fast zero reached the plugin: {text}"
    );
}

#[test]
fn fast_zero_that_cannot_be_fast_is_enotsup_like_nbdkit() {
    // The blocksize filter advertises fast zero (memory has it) but an
    // unaligned one needs read-modify-write: ENOTSUP, data unchanged.
    let script = r#"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.can_fast_zero()
h.pwrite(b"\x77" * 8192, 0)
try:
    h.zero(512, 512, nbd.CMD_FLAG_FAST_ZERO); print("ok")
except nbd.Error as e:
    print(e.errno)
print(h.pread(8192, 0) == b"\x77" * 8192)
h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO)
print(h.pread(8192, 0) == b"\x77" * 4096 + bytes(4096))
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fz.py");
    std::fs::write(&p, script).unwrap();
    let run_cmd = format!("python3 {} \"$uri\"", p.display());
    let theirs = run_ok(
        "nbdkit",
        &[
            "-U",
            "-",
            "--filter=blocksize",
            "memory",
            "1M",
            "minblock=4096",
            "--run",
            &run_cmd,
        ],
    );
    let ours = nbdscript()
        .env("PATH", sys_path())
        .args([
            "memory",
            "1M",
            "--filter",
            "blocksize",
            "minblock=4096",
            "--run",
            &run_cmd,
        ])
        .output()
        .unwrap();
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert_eq!(theirs, "ENOTSUP\nTrue\nTrue\n");
    assert_eq!(ours, theirs);
}

#[test]
fn read_only_answers_match_nbdkit() {
    let script = r#"
import nbd, sys
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1]); h.set_strict_mode(0)
print([getattr(h, f)() for f in "can_flush can_fua can_trim can_zero can_fast_zero can_df can_multi_conn can_cache is_read_only".split()])
for nm, f in (("write", lambda: h.pwrite(b"x", 0)), ("write fua", lambda: h.pwrite(b"x", 0, nbd.CMD_FLAG_FUA)),
              ("zero", lambda: h.zero(1, 0)), ("zero fast", lambda: h.zero(1, 0, nbd.CMD_FLAG_FAST_ZERO)),
              ("trim", lambda: h.trim(1, 0)), ("flush", lambda: h.flush()), ("cache", lambda: h.cache(1, 0)),
              ("read", lambda: h.pread(1, 0)), ("read fua", lambda: h.pread(1, 0, nbd.CMD_FLAG_FUA)),
              ("write past", lambda: h.pwrite(b"x", 1 << 20)), ("trim past", lambda: h.trim(1, 1 << 20)),
              ("read past", lambda: h.pread(1, 1 << 20))):
    try: f(); print(nm, "ok")
    except nbd.Error as e: print(nm, e.errno)
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ro.py");
    std::fs::write(&p, script).unwrap();
    let run_cmd = format!("python3 {} \"$uri\"", p.display());
    let theirs = run_ok(
        "nbdkit",
        &["-r", "-U", "-", "memory", "1M", "--run", &run_cmd],
    );
    let ours = nbdscript()
        .env("PATH", sys_path())
        .args(["-r", "memory", "1M", "--run", &run_cmd])
        .output()
        .unwrap();
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert!(
        theirs.contains("zero fast EPERM") && theirs.contains("read fua EINVAL"),
        "{theirs}"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn commands_the_export_did_not_advertise_are_einval_like_nbdkit() {
    // A script with pread and pwrite only (no FLUSH, TRIM, CACHE, FUA)
    // under nozero (no WRITE_ZEROES). Each such request sent anyway is
    // EINVAL (nbdkit's validate_request) and never reaches the plugin.
    let dir = tempfile::tempdir().unwrap();
    let path = script(
        dir.path(),
        "bare.rhai",
        r#"
fn config(params) { #{ disk: disk("1M", "sparse") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset) { h.disk.pwrite(take(buf), offset) }
"#,
    );
    let log = dir.path().join("log.txt");
    let s = Server::start(&[
        "-v",
        &path,
        "--filter",
        "nozero",
        "--filter",
        "log",
        &format!("logfile={}", log.display()),
    ]);
    let out = s.nbdsh(
        r#"
flags = [getattr(h, f)() for f in "can_flush can_trim can_zero can_fast_zero can_cache can_fua is_read_only".split()]
assert flags == [False] * 7, flags
h.pwrite(b"\x33" * 4096, 0)
h.set_strict_mode(0)
for nm, f in (("trim", lambda: h.trim(4096, 0)), ("zero", lambda: h.zero(4096, 0)),
              ("zero fast", lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)),
              ("cache", lambda: h.cache(4096, 0)), ("flush", lambda: h.flush()),
              ("write fua", lambda: h.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA))):
    try: f(); print(nm, "ok")
    except nbd.Error as e: print(nm, e.errno)
assert h.pread(4096, 0) == b"\x33" * 4096
"#,
    );
    assert_eq!(
        out,
        "trim EINVAL\nzero EINVAL\nzero fast EINVAL\ncache EINVAL\nflush EINVAL\nwrite fua EINVAL\n"
    );
    let (_, err) = s.stop();
    for line in [
        "request failed: EINVAL: NBD_CMD_TRIM: trim operation not supported",
        "request failed: EINVAL: NBD_CMD_WRITE_ZEROES: write zeroes operation not supported",
        "request failed: EINVAL: NBD_CMD_CACHE: cache operation not supported",
        "request failed: EINVAL: NBD_CMD_FLUSH: flush operation not supported",
    ] {
        assert!(err.contains(line), "{line:?} not in the log:\n{err}");
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    for verb in ["Trim", "Zero", "Cache", "Flush"] {
        assert!(
            !calls.contains(&format!("{verb} id=")),
            "{verb} reached the plugin:\n{calls}"
        );
    }
    let writes = calls.lines().filter(|l| l.contains(" Write id=")).count();
    assert_eq!(writes, 1, "the FUA write reached the plugin:\n{calls}");
}
