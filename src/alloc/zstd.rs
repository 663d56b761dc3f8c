//! The `zstd` allocator: 32 KiB pages kept zstd-compressed in the lock-free
//! page table of `table.rs`, each page behind its own `RwLock`, so requests
//! to different pages run in parallel. Writes land in a small sharded
//! write-back cache of uncompressed pages (compressed at a fast level when
//! evicted); a whole-page overwrite never decompresses; pages that become
//! all zero are holes, and never-written pages cost nothing to read. When
//! the disk has been idle for a moment a background thread compresses the
//! cache and recompresses fast-level pages at nbdkit's level (3), so the
//! ratio once writes stop is at least nbdkit's.
//! Must not import anything outside `alloc`.

use super::table::{chunks, is_zero, PageTable, PAGE, PAGE_SHIFT};
use super::{AllocError, AllocExtent, Allocator, Result, HOLE, MAX_SIZE, ZERO};
use parking_lot::{Mutex, RwLock};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Level used when a page leaves the write-back cache.
const FAST_LEVEL: i32 = -3;
/// Level pages end at once the disk is idle (nbdkit's ZSTD_CLEVEL_DEFAULT).
const FINAL_LEVEL: i32 = 3;
const SHARDS: usize = 16;
/// Uncompressed pages kept per shard (16 x 16 x 32 KiB = 8 MiB).
const SHARD_PAGES: usize = 16;
const IDLE: Duration = Duration::from_millis(300);
/// `level` of a page kept uncompressed because zstd could not shrink it.
const STORED: i32 = i32::MIN;
/// `level` of a page kept uncompressed because a 4 KiB sample did not
/// compress; the compactor tries the whole page again when idle.
const SAMPLED: i32 = i32::MIN + 1;

fn is_stored(level: i32) -> bool {
    level == STORED || level == SAMPLED
}

type Raw = Box<[u8; PAGE]>;

#[derive(Default)]
enum ZPage {
    #[default]
    Hole,
    Raw(Raw),
    Packed {
        data: Box<[u8]>,
        level: i32,
    },
}

#[derive(Default)]
struct Slot(RwLock<ZPage>);

fn new_raw() -> Raw {
    match vec![0u8; PAGE].into_boxed_slice().try_into() {
        Ok(p) => p,
        Err(_) => Box::new([0u8; PAGE]),
    }
}

thread_local! {
    static CCTX: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Compression output; copied into an exact-size box so the heap is
    /// not left with the unused tail of a worst-case-sized buffer.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Decompression target for reads and recompaction.
    static SCRATCH: RefCell<Option<Raw>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's page-sized scratch buffer.
fn with_scratch<T>(f: impl FnOnce(&mut [u8; PAGE]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        f(s.get_or_insert_with(new_raw))
    })
}

/// Uncompressed pages kept for reuse, so the page churn of the write-back
/// cache does not spread free memory over every thread's malloc arena.
const POOL: usize = 64;

fn zerr(what: &str, e: std::io::Error) -> AllocError {
    AllocError::NoMem(format!("zstd: {what}: {e}"))
}

fn compress(src: &[u8], level: i32) -> Result<Box<[u8]>> {
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(level).map_err(|e| zerr("context", e))?);
        }
        let cc = c
            .as_mut()
            .ok_or_else(|| AllocError::NoMem("zstd: no context".into()))?;
        cc.set_compression_level(level)
            .map_err(|e| zerr("level", e))?;
        OUT.with(|o| {
            let mut out = o.borrow_mut();
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(PAGE));
            cc.compress_to_buffer(src, &mut *out)
                .map_err(|e| zerr("compress", e))?;
            Ok(Box::from(&out[..]))
        })
    })
}

