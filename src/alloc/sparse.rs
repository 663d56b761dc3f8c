//! The sparse allocator (placeholder): 32 KiB pages in a hash map under one
//! lock. To be replaced by the page-table allocator of the storage issue.
//! Must not import anything outside `alloc`.

use super::{AllocExtent, Allocator, Result, HOLE, ZERO};
use parking_lot::RwLock;
use std::collections::HashMap;

const PAGE: u64 = 32768;

#[derive(Default)]
pub struct Sparse {
    pages: RwLock<HashMap<u64, Box<[u8]>>>,
}

impl Sparse {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply `f(page_bytes, in_page_offset, buf_range)` page by page.
    fn each(count: u64, offset: u64, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut done = 0u64;
        while done < count {
            let off = offset + done;
            let page = off / PAGE;
            let inpg = (off % PAGE) as usize;
            let n = ((PAGE - inpg as u64).min(count - done)) as usize;
            f(page, inpg, done as usize, n);
            done += n as u64;
        }
    }
}

impl Allocator for Sparse {
    fn name(&self) -> &'static str {
        "sparse"
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let pages = self.pages.read();
        Self::each(buf.len() as u64, offset, |p, inpg, b, n| {
            match pages.get(&p) {
                Some(pg) => buf[b..b + n].copy_from_slice(&pg[inpg..inpg + n]),
                None => buf[b..b + n].fill(0),
            }
        });
        Ok(())
    }

    fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut pages = self.pages.write();
        Self::each(buf.len() as u64, offset, |p, inpg, b, n| {
            let pg = pages
                .entry(p)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            pg[inpg..inpg + n].copy_from_slice(&buf[b..b + n]);
        });
        Ok(())
    }

    fn fill(&self, byte: u8, count: u64, offset: u64) -> Result<()> {
        if byte == 0 {
            return self.zero(count, offset);
        }
        let mut pages = self.pages.write();
        Self::each(count, offset, |p, inpg, _b, n| {
            let pg = pages
                .entry(p)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            pg[inpg..inpg + n].fill(byte);
        });
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64) -> Result<()> {
        let mut pages = self.pages.write();
        Self::each(count, offset, |p, inpg, _b, n| {
            if n as u64 == PAGE {
                pages.remove(&p);
            } else if let Some(pg) = pages.get_mut(&p) {
                pg[inpg..inpg + n].fill(0);
                if pg.iter().all(|&x| x == 0) {
                    pages.remove(&p);
                }
            }
        });
        Ok(())
    }

    fn extents(&self, count: u64, offset: u64) -> Result<Vec<AllocExtent>> {
        let pages = self.pages.read();
        let mut out: Vec<AllocExtent> = Vec::new();
        Self::each(count, offset, |p, _inpg, b, n| {
            let typ = match pages.get(&p) {
                None => HOLE | ZERO,
                Some(pg) if pg.iter().all(|&x| x == 0) => ZERO,
                Some(_) => 0,
            };
            match out.last_mut() {
                Some(l) if l.typ == typ => l.length += n as u64,
                _ => out.push(AllocExtent {
                    offset: offset + b as u64,
                    length: n as u64,
                    typ,
                }),
            }
        });
        Ok(out)
    }
}
