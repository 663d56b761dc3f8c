//! The native filters and plugins against real clients (nbdcopy, nbdsh,
//! nbdinfo), and byte for byte against nbdkit 1.32 with the same
//! parameters over the same data wherever nbdkit has the same layer.
//! This module owns the scratch-image helpers; the submodules group the
//! filters that map the disk, the ones that act on requests, `log`, and
//! the data plugins.

use crate::common::*;
use std::path::Path;

mod layout;
mod log;
mod plugins;
mod requests;

/// A scratch directory for images.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Write `bytes` to `dir/name`; returns the path as a String.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write image");
    p.to_str().expect("utf-8 path").to_string()
}

/// Deterministic non-repeating bytes.
fn noise(len: usize, salt: u64) -> Vec<u8> {
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
