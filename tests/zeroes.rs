//! How write zeroes and extents are shown to clients by the nozero and
//! noextents filters, compared with nbdkit's log filter lines and
//! nbdinfo's map; and fast zero, advertised and done (or refused at once)
//! as nbdkit's plugins do it.

use crate::common::*;

/// Run `nbdsh` steps against `PROG -U - ARGS logfile=LOG`; the log's
/// lines without timestamps (and nbdkit's `Fork`).
fn log_of(prog: &str, args: &[&str], py: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let lf = format!("logfile={}", log.display());
    let mut a = vec!["-U", "-"];
    a.extend(args);
    a.push(&lf);
    let cmd = format!("nbdsh -u \"$uri\" -c '{py}'");
    a.extend(["--run", &cmd]);
    let out = run(prog, &a);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .filter(|l| *l != "Fork")
        .map(|l| {
            // The memory plugins' block sizes differ; not the filters'.
            let w: Vec<&str> = l
                .split(' ')
                .filter(|w| {
                    !w.starts_with("minsize=")
                        && !w.starts_with("prefsize=")
                        && !w.starts_with("maxsize=")
                })
                .collect();
            format!("{}\n", w.join(" "))
        })
        .collect()
}

#[test]
fn nozero_hides_write_zeroes_as_nbdkit() {
    let args = ["--filter=log", "--filter=nozero", "memory", "1M"];
    let py = "print(h.can_zero(), h.can_fast_zero())";
    let ours = log_of(bin(), &args, py);
    assert!(
        ours.contains("connection=1 Connect export=\"\" tls=0 size=0x100000 write=1 flush=1 rotational=0 trim=1 zero=0 fua=2 extents=1 cache=2 fast_zero=0\n"),
        "{ours}"
    );
    assert_eq!(ours, log_of("nbdkit", &args, py));
    let s = Server::start(&["--filter=nozero", "memory", "1M"]);
    assert_eq!(
        s.nbdsh("print(h.can_zero(), h.can_fast_zero())"),
        "False False\n"
    );
}

#[test]
fn nozero_emulate_writes_and_notrim_drops_the_trim_flag_as_nbdkit() {
    // emulate: the layer below sees writes of zeros, never a zero.
    let args = [
        "--filter=nozero",
        "--filter=log",
        "memory",
        "1M",
        "zeromode=emulate",
    ];
    let py = "h.pwrite(b\"x\" * 65536, 0); h.zero(65536, 0); print(h.pread(2, 0))";
    let ours = log_of(bin(), &args, py);
    assert!(!ours.contains(" Zero "), "{ours}");
    assert!(
        ours.contains("connection=1 Write id=2 offset=0x0 count=0x10000 fua=0 ..."),
        "{ours}"
    );
    assert_eq!(ours, log_of("nbdkit", &args, py));
    // notrim: zeroes pass on without may-trim.
    let args = [
        "--filter=nozero",
        "--filter=log",
        "memory",
        "1M",
        "zeromode=notrim",
    ];
    let py = "h.zero(4096, 0)";
    let ours = log_of(bin(), &args, py);
    assert!(
        ours.contains("connection=1 Zero id=1 offset=0x0 count=0x1000 trim=0 fua=0 fast=0 ..."),
        "{ours}"
    );
    assert_eq!(ours, log_of("nbdkit", &args, py));
}

#[test]
fn nozero_fast_zero_modes() {
    let py = "try:\n    h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)\n    print(\"zeroed\")\nexcept nbd.Error as e:\n    print(e.errno)";
    for (mode, want) in [
        ("fastzeromode=slow", "ENOTSUP\n"),
        ("fastzeromode=ignore", "zeroed\n"),
        ("fastzeromode=default", "zeroed\n"),
    ] {
        let s = Server::start(&["--filter=nozero", "memory", "1M", "zeromode=plugin", mode]);
        assert_eq!(s.nbdsh(py), want, "{mode}");
    }
    let s = Server::start(&["--filter=nozero", "memory", "1M", "zeromode=emulate"]);
    assert_eq!(s.nbdsh(py), "ENOTSUP\n");
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "--filter=nozero",
            "null",
            "zeromode=x",
            "--run",
            "true",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("nozero: unknown zeromode 'x' (expected none, emulate, notrim or plugin)"));
}

