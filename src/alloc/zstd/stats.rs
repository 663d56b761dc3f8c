//! The zstd allocator's accounting: live counters of pages and bytes by
//! form, and the snapshot behind `stats()`, `usage()` and the `-v` line.
//! Must not import anything outside `alloc`.

use super::{Form, Inner, ZPage};
use crate::alloc::table::PAGE;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub(super) struct Counters {
    pub packed_pages: AtomicU64,
    pub packed_bytes: AtomicU64,
    pub split_pages: AtomicU64,
    pub pending_pages: AtomicU64,
    pub raw_pages: AtomicU64,
}

impl Counters {
    pub fn add(&self, p: &ZPage, sign: i64) {
        let d = |a: &AtomicU64, n: u64| {
            if sign > 0 {
                a.fetch_add(n, Relaxed);
            } else {
                a.fetch_sub(n, Relaxed);
            }
        };
        match p {
            ZPage::Hole => {}
            ZPage::Raw(..) => d(&self.raw_pages, 1),
            ZPage::Packed { data, form, .. } => {
                d(&self.packed_pages, 1);
                d(&self.packed_bytes, data.len() as u64);
                if form.pending() {
                    d(&self.pending_pages, 1);
                }
                if *form == Form::Split {
                    d(&self.split_pages, 1);
                }
            }
        }
    }
}

impl Inner {
    pub(super) fn stats(&self) -> Usage {
        let c = &self.counters;
        let raw = c.raw_pages.load(Relaxed);
        let packed = c.packed_pages.load(Relaxed);
        Usage {
            raw,
            packed,
            split: c.split_pages.load(Relaxed),
            stored: (raw + packed) * PAGE as u64,
            used: c.packed_bytes.load(Relaxed) + raw * PAGE as u64,
            packed_bytes: c.packed_bytes.load(Relaxed),
        }
    }
}

/// A snapshot of the counters.
pub(super) struct Usage {
    raw: u64,
    packed: u64,
    split: u64,
    /// Bytes of disk held (whole pages).
    pub stored: u64,
    /// Bytes of memory holding them.
    pub used: u64,
    packed_bytes: u64,
}

impl Usage {
    pub fn ratio(&self) -> f64 {
        if self.used == 0 {
            1.0
        } else {
            self.stored as f64 / self.used as f64
        }
    }

    pub fn line(&self) -> String {
        format!(
            "zstd: {} pages stored ({} compressed into {} bytes, {} of them in 4 KiB frames, \
             {} uncompressed in cache), compression ratio {:.3}",
            self.raw + self.packed,
            self.packed,
            self.packed_bytes,
            self.split,
            self.raw,
            self.ratio()
        )
    }
}