fn decompress(src: &[u8], dst: &mut [u8; PAGE]) -> Result<()> {
    DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| zerr("context", e))?);
        }
        let dd = d
            .as_mut()
            .ok_or_else(|| AllocError::NoMem("zstd: no context".into()))?;
        match dd.decompress_to_buffer(src, &mut dst[..]) {
            Ok(PAGE) => Ok(()),
            Ok(n) => Err(AllocError::Config(format!(
                "zstd: corrupt page: {n} bytes instead of {PAGE}"
            ))),
            Err(e) => Err(AllocError::Config(format!("zstd: corrupt page: {e}"))),
        }
    })
}

#[derive(Default)]
struct Counters {
    packed_pages: AtomicU64,
    packed_bytes: AtomicU64,
    fast_pages: AtomicU64,
    raw_pages: AtomicU64,
}

impl Counters {
    fn add(&self, p: &ZPage, sign: i64) {
        let d = |a: &AtomicU64, n: u64| {
            if sign > 0 {
                a.fetch_add(n, Relaxed);
            } else {
                a.fetch_sub(n, Relaxed);
            }
        };
        match p {
            ZPage::Hole => {}
            ZPage::Raw(_) => d(&self.raw_pages, 1),
            ZPage::Packed { data, level } => {
                d(&self.packed_pages, 1);
                d(&self.packed_bytes, data.len() as u64);
                if *level != FINAL_LEVEL && *level != STORED {
                    d(&self.fast_pages, 1);
                }
            }
        }
    }
}

struct Inner {
    table: PageTable<Slot>,
    limit: u64,
    cache: [Mutex<VecDeque<u64>>; SHARDS],
    shard_pages: usize,
    pool: Mutex<Vec<Raw>>,
    counters: Counters,
    /// Bumped by every modifying request; the compactor waits for quiet.
    activity: AtomicU64,
}

/// A modification of part of one page.
enum Change<'a> {
    Data(&'a [u8]),
    Fill(u8),
}

impl Inner {
    fn set(&self, g: &mut ZPage, new: ZPage) {
        self.counters.add(g, -1);
        self.counters.add(&new, 1);
        *g = new;
    }

    /// Apply `change` to `[inpg, inpg+len)` of `page`.
    fn modify(&self, page: u64, inpg: usize, len: usize, change: Change) -> Result<()> {
        let zero = match change {
            Change::Data(d) => is_zero(d),
            Change::Fill(b) => b == 0,
        };
        let slot = if zero {
            match self.table.get(page) {
                Some(s) => s,
                None => return Ok(()),
            }
        } else {
            self.table
                .get_or_create(page)
                .ok_or_else(|| AllocError::Range(format!("zstd: page {page} out of range")))?
        };
        let mut g = slot.0.write();
        let whole = len == PAGE;
        if let ZPage::Raw(r) = &mut *g {
            apply(r, inpg, len, &change);
            if zero && (whole || is_zero(&r[..])) {
                self.set(&mut g, ZPage::Hole);
            }
            return Ok(());
        }
        if zero && matches!(*g, ZPage::Hole) {
            return Ok(());
        }
        let mut raw = match std::mem::take(&mut *g) {
            ZPage::Packed { data, level } if is_stored(level) && data.len() == PAGE => {
                // Reuse the stored page's memory: no copy, no decompression.
                self.counters.add(
                    &ZPage::Packed {
                        data: Box::new([]),
                        level,
                    },
                    -1,
                );
                self.counters.packed_bytes.fetch_sub(PAGE as u64, Relaxed);
                match data.try_into() {
                    Ok(r) => r,
                    Err(_) => new_raw(),
                }
            }
            old => {
                let mut raw = self.take_raw(matches!(old, ZPage::Hole) && !whole);
                if let ZPage::Packed { data, .. } = &old {
                    if !whole {
                        if let Err(e) = decompress(data, &mut raw) {
                            *g = old;
                            return Err(e);
                        }
                    }
                }
                *g = old;
                raw
            }
        };
        apply(&mut raw, inpg, len, &change);
        if zero && (whole || is_zero(&raw[..])) {
            self.set(&mut g, ZPage::Hole);
            return Ok(());
        }
        self.set(&mut g, ZPage::Raw(raw));
        drop(g);
        self.enqueue(page)
    }