#[test]
fn noextents_shows_everything_as_data_as_nbdkit() {
    let map = |prog: &str, filter: bool| {
        let mut a = vec!["-U", "-"];
        if filter {
            a.push("--filter=noextents");
        }
        a.extend([
            "memory",
            "1M",
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pwrite(b\"x\" * 4096, 65536)' && nbdinfo --map \"$uri\"",
        ]);
        run_ok(prog, &a)
    };
    let ours = map(bin(), true);
    assert_eq!(
        ours.split_whitespace().collect::<Vec<_>>(),
        ["0", "1048576", "0", "data"]
    );
    assert_eq!(ours, map("nbdkit", true));
    // Without the filter the holes show.
    assert!(map(bin(), false).contains("hole,zero"));
}

/// nbdsh: write `x`s at `AT`, ask for a fast zero over them, then print
/// the errno (or `zeroed`), the flags and the first bytes there.
const FAST_ZERO_PY: &str = "at = AT
h.pwrite(b\"x\" * 4096, at)
try:
    h.zero(4096, at, nbd.CMD_FLAG_FAST_ZERO)
    print(\"zeroed\")
except nbd.Error as e:
    print(e.errno)
print(h.can_zero(), h.can_fast_zero(), h.pread(4, at))";

/// nbdinfo's `can_fast_zero` line for `PROG -U - ARGS`.
fn json_fast_zero(prog: &str, args: &[&str]) -> String {
    let mut a = vec!["-U", "-"];
    a.extend(args);
    a.extend(["--run", "nbdinfo --json \"$uri\""]);
    let out = run_ok(prog, &a);
    let line = out.lines().find(|l| l.contains("\"can_fast_zero\""));
    line.unwrap_or_else(|| panic!("{out}")).trim().to_string()
}

/// A 1M RAM disk script with no zero; ZERO adds a native one.
const RAM_DISK: &str = "fn config(p) { #{ disk: disk(\"1M\") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset, flags) { h.disk.pwrite(buf, offset) }
";
const ZERO: &str = "fn zero(h, count, offset, flags) { h.disk.zero(count, offset) }\n";

#[test]
fn fast_zero_without_native_zero_fails_at_once_as_nbdkit() {
    // nbdkit's rule: a plugin without a native zero advertises fast zero,
    // and the server answers a fast zero with ENOTSUP before writing.
    let d = tempfile::tempdir().unwrap();
    let nozero = script(d.path(), "nozero.rhai", RAM_DISK);
    let not_native = script(
        d.path(),
        "notnative.rhai",
        &format!("{RAM_DISK}{ZERO}fn can_zero(h) {{ false }}\n"),
    );
    let py = FAST_ZERO_PY.replace("AT", "0");
    let want = "ENOTSUP\nTrue True bytearray(b'xxxx')\n";
    for p in [&nozero, &not_native] {
        let s = Server::start(&[p.as_str()]);
        assert_eq!(s.nbdsh(&py), want, "{p}");
        assert_eq!(
            json_fast_zero(bin(), &[p]),
            "\"can_fast_zero\": true,",
            "{p}"
        );
    }
    // A script with a native zero says can_fast_zero itself (nbdkit's
    // default is false there too).
    let native = script(d.path(), "native.rhai", &format!("{RAM_DISK}{ZERO}"));
    assert_eq!(
        json_fast_zero(bin(), &[&native]),
        "\"can_fast_zero\": false,"
    );

    // partitioning (its partition is written through, no zero): the same
    // answer, flags and bytes as nbdkit's, and the file is not zeroed.
    let py = FAST_ZERO_PY.replace("AT", "1048576");
    for prog in ["nbdkit", bin()] {
        let img = d.path().join("part.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let i = img.to_str().unwrap();
        let out = run_ok(
            prog,
            &["-U", "-", "partitioning", i, "--run", &nbdsh_cmd(&py)],
        );
        assert_eq!(out, want, "{prog}");
        assert_eq!(
            &std::fs::read(&img).unwrap()[..4096],
            &[b'x'; 4096],
            "{prog}"
        );
        assert_eq!(
            json_fast_zero(prog, &["partitioning", i]),
            "\"can_fast_zero\": true,",
            "{prog}"
        );
    }
}

/// nbdsh against a 2 GiB tmpdisk: data around a 1 GiB range, a fast zero
/// of that range (may trim, then NO_HOLE), each line the errno or
/// `zeroed`, whether it came back within 3 s, and what reads back.
const TMPDISK_FAST_ZERO_PY: &str = r#"
import time
G = 1 << 30
print(h.can_zero(), h.can_fast_zero())
for flags in [nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE]:
    h.pwrite(b"A" * 4096, 4096)
    h.pwrite(b"C" * 65536, 16 << 20)
    h.pwrite(b"B" * 4096, G + 8192)
    t = time.monotonic()
    try:
        h.zero(G, 8192, flags)
        r = "zeroed"
    except nbd.Error as e:
        r = e.errno
    print(r, time.monotonic() - t < 3, h.pread(4096, 4096) == b"A" * 4096,
          h.pread(4096, G + 8192) == b"B" * 4096, bytes(h.pread(2, (16 << 20) + 4096)))
"#;

fn tmpdisk_fast_zero(prog: &str, tmpdir: &std::path::Path) -> String {
    let out = client(prog)
        .args([
            "-U",
            "-",
            "tmpdisk",
            "2G",
            "command=truncate -s $size $disk",
        ])
        .args(["--run", &nbdsh_cmd(TMPDISK_FAST_ZERO_PY)])
        .env("TMPDIR", tmpdir)
        .output()
        .expect("run server");
    assert!(
        out.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tmpdisk_fast_zero_is_fallocate() {
    // Both advertise fast zero. nbdkit's tmpdisk has no zero, so it fails
    // every fast zero with ENOTSUP (nothing written); ours zeroes with
    // fallocate: 1 GiB at once, zeros in the range, the rest intact.
    let d = tempfile::tempdir().unwrap();
    let theirs = tmpdisk_fast_zero("nbdkit", d.path());
    assert_eq!(
        theirs,
        "True True\n\
         ENOTSUP True True True b'CC'\n\
         ENOTSUP True True True b'CC'\n"
    );
    let ours = tmpdisk_fast_zero(bin(), d.path());
    assert_eq!(
        ours,
        "True True\n\
         zeroed True True True b'\\x00\\x00'\n\
         zeroed True True True b'\\x00\\x00'\n"
    );
    // On tmpfs (no FALLOC_FL_ZERO_RANGE) a NO_HOLE fast zero cannot be
    // done without writing: ENOTSUP at once, the data still there.
    if std::path::Path::new("/dev/shm").is_dir() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let ours = tmpdisk_fast_zero(bin(), shm.path());
        assert_eq!(
            ours,
            "True True\n\
             zeroed True True True b'\\x00\\x00'\n\
             ENOTSUP True True True b'CC'\n"
        );
    }
}
