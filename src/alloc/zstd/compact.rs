//! The zstd allocator's idle work, on its own thread once no write has come
//! for a moment: compress the write-back cache, compress pages that looked
//! random and were kept as they were, and re-pack one-frame pages as 4 KiB sub-frames where
//! that costs at most 1% (small reads then decompress 4 KiB, not 32).
//! Pages are re-packed one at a time, each under its own lock, and freed
//! memory goes back to the kernel every few MiB, so RSS never holds two
//! copies of much; any write stops the pass (it resumes when idle again).
//! Must not import anything outside `alloc`.

use super::codec::{self, Raw};
use super::{packed, Form, Inner, ZPage};
use crate::alloc::table::PAGE;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Weak;
use std::time::Duration;

/// Quiet time before the compactor starts.
const IDLE: Duration = Duration::from_millis(300);
/// Bytes re-packed between two returns of free memory to the kernel.
const TRIM_EVERY: u64 = 8 << 20;

/// Give free heap memory back to the kernel (glibc keeps it otherwise: the
/// compactor's thread allocates in its own arena while the pages it
/// replaces were allocated in the request threads').
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The better of one frame and sub-frames for the page `raw` (`one`: its
/// frame when already made): sub-frames when they cost at most 1% more.
/// A page one frame cannot shrink is stored as it is (its sub-blocks
/// would not shrink either: an all-zero one would have made it compress).
fn best_form(raw: &[u8; PAGE], one: Option<Box<[u8]>>) -> ZPage {
    let one = match one {
        Some(o) => o,
        None => match codec::compress(&raw[..]) {
            Ok(c) if c.len() < PAGE => c,
            _ => return packed(raw.to_vec().into_boxed_slice(), Form::Stored),
        },
    };
    match codec::split(raw) {
        Ok(s) if s.len() <= one.len() + one.len() / 100 => packed(s, Form::Split),
        _ => packed(one, Form::Whole),
    }
}

/// The final form of a page packed as `form`, or None to keep it.
fn repack(data: &[u8], form: Form) -> Option<ZPage> {
    match form {
        Form::Frame => codec::with_scratch(|raw| {
            codec::decompress(data, &mut raw[..]).ok()?;
            Some(best_form(raw, Some(data.into())))
        }),
        Form::Sampled => {
            let raw: &[u8; PAGE] = data.try_into().ok()?;
            Some(best_form(raw, None))
        }
        Form::Whole | Form::Split | Form::Stored => None,
    }
}

impl Inner {
    /// Compress every page of the write-back cache (histograms decide, as
    /// on eviction: pages kept as they are get their full try when idle).
    pub(super) fn pack_cache(&self) {
        for shard in &self.cache {
            let pages: Vec<u64> = shard.lock().drain(..).collect();
            for p in pages {
                let _ = self.pack(p, true);
            }
        }
    }

    /// Compress the cache, then re-pack pending pages, stopping as soon as
    /// a request changes something.
    pub(super) fn compact(&self) {
        let start = self.activity.load(Relaxed);
        self.pack_cache();
        if self.counters.pending_pages.load(Relaxed) == 0 {
            return;
        }
        let mut moved = 0u64;
        let mut stop = false;
        self.table
            .visit(0, self.table.capacity() - 1, &mut |_page, slot| {
                if stop || self.activity.load(Relaxed) != start {
                    stop = true;
                    return;
                }
                let Some(mut g) = slot.0.try_write() else {
                    return;
                };
                if let ZPage::Packed { data, form, .. } = &*g {
                    if !form.pending() {
                        return;
                    }
                    let len = data.len() as u64;
                    if let Some(new) = repack(data, *form) {
                        let old = std::mem::take(&mut *g);
                        self.counters.add(&old, -1);
                        let new = match (old, new) {
                            (ZPage::Packed { data: od, .. }, ZPage::Packed { data, form, gen }) => {
                                ZPage::Packed {
                                    data: codec::refill(od, &data),
                                    form,
                                    gen,
                                }
                            }
                            (_, new) => new,
                        };
                        self.counters.add(&new, 1);
                        *g = new;
                        drop(g);
                        moved += len;
                        if moved >= TRIM_EVERY {
                            moved = 0;
                            trim();
                        }
                    }
                }
            });
    }
}

/// The compactor thread: compact once the disk has been idle for IDLE.
pub(super) fn compactor(weak: Weak<Inner>, rx: mpsc::Receiver<()>) {
    let mut seen = u64::MAX;
    loop {
        match rx.recv_timeout(IDLE) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now = inner.activity.load(Relaxed);
        if now != seen {
            seen = now;
            continue;
        }
        let c = &inner.counters;
        if c.raw_pages.load(Relaxed) > 0 || c.pending_pages.load(Relaxed) > 0 {
            inner.compact();
            let pool: Vec<Raw> = std::mem::take(&mut *inner.pool.lock());
            drop(pool);
            trim();
            tracing::debug!("idle: {}", inner.stats().line());
        }
    }
}
