//! The `zstd` allocator: 32 KiB pages kept zstd-compressed in the lock-free
//! page table of `table.rs`, each page behind its own `RwLock`, so requests
//! to different pages run in parallel. Writes land in a small sharded
//! write-back cache of uncompressed pages, compressed when evicted at
//! level 4 straight away, so memory tracks the compressed size while
//! writing (an entropy estimate first decides whether the page is worth
//! compressing: random and near-random data cost no compression time, and
//! a page known to gain nothing has only its changed blocks sampled); a whole-page
//! overwrite never decompresses; pages that become all zero are holes, and
//! never-written pages cost nothing to read. When the disk has been idle for
//! a moment a background thread (`compact.rs`) compresses the cache, tries
//! kept-as-is pages again and re-packs pages as 4 KiB sub-frames where
//! that costs at most 1% (`codec.rs`), so small reads decompress 4 KiB
//! instead of 32. Frames leave out trailing zeros (a read zero-fills them).
//! Must not import anything outside `alloc`.

mod codec;
mod compact;
mod stats;

use super::table::{chunks, is_zero, PageTable, PAGE, PAGE_SHIFT};
use super::{AllocError, AllocExtent, AllocUsage, Allocator, Result, HOLE, MAX_SIZE, ZERO};
use codec::{new_raw, Raw};
use parking_lot::{Mutex, RwLock};
use stats::Counters;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};

const SHARDS: usize = 16;
/// Uncompressed pages kept per shard (16 x 4 x 32 KiB = 2 MiB): enough
/// for sequential small writes to fill a page before it is compressed,
/// small next to what the disk holds.
const SHARD_PAGES: usize = 4;

/// How a packed page holds its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// One zstd frame; not yet tried as sub-frames.
    Frame,
    /// One zstd frame; sub-frames would cost more than 1%.
    Whole,
    /// 8 independent 4 KiB sub-frames (`codec::split`).
    Split,
    /// The page as it is: zstd could not shrink it.
    Stored,
    /// The page as it is because its byte histograms promised too little
    /// (`codec::worth_compressing`); the compactor tries it when idle.
    Sampled,
}

impl Form {
    fn is_raw(self) -> bool {
        matches!(self, Form::Stored | Form::Sampled)
    }
    /// The compactor still has work on a page of this form.
    fn pending(self) -> bool {
        matches!(self, Form::Frame | Form::Sampled)
    }
}

#[derive(Default)]
enum ZPage {
    #[default]
    Hole,
    /// Uncompressed, in the write-back cache; the mask names the 4 KiB
    /// blocks known to gain nothing from zstd (unchanged since the page was
    /// kept as it is or packed saving less than MIN_GAIN), which
    /// `codec::worth_compressing` then need not sample again.
    Raw(Raw, u8),
    Packed {
        data: Box<[u8]>,
        form: Form,
        /// Unique in the process (`codec::next_gen`): names these bytes
        /// in a thread's decompressed-page buffer.
        gen: u64,
    },
}

fn packed(data: Box<[u8]>, form: Form) -> ZPage {
    ZPage::Packed {
        data,
        form,
        gen: codec::next_gen(),
    }
}

#[derive(Default)]
struct Slot(RwLock<ZPage>);

