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

#[test]
fn a_fragmented_file_maps_correctly_and_req_one_stops_at_one_extent() {
    // 3000 data blocks of 4 KiB, each followed by an 8 KiB hole: 6000
    // extents over 36 MiB.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("frag.img");
    let f = std::fs::File::create(&img).unwrap();
    use std::os::unix::fs::FileExt;
    for i in 0..3000u64 {
        f.write_all_at(&[0x5a; 4096], i * 12288).unwrap();
    }
    f.set_len(3000 * 12288).unwrap();
    drop(f);
    let log = dir.path().join("log.txt");
    let s = Server::start(&[
        "file",
        img.to_str().unwrap(),
        "--filter=log",
        &format!("logfile={}", log.display()),
    ]);
    // qemu-img's map of the export is the map of the file itself (both
    // read by qemu-img: the file through SEEK_DATA/SEEK_HOLE).
    let runs = |args: &[&str]| -> Vec<(u64, u64, bool)> {
        let out = run_ok("qemu-img", args);
        // One `{ "start": N, "length": N, ..., "data": B, ... }` per run.
        out.split('{')
            .skip(1)
            .map(|e| {
                let num = |k: &str| -> u64 {
                    let v = e.split(&format!("\"{k}\": ")).nth(1).unwrap();
                    v[..v.find(|c: char| !c.is_ascii_digit()).unwrap()]
                        .parse()
                        .unwrap()
                };
                (num("start"), num("length"), e.contains("\"data\": true"))
            })
            .collect()
    };
    let theirs = runs(&["map", "--output=json", "-f", "raw", img.to_str().unwrap()]);
    assert_eq!(theirs.len(), 6000, "{:?}", &theirs[..4]);
    let ours = runs(&["map", "--output=json", "--image-opts", &s.qemu_opts()]);
    assert_eq!(ours, theirs);
    // nbdinfo --map (whole-range requests, no REQ_ONE) agrees too.
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    let lines: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].parse().unwrap(),
                w[1].parse().unwrap(),
                w[2].parse().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u32)> = theirs
        .iter()
        .map(|&(o, l, d)| (o, l, if d { 0 } else { 3 }))
        .collect();
    assert_eq!(lines, want);
    // REQ_ONE over the whole file: the plugin stops at the first extent
    // (nbdkit's file plugin does), it does not walk 6000 of them.
    let out = s.nbdsh(
        r#"
got = []
h.block_status(3000 * 12288, 0, lambda m, o, e, err: got.extend(e), nbd.CMD_FLAG_REQ_ONE)
print(got)
"#,
    );
    assert_eq!(out.trim(), "[4096, 0]");
    let (_, _) = s.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.contains("...Extents id="))
        .unwrap_or_else(|| panic!("no Extents in the log:\n{text}"));
    let list = last.split("extents=(").nth(1).unwrap();
    assert!(
        list.starts_with("0x0 0x1000 ") && list.matches("0x").count() == 2,
        "the plugin walked past the first extent: {}",
        &last[..last.len().min(300)]
    );
}
