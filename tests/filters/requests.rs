//! Filters that act on requests: cow (leaving the file alone), error
//! injection, delay, readonly, blocksize and fua against nbdkit, and
//! the order of a stack.

use super::*;

#[test]
fn cow_matches_nbdkit_and_leaves_file_alone() {
    let d = scratch();
    let orig = noise(1 << 20, 8);
    let img = put(d.path(), "base.img", &orig);
    std::fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let script = "import hashlib
h.pwrite(b\"A\" * 100000, 12345)
h.pwrite(b\"B\" * 3, 65535)
h.trim(131072, 262144)
h.pwrite(b\"C\" * 10, 1048566)
data = h.pread(1048576, 0)
print(hashlib.sha256(data).hexdigest())
print(h.pread(4, 65534))";
    let (k, o) = both_run(&["--filter=cow", "file", &img], &nbdsh_cmd(script));
    assert_eq!(k, o, "nbdkit vs nbdscript after the same writes");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        orig,
        "the file below was written"
    );
    // All connections share the overlay.
    let s = Server::start(&["--filter=cow", "file", &img]);
    s.nbdsh("h.pwrite(b\"shared\", 7)\nh.zero(70000, 500001)");
    let out = s.nbdsh("print(h.pread(6, 7))\nassert h.pread(70000, 500001) == bytes(70000)");
    assert!(out.contains("shared"), "{out}");
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"is_read_only\": false"), "{info}");
    drop(s);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        orig,
        "the file below was written"
    );
}

#[test]
fn error_filter_injects() {
    let script = "def errno(f):
    try:
        f()
        return \"ok\"
    except nbd.Error as e:
        return e.errnum
print(errno(lambda: h.pread(512, 0)))
print(errno(lambda: h.pwrite(b\"x\" * 512, 0)))
print(errno(lambda: h.zero(512, 0)))
print(errno(lambda: h.trim(512, 0)))";
    let args = [
        "--filter=error",
        "memory",
        "size=1M",
        "error=ENOSPC",
        "error-pwrite-rate=100%",
        "error-zero-rate=1",
    ];
    let (k, o) = both_run(&args, &nbdsh_cmd(script));
    assert_eq!(k, o);
    assert_eq!(o.lines().collect::<Vec<_>>(), vec!["ok", "28", "28", "ok"]);
    // error-file: errors only while the trigger exists.
    let d = scratch();
    let trig = d.path().join("trigger");
    let tf = format!("error-file={}", trig.display());
    let s = Server::start(&["--filter=error", "memory", "size=1M", "error-rate=1", &tf]);
    s.nbdsh("h.pread(512, 0)");
    std::fs::write(&trig, b"").unwrap();
    let out = s.nbdsh(
        "try:
    h.pread(512, 0)
    print(\"no error\")
except nbd.Error as e:
    print(e.errnum)",
    );
    assert_eq!(out.trim(), "5");
    // A bad errno is a usage error.
    let out = run(
        bin(),
        &[
            "--filter=error",
            "memory",
            "size=1M",
            "error=EBADF",
            "--run",
            "true",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EBADF"));
}

#[test]
fn delay_filter_delays() {
    let s = Server::start(&["--filter=delay", "memory", "size=1M", "delay-read=150ms"]);
    let out = s.nbdsh(
        "import time
t = time.monotonic()
for i in range(4):
    h.pwrite(b\"x\" * 512, i * 512)
w = time.monotonic() - t
t = time.monotonic()
for i in range(4):
    h.pread(512, i * 512)
r = time.monotonic() - t
print(w, r)",
    );
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(v[1] >= 0.6, "4 reads delayed 150ms each took {}s", v[1]);
    assert!(v[0] < 0.3, "writes are not delayed, but took {}s", v[0]);
}

#[test]
fn readonly_filter_refuses_writes() {
    let s = Server::start(&["--filter=readonly", "memory", "size=1M"]);
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"is_read_only\": true"), "{info}");
    let out = s.nbdsh(
        "try:
    h.pwrite(b\"x\", 0)
except nbd.Error as e:
    print(e.errnum)
print(h.pread(4, 0))",
    );
    assert_eq!(out.lines().next(), Some("1"), "EPERM expected: {out}");
}

#[test]
fn blocksize_filter_matches_nbdkit() {
    let d = scratch();
    let img = put(d.path(), "bs.img", &noise(300_000, 9));
    same_bytes(&[
        "--filter=blocksize",
        "file",
        &img,
        "minblock=4k",
        "maxdata=8k",
    ]);
    let script = "import hashlib
h.pwrite(b\"Q\" * 10007, 3)
h.zero(30001, 40001)
h.trim(100, 5)
h.pwrite(b\"R\" * 5, 8190)
print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest())
print(h.get_size())";
    let args = [
        "--filter=blocksize",
        "file",
        &img,
        "minblock=4k",
        "maxdata=8k",
        "maxlen=16k",
    ];
    let (k, o) = both_run(&args, &nbdsh_cmd(script));
    assert_eq!(k, o);
}

#[test]
fn fua_filter_modes_match_nbdkit() {
    let flags = "nbdinfo --json \"$uri\" | grep -E \"can_(fua|flush)\" | sort";
    // (nbdkit 1.32 rejects fuamode=none although its manual lists it.)
    for mode in ["emulate", "native", "force", "pass", "discard"] {
        let m = format!("fuamode={mode}");
        let (k, o) = both_run(&["--filter=fua", "memory", "size=1M", &m], flags);
        assert_eq!(k, o, "fuamode={mode}");
    }
    let s = Server::start(&["--filter=fua", "memory", "size=1M", "fuamode=none"]);
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"can_fua\": false"), "{info}");
    let s = Server::start(&["--filter=fua", "memory", "size=1M", "fuamode=force"]);
    s.nbdsh("h.pwrite(b\"abc\", 0, nbd.CMD_FLAG_FUA)\nh.flush()\nassert h.pread(3, 0) == b\"abc\"");
}

#[test]
fn filters_stack_in_order() {
    // offset (nearest the client) over truncate over pattern.
    let args = [
        "--filter=offset",
        "--filter=truncate",
        "pattern",
        "size=1000",
        "truncate=4096",
        "offset=992",
        "range=16",
    ];
    let b = same_bytes(&args);
    assert_eq!(&b[..8], &992u64.to_be_bytes());
    assert_eq!(&b[8..], &[0u8; 8]);
}