    /// Note that `page` became uncompressed; compress the oldest ones.
    fn enqueue(&self, page: u64) -> Result<()> {
        let victims: Vec<u64> = {
            let mut q = self.cache[(page as usize) % SHARDS].lock();
            q.push_back(page);
            let over = q.len().saturating_sub(self.shard_pages);
            q.drain(..over).collect()
        };
        for v in victims {
            self.pack(v, FAST_LEVEL)?;
        }
        Ok(())
    }

    /// Compress `page` if it is uncompressed.
    fn pack(&self, page: u64, level: i32) -> Result<()> {
        let Some(slot) = self.table.get(page) else {
            return Ok(());
        };
        let mut g = slot.0.write();
        if !matches!(*g, ZPage::Raw(_)) {
            return Ok(());
        }
        let old = std::mem::take(&mut *g);
        self.counters.add(&old, -1);
        if let ZPage::Raw(r) = old {
            let new = self.encode(r, level);
            self.counters.add(&new, 1);
            *g = new;
        }
        Ok(())
    }

    /// The stored form of an uncompressed page: a hole, zstd at `level`, or the
    /// page itself when zstd cannot shrink it (at FAST_LEVEL a 4 KiB sample
    /// decides, so incompressible data costs little to evict).
    fn encode(&self, r: Raw, level: i32) -> ZPage {
        if is_zero(&r[..]) {
            self.give_raw(r);
            return ZPage::Hole;
        }
        if level == FAST_LEVEL {
            let sample = &r[PAGE / 2..PAGE / 2 + 4096];
            if compress(sample, FAST_LEVEL).map_or(true, |c| c.len() > 4096 * 3 / 4) {
                return ZPage::Packed {
                    data: r,
                    level: SAMPLED,
                };
            }
        }
        match compress(&r[..], level) {
            Ok(c) if c.len() < PAGE => {
                self.give_raw(r);
                ZPage::Packed { data: c, level }
            }
            _ => ZPage::Packed {
                data: r,
                level: STORED,
            },
        }
    }

    fn take_raw(&self, zeroed: bool) -> Raw {
        match self.pool.lock().pop() {
            Some(mut r) => {
                if zeroed {
                    r.fill(0);
                }
                r
            }
            None => new_raw(),
        }
    }

    fn give_raw(&self, r: Raw) {
        let mut p = self.pool.lock();
        if p.len() < POOL {
            p.push(r);
        }
    }

    /// Compress the cache, then recompress fast-level pages at FINAL_LEVEL,
    /// stopping as soon as a request changes something.
    fn compact(&self) {
        let start = self.activity.load(Relaxed);
        for shard in &self.cache {
            let pages: Vec<u64> = shard.lock().drain(..).collect();
            for p in pages {
                let _ = self.pack(p, FINAL_LEVEL);
            }
        }
        if self.counters.fast_pages.load(Relaxed) == 0 {
            return;
        }
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
                if let ZPage::Packed { data, level } = &*g {
                    if let Some(new) = recompress(data, *level) {
                        self.set(&mut g, new);
                    }
                }
            });
    }
}

/// A page at FINAL_LEVEL (or STORED) replacing one stored at `level`.
fn recompress(data: &[u8], level: i32) -> Option<ZPage> {
    if level == FINAL_LEVEL || level == STORED {
        return None;
    }
    let c = if level == SAMPLED {
        compress(data, FINAL_LEVEL).ok()
    } else {
        with_scratch(|raw| {
            decompress(data, raw).ok()?;
            compress(&raw[..], FINAL_LEVEL).ok()
        })
    };
    Some(match c {
        Some(c) if c.len() < data.len().min(PAGE) => ZPage::Packed {
            data: c,
            level: FINAL_LEVEL,
        },
        _ => ZPage::Packed {
            data: data.into(),
            level: if level == SAMPLED {
                STORED
            } else {
                FINAL_LEVEL
            },
        },
    })
}

