//! The file plugin as nbdkit-file-plugin: `dir=` (one export per file,
//! listed by NBD_OPT_LIST, chosen by export name), native FUA and cache
//! (seen through the log filter), `fadvise=` and `cache=`; each compared
//! with nbdkit's answers.

use crate::common::*;
use std::path::Path;

/// A directory as nbdkit's test-file-dir.sh builds it: two files, a
/// symlink to one, and things that must not be served.
fn populate(d: &Path) {
    std::fs::write(d.join("a"), b"1\n").unwrap();
    std::fs::write(d.join("b"), b"2\n").unwrap();
    let s = sh(&format!(
        "cd {} && ln -s b c && mkfifo d && mkdir e && ln -s /dev/null f && ln -s . g && ln -s dangling h",
        d.display()
    ));
    assert!(s.status.success());
}

/// `nbdinfo --list --json`'s export names, in the order listed.
fn listed(prog: &str, dir: &Path) -> String {
    let o = run(
        prog,
        &[
            "-U",
            "-",
            "file",
            &format!("dir={}", dir.display()),
            "--run",
            "nbdinfo --list --json \"$uri\" | /usr/bin/python3 -c \
             'import json, sys; print(json.dumps([e[\"export-name\"] for e in json.load(sys.stdin)[\"exports\"]]))'",
        ],
    );
    assert!(
        o.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// For each export name: the first two bytes, or `ERR` when the server
/// refuses it.
fn per_name(prog: &str, dir: &Path) -> String {
    let script = r#"export unixsocket; /usr/bin/python3 -c '
import nbd, os
for name in ["a", "b", "c", "", "d", "e", "f", "g", "h", "..", "./a", "../a", "nosuch"]:
    h = nbd.NBD()
    h.set_export_name(name)
    try:
        h.connect_unix(os.environ["unixsocket"])
        print(repr(name), bytes(h.pread(2, 0)), h.get_size())
    except nbd.Error:
        print(repr(name), "ERR")
'"#;
    let o = run(
        prog,
        &[
            "-U",
            "-",
            "file",
            &format!("directory={}", dir.display()),
            "--run",
            script,
        ],
    );
    assert!(
        o.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn file_dir_lists_and_serves_each_file_like_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(listed(bin(), d.path()), "[]");
    assert_eq!(listed("nbdkit", d.path()), "[]");
    populate(d.path());
    let ours = listed(bin(), d.path());
    // Directory order, as nbdkit: the same three names, nothing else.
    let mut names: Vec<&str> = ours
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|n| n.trim_matches('"'))
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "{ours}");
    assert_eq!(ours, listed("nbdkit", d.path()));

    let ours = per_name(bin(), d.path());
    assert_eq!(
        ours,
        "'a' b'1\\n' 2\n'b' b'2\\n' 2\n'c' b'2\\n' 2\n'' ERR\n'd' ERR\n'e' ERR\n\
         'f' ERR\n'g' ERR\n'h' ERR\n'..' ERR\n'./a' ERR\n'../a' ERR\n'nosuch' ERR\n"
    );
    assert_eq!(ours, per_name("nbdkit", d.path()));
}

#[test]
fn file_dir_and_file_parameters_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["file", "dir=/nonexistent/nbdscript"],
            "file: dir=/nonexistent/nbdscript: No such file or directory",
        ),
        (
            &["file", &format!("dir={}", f.display())],
            "not a directory",
        ),
        (
            &["file", &format!("file={}", d.path().display())],
            "is a directory; use dir= to serve the files in it",
        ),
        (
            &["file", "fadvise=fast", &format!("file={}", f.display())],
            "file: fadvise=fast: give normal, random or sequential",
        ),
        (
            &["file", "x", &format!("dir={}", d.path().display())],
            "file: file= and dir= cannot be used at the same time",
        ),
    ];
    for (args, want) in cases {
        let mut a = args.to_vec();
        a.extend(["--run", "true"]);
        let o = run(bin(), &a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// The log filter's lines for writes, zeroes and a cache under
/// `--filter=fua fuamode=force`, timestamps cut off; nbdkit logs `Fork`,
/// which nbdscript's filters are not told.
fn fua_log(prog: &str, extra: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    let log = d.path().join("log");
    let mut args = vec!["-U", "-", "--filter=fua", "--filter=log", "file"];
    let (i, l) = (
        img.display().to_string(),
        format!("logfile={}", log.display()),
    );
    args.extend([i.as_str(), l.as_str(), "fuamode=force"]);
    args.extend(extra);
    args.extend([
        "--run",
        "nbdsh -u \"$uri\" -c 'h.pwrite(b\"a\" * 4096, 0)' -c 'h.zero(4096, 8192)' \
         -c 'h.cache(4096, 0)' -c 'h.flush()' -c 'print(bytes(h.pread(2, 0)), bytes(h.pread(2, 8192)))'",
    ]);
    let o = run(prog, &args);
    assert!(
        o.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "b'aa' b'\\x00\\x00'\n",
        "{prog}"
    );
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .filter(|l| *l != "Fork")
        .map(|l| l.to_string() + "\n")
        .collect()
}

#[test]
fn file_fua_and_cache_are_native_like_nbdkit() {
    let ours = fua_log(bin(), &[]);
    // Native FUA (fua=2) and cache (cache=2): the FUA flag reaches the
    // plugin on every write, and no flush stands in for it.
    assert!(ours.contains(" fua=2 extents=1 cache=2 "), "{ours}");
    assert!(
        ours.contains("connection=1 Write id=1 offset=0x0 count=0x1000 fua=1 ..."),
        "{ours}"
    );
    assert!(
        ours.contains("connection=1 Zero id=2 offset=0x2000 count=0x1000 trim=1 fua=1 fast=0"),
        "{ours}"
    );
    assert!(ours.contains("connection=1 Cache id=3 "), "{ours}");
    assert!(!ours.contains("Flush"), "{ours}");
    assert_eq!(ours, fua_log("nbdkit", &[]));
    // The page-cache hints change no bytes and no log line.
    assert_eq!(
        fua_log(bin(), &["cache=none", "fadvise=sequential"]),
        fua_log("nbdkit", &["cache=none", "fadvise=sequential"])
    );
}

#[test]
fn file_can_fua_and_cache_as_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    std::fs::write(&img, vec![0u8; 65536]).unwrap();
    for what in ["fua", "cache", "flush", "trim", "zero", "multi-conn"] {
        let probe = |prog: &str| {
            run(
                prog,
                &[
                    "-U",
                    "-",
                    "file",
                    img.to_str().unwrap(),
                    "--run",
                    &format!("nbdinfo --can {what} \"$uri\""),
                ],
            )
            .status
            .code()
        };
        assert_eq!(probe(bin()), Some(0), "--can {what}");
        assert_eq!(probe(bin()), probe("nbdkit"), "--can {what}");
    }
}
