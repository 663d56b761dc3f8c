//! The Rust examples (`examples/*.rs`, native plugins and filters on the
//! library API) run as a user runs them, checked with nbdinfo and qemu-io.
//! `cargo test` builds them next to the binary (`target/PROFILE/examples`);
//! `scripts/test` builds them explicitly.

use crate::common::{bin, client};
use std::path::PathBuf;
use std::process::Output;

fn example(name: &str) -> PathBuf {
    let p = std::path::Path::new(bin())
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --examples` with this profile (cargo test builds it)",
        p.display()
    );
    p
}

/// Run an example under `timeout` with `args`; returns its output.
fn run_example(name: &str, args: &[&str]) -> Output {
    client(example(name).to_str().unwrap())
        .args(args)
        .output()
        .expect("run the example")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn ramdisk_example_is_a_writable_disk() {
    let o = run_example(
        "ramdisk",
        &[
            "8M",
            "--run",
            "nbdinfo $uri && qemu-io -f raw -c 'write -P 0x5a 4096 8192' -c 'read -P 0x5a 4096 8192' \
             -c 'read -P 0 0 4096' -c 'read -P 0 12288 4096' $uri",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("export-size: 8388608 (8M)"), "{out}");
    assert!(out.contains("is_read_only: false"), "{out}");
    assert!(out.contains("can_multi_conn: true"), "{out}");
    assert!(out.contains("can_flush: true"), "{out}");
    assert!(out.contains("can_trim: false"), "{out}");
    assert!(
        out.contains("wrote 8192/8192 bytes at offset 4096"),
        "{out}"
    );
    assert!(out.contains("read 8192/8192 bytes at offset 4096"), "{out}");
    assert!(
        out.contains("read 4096/4096 bytes at offset 12288"),
        "{out}"
    );
    assert!(
        !out.contains("failed") && !err.contains("failed"),
        "{out}\n{err}"
    );
}

#[test]
fn ramdisk_example_exits_with_the_captive_status_and_checks_usage() {
    let o = run_example("ramdisk", &["1M", "--run", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = run_example("ramdisk", &["lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("usage: ramdisk SIZE"), "{:?}", text(&o));
}

#[test]
fn badsector_example_fails_one_sector_over_a_cow_overlay() {
    // Sector N holds the byte N; sector 3 fails; cow makes the read-only
    // plugin writable.
    let o = run_example(
        "badsector",
        &[
            "1M",
            "3",
            "--run",
            "nbdinfo $uri; qemu-io -f raw -c 'read -P 2 1024 512' -c 'read -P 4 2048 512' $uri; \
             qemu-io -f raw -c 'read 1500 100' $uri; \
             qemu-io -f raw -c 'write -P 7 0 512' -c 'read -P 7 0 512' -c 'read -P 1 512 512' $uri",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("export-size: 1048576 (1M)"), "{out}");
    assert!(out.contains("is_read_only: false"), "{out}");
    assert!(out.contains("read 512/512 bytes at offset 1024"), "{out}");
    assert!(out.contains("read 512/512 bytes at offset 2048"), "{out}");
    assert_eq!(
        out.matches("read failed: Input/output error").count()
            + err.matches("read failed: Input/output error").count(),
        1,
        "{out}\n{err}"
    );
    assert!(out.contains("wrote 512/512 bytes at offset 0"), "{out}");
    assert!(out.contains("read 512/512 bytes at offset 0"), "{out}");
    assert!(out.contains("read 512/512 bytes at offset 512"), "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
}
