//! The `sparse` allocator: 32 KiB pages (nbdkit's SPARSE_PAGE) in a
//! lock-free radix page table addressing up to 2^63 bytes. Each page has its
//! own `RwLock`, so readers never wait for writers of other pages and
//! allocating a page only touches that page. Unwritten pages read as zeros
//! and report `HOLE|ZERO`; pages that become all zero (zero, trim, or a
//! write of zeros) are freed.
//! Must not import anything outside `alloc`.

use super::table::{chunks, is_zero, PageTable, PAGE, PAGE_SHIFT};
use super::{AllocError, AllocExtent, AllocUsage, Allocator, Result, HOLE, MAX_SIZE, ZERO};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

type Page = Box<[u8; PAGE]>;

#[derive(Default)]
struct Slot(RwLock<Option<Page>>);

fn new_page() -> Page {
    // vec! of zeros is calloc: the kernel hands out zero pages lazily.
    match vec![0u8; PAGE].into_boxed_slice().try_into() {
        Ok(p) => p,
        Err(_) => unreachable_page(),
    }
}

#[cold]
fn unreachable_page() -> Page {
    Box::new([0u8; PAGE])
}

pub struct Sparse {
    table: PageTable<Slot>,
    /// Bytes addressable (a multiple of PAGE, at most 2^63).
    limit: u64,
    pages: AtomicU64,
}

impl Default for Sparse {
    fn default() -> Self {
        Self::new()
    }
}

impl Sparse {
    /// A sparse array addressing the full 2^63 bytes.
    pub fn new() -> Self {
        Self::with_size(MAX_SIZE)
    }

    /// A sparse array for a disk of `size` bytes (the page table is made
    /// only as deep as that needs).
    pub fn with_size(size: u64) -> Self {
        let pages = size.min(MAX_SIZE).div_ceil(PAGE as u64).max(1);
        let table = PageTable::new(pages);
        let limit = table.capacity().saturating_mul(PAGE as u64).min(1 << 63);
        Sparse {
            table,
            limit,
            pages: AtomicU64::new(0),
        }
    }

    fn check(&self, count: u64, offset: u64) -> Result<()> {
        match offset.checked_add(count) {
            Some(end) if end <= self.limit => Ok(()),
            _ => Err(AllocError::Range(format!(
                "sparse: request of {count} bytes at offset {offset} is beyond the {} byte limit",
                self.limit
            ))),
        }
    }

    /// Free the page if it is held and all zero after `f` changed it.
    fn free_if_zero(&self, slot: &mut Option<Page>, whole: bool) {
        if slot.as_ref().is_some_and(|p| whole || is_zero(&p[..])) {
            *slot = None;
            self.pages.fetch_sub(1, Relaxed);
        }
    }

    /// Zero `[inpg, inpg+len)` of an existing page, freeing it when it
    /// becomes all zero.
    fn zero_in(&self, slot: &Slot, inpg: usize, len: usize) {
        let mut g = slot.0.write();
        if let Some(p) = g.as_mut() {
            if len < PAGE {
                p[inpg..inpg + len].fill(0);
            }
            self.free_if_zero(&mut g, len == PAGE);
        }
    }

    /// Change `[inpg, inpg+len)` of a page with `f`, allocating it.
    fn modify(&self, page: u64, f: impl FnOnce(&mut [u8; PAGE])) -> Result<()> {
        let slot = self
            .table
            .get_or_create(page)
            .ok_or_else(|| AllocError::Range(format!("sparse: page {page} out of range")))?;
        let mut g = slot.0.write();
        let p = g.get_or_insert_with(|| {
            self.pages.fetch_add(1, Relaxed);
            new_page()
        });
        f(p);
        Ok(())
    }

    /// Pages currently holding memory.
    pub fn allocated_pages(&self) -> u64 {
        self.pages.load(Relaxed)
    }
}

impl Allocator for Sparse {
    fn name(&self) -> &'static str {
        "sparse"
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        for c in chunks(offset, buf.len() as u64, PAGE_SHIFT) {
            let out = &mut buf[c.done..c.done + c.len];
            match self.table.get(c.page) {
                Some(slot) => match &*slot.0.read() {
                    Some(p) => out.copy_from_slice(&p[c.inpg..c.inpg + c.len]),
                    None => out.fill(0),
                },
                None => out.fill(0),
            }
        }
        Ok(())
    }

    fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        for c in chunks(offset, buf.len() as u64, PAGE_SHIFT) {
            let data = &buf[c.done..c.done + c.len];
            if is_zero(data) {
                if let Some(slot) = self.table.get(c.page) {
                    self.zero_in(slot, c.inpg, c.len);
                }
            } else {
                self.modify(c.page, |p| p[c.inpg..c.inpg + c.len].copy_from_slice(data))?;
            }
        }
        Ok(())
    }

    fn fill(&self, byte: u8, count: u64, offset: u64) -> Result<()> {
        if byte == 0 {
            return self.zero(count, offset);
        }
        self.check(count, offset)?;
        for c in chunks(offset, count, PAGE_SHIFT) {
            self.modify(c.page, |p| p[c.inpg..c.inpg + c.len].fill(byte))?;
        }
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64) -> Result<()> {
        self.check(count, offset)?;
        if count == 0 {
            return Ok(());
        }
        let end = offset + count;
        let (first, last) = (offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT);
        self.table.visit(first, last, &mut |page, slot| {
            let start = (page << PAGE_SHIFT).max(offset);
            let stop = ((page + 1) << PAGE_SHIFT).min(end);
            let inpg = (start & (PAGE as u64 - 1)) as usize;
            self.zero_in(slot, inpg, (stop - start) as usize);
        });
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
        self.table.visit(first, last, &mut |page, slot| {
            if slot.0.read().is_some() {
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

    fn usage(&self) -> AllocUsage {
        let n = self.allocated_pages() * PAGE as u64;
        AllocUsage {
            stored: n,
            used: n,
            compressed: false,
        }
    }

    fn stats(&self) -> String {
        let n = self.allocated_pages();
        format!(
            "sparse: {n} pages of 32 KiB allocated ({} bytes)",
            n * PAGE as u64
        )
    }
}
