//! The built-in script library (`std/mbr`, `std/gpt`, `std/fat`,
//! `std/sectors`), the `rebuild` callback and the image examples, checked
//! only by trusted tools: sfdisk, sgdisk, fsck.fat, mtools, blkid, dd, and
//! nbdkit's `pattern` plugin. This module owns the helpers that drive
//! those tools; each library module (and the examples) is a submodule.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod examples;
mod fat;
mod partitions;
mod sectors;

/// Write `text` as `NAME` in a fresh directory.
fn script(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

/// Copy the whole export into `dir/NAME` with nbdcopy.
fn image(uri: &str, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    run_ok("nbdcopy", &[uri, p.to_str().unwrap()]);
    p
}

/// Run an mtools program on an image (geometry checks off, as for any
/// non-floppy image).
fn mtools(prog: &str, args: &[&str]) -> std::process::Output {
    client(prog)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .args(args)
        .output()
        .unwrap()
}

fn mtools_ok(prog: &str, args: &[&str]) -> String {
    let out = mtools(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fsck.fat -n` must find nothing to fix.
fn fsck_clean(img: &Path) -> String {
    let out = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck.fat -n failed:\n{text}");
    assert!(!text.contains("Perform changes"), "{text}");
    assert!(!text.to_lowercase().contains("differ"), "{text}");
    text
}

/// `blkid -p` of an image: `(TYPE, LABEL)` and the raw output.
fn blkid(img: &Path) -> String {
    run_ok(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            "-s",
            "TYPE",
            "-s",
            "LABEL",
            "-s",
            "VERSION",
            img.to_str().unwrap(),
        ],
    )
}

/// Every file of the image, read back with `mcopy -s`, must be exactly
/// `want` (path -> bytes), nothing more.
fn mtools_read_back(img: &Path, want: &[(String, Vec<u8>)]) {
    let out = tempfile::tempdir().unwrap();
    let spec = format!("{}", img.display());
    mtools_ok(
        "mcopy",
        &["-s", "-n", "-i", &spec, "::*", out.path().to_str().unwrap()],
    );
    let mut got = Vec::new();
    walk(out.path(), out.path(), &mut got);
    got.sort();
    let mut want: Vec<(String, Vec<u8>)> = want.to_vec();
    want.sort();
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "files mcopy read back");
    for ((p, g), (_, w)) in got.iter().zip(&want) {
        assert!(
            g == w,
            "{p}: {} bytes read back, {} expected (or different bytes)",
            g.len(),
            w.len()
        );
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
}

/// What `pattern(len, text.to_blob())` makes in a script.
fn pattern(len: usize, text: &str) -> Vec<u8> {
    text.bytes().cycle().take(len).collect()
}
