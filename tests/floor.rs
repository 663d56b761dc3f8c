//! `benches/floor.c`, the minimal C server `scripts/bench --floor` runs as
//! the least a server can spend per request: built with cc and checked
//! against the real `nbdscript` with real clients, so the bench's floor
//! serves the same bytes with the same reply kind (structured) it claims.

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The floor server built from the tree's source into `dir`.
fn build(dir: &Path) -> String {
    let out = dir.join("floor");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/floor.c");
    run_ok(
        "cc",
        &["-O2", "-o", out.to_str().unwrap(), src, "-lpthread"],
    );
    out.to_str().unwrap().to_string()
}

/// `floor -U SOCK -P PID MODE 16` started and ready (its pidfile is
/// written once it listens); killed when the returned child is dropped
/// by the caller.
fn start(bin: &str, dir: &Path, mode: &str) -> (Child, String) {
    let sock = dir.join(format!("{mode}.sock"));
    let pid = dir.join(format!("{mode}.pid"));
    let child = Command::new(bin)
        .args([
            "-f",
            "-U",
            sock.to_str().unwrap(),
            "-P",
            pid.to_str().unwrap(),
            mode,
            "16",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start floor");
    wait_file_for(&pid, "\n", 30);
    (child, format!("nbd+unix:///?socket={}", sock.display()))
}

#[test]
fn the_bench_floor_serves_what_nbdscript_serves() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path());
    let fill = dir.path().join("fill.raw");
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&fill, &data).unwrap();
    let ours = Server::start(&["memory", "16M"]);
    run_ok("nbdcopy", &[fill.to_str().unwrap(), &ours.uri]);
    for mode in ["copy", "direct"] {
        let (mut child, uri) = start(&bin, dir.path(), mode);
        let info = run_ok("nbdinfo", &[&uri]);
        assert!(info.contains("using structured packets"), "{mode}: {info}");
        assert!(info.contains("export-size: 16777216"), "{mode}: {info}");
        run_ok("nbdcopy", &[fill.to_str().unwrap(), &uri]);
        let cmp = run_ok(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "raw", &uri, &ours.uri],
        );
        assert!(cmp.contains("Images are identical"), "{mode}: {cmp}");
        assert_eq!(read_all(&uri), data, "{mode}: bytes read back");
        let _ = child.kill();
        let _ = child.wait();
    }
    // zero: every read is zeroes, whatever was written.
    let (mut child, uri) = start(&bin, dir.path(), "zero");
    run_ok("nbdcopy", &[fill.to_str().unwrap(), &uri]);
    assert!(
        read_all(&uri).iter().all(|&b| b == 0),
        "zero mode sent data"
    );
    let _ = child.kill();
    let _ = child.wait();
}