/// Uncompressed pages kept for reuse, so the page churn of the write-back
/// cache does not spread free memory over every thread's malloc arena.
const POOL: usize = 16;

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
        let dirty = blocks(inpg, len);
        if let ZPage::Raw(r, known) = &mut *g {
            *known &= !dirty;
            apply(r, inpg, len, &change);
            if zero && (whole || is_zero(&r[..])) {
                self.set(&mut g, ZPage::Hole);
            }
            return Ok(());
        }
        if zero && matches!(*g, ZPage::Hole) {
            return Ok(());
        }
        let old = std::mem::take(&mut *g);
        self.counters.add(&old, -1);
        // Blocks of a page that gained (almost) nothing stay as they were.
        let known = match &old {
            ZPage::Packed { data, .. } if data.len() + codec::MIN_GAIN > PAGE => !dirty,
            _ => 0,
        };
        let mut raw = match old {
            ZPage::Packed { data, form, .. } if form.is_raw() && data.len() == PAGE => {
                // Reuse the stored page's memory: no copy, no decompression.
                match data.try_into() {
                    Ok(r) => r,
                    Err(_) => new_raw(),
                }
            }
            old => {
                let mut raw = self.take_raw(matches!(old, ZPage::Hole) && !whole);
                if let ZPage::Packed { data, form, gen } = &old {
                    if !whole {
                        let got = if *form == Form::Split {
                            codec::unpack(data, true, &mut raw)
                        } else {
                            codec::with_page(*gen, data, |p| raw.copy_from_slice(&p[..]))
                        };
                        if let Err(e) = got {
                            self.counters.add(&old, 1);
                            *g = old;
                            self.give_raw(raw);
                            return Err(e);
                        }
                    }
                }
                raw
            }
        };
        apply(&mut raw, inpg, len, &change);
        if zero && (whole || is_zero(&raw[..])) {
            self.give_raw(raw);
            return Ok(());
        }
        *g = ZPage::Raw(raw, known);
        self.counters.add(&g, 1);
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
            self.pack(v, true)?;
        }
        Ok(())
    }

    /// Compress `page` if it is uncompressed (`sample`: let byte histograms
    /// decide whether to try).
    fn pack(&self, page: u64, sample: bool) -> Result<()> {
        let Some(slot) = self.table.get(page) else {
            return Ok(());
        };
        let mut g = slot.0.write();
        if !matches!(*g, ZPage::Raw(..)) {
            return Ok(());
        }
        let old = std::mem::take(&mut *g);
        self.counters.add(&old, -1);
        if let ZPage::Raw(r, known) = old {
            let new = self.encode(r, if sample { Some(known) } else { None });
            self.counters.add(&new, 1);
            *g = new;
        }
        Ok(())
    }

    /// The stored form of an uncompressed page: a hole, one zstd frame at
    /// LEVEL, or the page itself when zstd cannot shrink it (with
    /// `sample`, the mask of blocks known to gain nothing, byte histograms
    /// decide first, so random data costs little).
    fn encode(&self, r: Raw, sample: Option<u8>) -> ZPage {
        if is_zero(&r[..]) {
            self.give_raw(r);
            return ZPage::Hole;
        }
        if sample.is_some_and(|known| !codec::worth_compressing(&r, known)) {
            return packed(r, Form::Sampled);
        }
        match codec::compress(&r[..]) {
            Ok(c) if c.len() < PAGE => {
                self.give_raw(r);
                packed(c, Form::Frame)
            }
            _ => packed(r, Form::Stored),
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
}

/// The mask of the 4 KiB blocks `[inpg, inpg + len)` touches.
fn blocks(inpg: usize, len: usize) -> u8 {
    if len == 0 {
        return 0;
    }
    let (a, b) = (inpg / codec::SUB, (inpg + len - 1) / codec::SUB);
    ((0xffu16 << a) & (0xffu16 >> (7 - b))) as u8
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
        // If the thread cannot start, pages simply stay as first packed.
        let _ = std::thread::Builder::new()
            .name("zstd-compact".into())
            .spawn(move || compact::compactor(weak, rx));
        Zstd { inner, _stop: tx }
    }

    /// Do now what the idle thread does: compress the cache, retry pages
    /// kept as they are, split pages into sub-frames where that is cheap.
    pub fn compact(&self) {
        self.inner.compact();
    }

    /// Pages the compactor has not finished with (0 once it ran undisturbed).
    pub fn pending_pages(&self) -> u64 {
        let c = &self.inner.counters;
        c.pending_pages.load(Relaxed) + c.raw_pages.load(Relaxed)
    }

    /// Pages held as 4 KiB sub-frames.
    pub fn split_pages(&self) -> u64 {
        self.inner.counters.split_pages.load(Relaxed)
    }

    /// Logical bytes stored / bytes of memory they take.
    pub fn ratio(&self) -> f64 {
        self.inner.stats().ratio()
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
                ZPage::Raw(r, _) => out.copy_from_slice(&r[c.inpg..c.inpg + c.len]),
                ZPage::Packed { data, form, gen } => match form {
                    Form::Stored | Form::Sampled => {
                        out.copy_from_slice(&data[c.inpg..c.inpg + c.len])
                    }
                    Form::Split => codec::read_split(data, c.inpg, out)?,
                    // A whole page: straight into the reply, no copy kept.
                    _ if c.len == PAGE => codec::decompress(data, out)?,
                    Form::Frame | Form::Whole => codec::with_page(*gen, data, |p| {
                        out.copy_from_slice(&p[c.inpg..c.inpg + c.len])
                    })?,
                },
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
        let push = AllocExtent::push_merged;
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

    fn flush(&self) -> Result<()> {
        self.inner.pack_cache();
        Ok(())
    }

    fn stats(&self) -> String {
        self.inner.stats().line()
    }

    fn usage(&self) -> AllocUsage {
        let u = self.inner.stats();
        AllocUsage {
            stored: u.stored,
            used: u.used,
            compressed: true,
        }
    }
}

#[cfg(test)]
mod tests;
