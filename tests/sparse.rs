//! Big reads over holes: every filter sees them as reads (error injects,
//! delay delays, log writes `Read`, cow-on-read caches, blocksize splits),
//! and OFFSET_HOLE chunks are sent only where every layer allows it.

use crate::common::*;

/// nbdsh script: read 1 MiB at 0 with a chunk callback and print how many
/// chunks were holes (`holes=N`), or the errno name when the read fails.
const READ_1M: &str = r#"
holes = 0
def rcb(buf, off, status, err):
    global holes
    if status == nbd.READ_HOLE:
        holes += 1
try:
    buf = h.pread_structured(1 << 20, 0, rcb)
    assert buf == bytes(1 << 20)
    print("holes=%d" % holes)
except nbd.Error as e:
    print(e.errno)
"#;

fn log_lines(path: &std::path::Path, what: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

#[test]
fn plain_stacks_still_send_holes() {
    for args in [
        &["memory", "size=1M"][..],
        &["--filter=offset", "memory", "size=2M", "offset=1M"][..],
        &[
            "--filter=readonly",
            "--filter=truncate",
            "memory",
            "512K",
            "truncate=1M",
        ][..],
        &["--filter=cow", "memory", "size=1M"][..],
    ] {
        let s = Server::start(args);
        let out = s.nbdsh(READ_1M);
        assert!(
            out.starts_with("holes=") && out.trim() != "holes=0",
            "{args:?}: {out}"
        );
    }
}

#[test]
fn error_filter_fails_a_big_read_over_a_hole() {
    let s = Server::start(&[
        "--filter=error",
        "memory",
        "1M",
        "error-pread=EIO",
        "error-pread-rate=100%",
    ]);
    assert_eq!(s.nbdsh(READ_1M).trim(), "EIO");
    // The rate applies to reads only: block status still works.
    s.nbdsh("h.block_status(1 << 20, 0, lambda *a: 0)");
}

#[test]
fn delay_filter_delays_a_big_read_over_a_hole() {
    let s = Server::start(&["--filter=delay", "memory", "1M", "rdelay=400ms"]);
    let out = s.nbdsh(&format!(
        "import time\nt = time.monotonic()\n{READ_1M}\nprint(time.monotonic() - t)"
    ));
    let mut it = out.split_whitespace();
    assert_eq!(it.next(), Some("holes=0"), "{out}");
    let t: f64 = it.next().unwrap().parse().unwrap();
    assert!(t >= 0.4, "a 1 MiB read with rdelay=400ms took {t}s");
}

#[test]
fn log_filter_logs_a_big_read_over_a_hole_as_a_read() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("nbd.log");
    let lf = format!("logfile={}", log.display());
    let s = Server::start(&["--filter=log", "memory", "1M", &lf]);
    assert_eq!(s.nbdsh(READ_1M).trim(), "holes=0");
    drop(s);
    let reads = log_lines(&log, " Read ");
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(
        reads[0].contains("connection=1 Read id=1 offset=0x0 count=0x100000 ..."),
        "{reads:?}"
    );
    assert!(
        log_lines(&log, "Extents").is_empty(),
        "no extents were asked"
    );
}

#[test]
fn cow_on_read_caches_a_big_read_over_a_hole() {
    // The log filter below cow sees what cow reads from the plugin: the
    // whole MiB once, then nothing (it was copied up).
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("nbd.log");
    let lf = format!("logfile={}", log.display());
    let s = Server::start(&[
        "--filter=cow",
        "--filter=log",
        "memory",
        "1M",
        "cow-on-read=true",
        &lf,
    ]);
    assert_eq!(s.nbdsh(READ_1M).trim(), "holes=0");
    let first = log_lines(&log, " Read ");
    let bytes: u64 = first
        .iter()
        .map(|l| {
            let c = l.split("count=0x").nth(1).unwrap();
            u64::from_str_radix(c.split_whitespace().next().unwrap(), 16).unwrap()
        })
        .sum();
    assert_eq!(bytes, 1 << 20, "{first:?}");
    assert_eq!(s.nbdsh(READ_1M).trim(), "holes=0");
    assert_eq!(log_lines(&log, " Read ").len(), first.len(), "read again");
}

#[test]
fn blocksize_splits_a_big_read_over_a_hole() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("nbd.log");
    let lf = format!("logfile={}", log.display());
    let s = Server::start(&[
        "--filter=blocksize",
        "--filter=log",
        "memory",
        "1M",
        "maxdata=256k",
        &lf,
    ]);
    assert_eq!(s.nbdsh(READ_1M).trim(), "holes=0");
    drop(s);
    let reads = log_lines(&log, " Read ");
    let want: Vec<String> = (0..4)
        .map(|i| format!("offset={:#x} count=0x40000 ...", i * 0x40000))
        .collect();
    assert_eq!(reads.len(), 4, "{reads:?}");
    for (r, w) in reads.iter().zip(&want) {
        assert!(r.contains(w), "{r:?} lacks {w:?}");
    }
}

#[test]
fn a_script_filter_with_pread_sees_big_reads() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("count.rhai");
    std::fs::write(
        &f,
        "fn pread(next, h, count, offset, flags) { nbd_error(\"ENOSPC\", \"seen\") }\n",
    )
    .unwrap();
    let ff = format!("--filter={}", f.display());
    let s = Server::start(&[&ff, "memory", "1M"]);
    assert_eq!(s.nbdsh(READ_1M).trim(), "ENOSPC");
}