fn apply(r: &mut [u8; PAGE], inpg: usize, len: usize, change: &Change) {
    match change {
        Change::Data(d) => r[inpg..inpg + len].copy_from_slice(d),
        Change::Fill(b) => r[inpg..inpg + len].fill(*b),
    }
}

/// The zstd allocator. Dropping it stops its compactor thread.
pub struct Zstd {
    inner: Arc<Inner>,
    _stop: mpsc::Sender<()>,
}

impl Default for Zstd {
    fn default() -> Self {
        Self::new()
    }
}

impl Zstd {
    /// A compressed array addressing the full 2^63 bytes.
    pub fn new() -> Self {
        Self::with_size(MAX_SIZE)
    }

    /// A compressed array for a disk of `size` bytes.
    pub fn with_size(size: u64) -> Self {
        Self::with_cache(size, SHARD_PAGES)
    }

    /// As `with_size`, keeping `shard_pages` uncompressed pages per shard
    /// (16 shards; 0 compresses on every write, as nbdkit does).
    pub fn with_cache(size: u64, shard_pages: usize) -> Self {
        let pages = size.min(MAX_SIZE).div_ceil(PAGE as u64).max(1);
        let table = PageTable::new(pages);
        let limit = table.capacity().saturating_mul(PAGE as u64).min(1 << 63);
        let inner = Arc::new(Inner {
            table,
            limit,
            cache: std::array::from_fn(|_| Mutex::new(VecDeque::new())),
            shard_pages,
            pool: Mutex::new(Vec::new()),
            counters: Counters::default(),
            activity: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&inner);
        // If the thread cannot start, pages simply stay at the fast level.
        let _ = std::thread::Builder::new()
            .name("zstd-compact".into())
            .spawn(move || compactor(weak, rx));
        Zstd { inner, _stop: tx }
    }

    /// Compress everything now at the final level (what the idle thread does).
    pub fn compact(&self) {
        self.inner.compact();
    }

    /// Pages still compressed at the fast level (0 once compaction ran).
    pub fn inner_fast_pages(&self) -> u64 {
        self.inner.counters.fast_pages.load(Relaxed)
    }

    /// Logical bytes stored / bytes of memory they take.
    pub fn ratio(&self) -> f64 {
        let c = &self.inner.counters;
        let raw = c.raw_pages.load(Relaxed);
        let packed = c.packed_pages.load(Relaxed);
        let used = c.packed_bytes.load(Relaxed) + raw * PAGE as u64;
        if used == 0 {
            1.0
        } else {
            ((raw + packed) * PAGE as u64) as f64 / used as f64
        }
    }

    fn check(&self, count: u64, offset: u64) -> Result<()> {
        match offset.checked_add(count) {
            Some(end) if end <= self.inner.limit => Ok(()),
            _ => Err(AllocError::Range(format!(
                "zstd: request of {count} bytes at offset {offset} is beyond the {} byte limit",
                self.inner.limit
            ))),
        }
    }
}

fn compactor(weak: Weak<Inner>, rx: mpsc::Receiver<()>) {
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
        if c.raw_pages.load(Relaxed) > 0 || c.fast_pages.load(Relaxed) > 0 {
            inner.compact();
            inner.pool.lock().clear();
            // Give the pages freed by recompression back to the kernel.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

impl Allocator for Zstd {
    fn name(&self) -> &'static str {
        "zstd"
    }

    fn is_blocking(&self) -> bool {
        true
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        for c in chunks(offset, buf.len() as u64, PAGE_SHIFT) {
            let out = &mut buf[c.done..c.done + c.len];
            let Some(slot) = self.inner.table.get(c.page) else {
                out.fill(0);
                continue;
            };
            match &*slot.0.read() {
                ZPage::Hole => out.fill(0),
                ZPage::Raw(r) => out.copy_from_slice(&r[c.inpg..c.inpg + c.len]),
                ZPage::Packed { data, level } if is_stored(*level) && data.len() == PAGE => {
                    out.copy_from_slice(&data[c.inpg..c.inpg + c.len])
                }
                ZPage::Packed { data, .. } => with_scratch(|t| {
                    decompress(data, t)?;
                    out.copy_from_slice(&t[c.inpg..c.inpg + c.len]);
                    Ok::<(), AllocError>(())
                })?,
            }
        }
        Ok(())
    }

    fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        self.inner.activity.fetch_add(1, Relaxed);
        for c in chunks(offset, buf.len() as u64, PAGE_SHIFT) {
            let d = &buf[c.done..c.done + c.len];
            self.inner.modify(c.page, c.inpg, c.len, Change::Data(d))?;
        }
        Ok(())
    }

    fn fill(&self, byte: u8, count: u64, offset: u64) -> Result<()> {
        if byte == 0 {
            return self.zero(count, offset);
        }
        self.check(count, offset)?;
        self.inner.activity.fetch_add(1, Relaxed);
        for c in chunks(offset, count, PAGE_SHIFT) {
            self.inner
                .modify(c.page, c.inpg, c.len, Change::Fill(byte))?;
        }
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64) -> Result<()> {
        self.check(count, offset)?;
        if count == 0 {
            return Ok(());
        }
        self.inner.activity.fetch_add(1, Relaxed);
        let end = offset + count;
        let (first, last) = (offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT);
        let mut touched = Vec::new();
        self.inner.table.visit(first, last, &mut |page, slot| {
            if !matches!(&*slot.0.read(), ZPage::Hole) {
                touched.push(page);
            }
        });
        for page in touched {
            let start = (page << PAGE_SHIFT).max(offset);
            let stop = ((page + 1) << PAGE_SHIFT).min(end);
            let inpg = (start & (PAGE as u64 - 1)) as usize;
            self.inner
                .modify(page, inpg, (stop - start) as usize, Change::Fill(0))?;
        }
        Ok(())
    }

    fn extents(&self, count: u64, offset: u64) -> Result<Vec<AllocExtent>> {
        self.check(count, offset)?;
        let mut out: Vec<AllocExtent> = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        let end = offset + count;
        let push = |out: &mut Vec<AllocExtent>, from: u64, to: u64, typ: u32| {
            if to <= from {
                return;
            }
            match out.last_mut() {
                Some(l) if l.typ == typ && l.offset + l.length == from => l.length += to - from,
                _ => out.push(AllocExtent {
                    offset: from,
                    length: to - from,
                    typ,
                }),
            }
        };
        let mut cursor = offset;
        let (first, last) = (offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT);
        self.inner.table.visit(first, last, &mut |page, slot| {
            if !matches!(&*slot.0.read(), ZPage::Hole) {
                let start = (page << PAGE_SHIFT).max(offset);
                let stop = ((page + 1) << PAGE_SHIFT).min(end);
                push(&mut out, cursor, start, HOLE | ZERO);
                push(&mut out, start, stop, 0);
                cursor = stop;
            }
        });
        push(&mut out, cursor, end, HOLE | ZERO);
        Ok(out)
    }

    fn stats(&self) -> String {
        let c = &self.inner.counters;
        let packed = c.packed_pages.load(Relaxed);
        let raw = c.raw_pages.load(Relaxed);
        format!(
            "zstd: {} pages stored ({} compressed into {} bytes, {} uncompressed in cache), \
             compression ratio {:.3}",
            packed + raw,
            packed,
            c.packed_bytes.load(Relaxed),
            raw,
            self.ratio()
        )
    }
}
