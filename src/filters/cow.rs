//! The `cow` filter: a writable copy-on-write overlay in RAM over the layer
//! below, as nbdkit-cow-filter. Writes, trims and zeroes go to a sparse
//! allocator shared by all connections; the layer below is never written
//! (it may be read-only). Reads and extents merge the two, block by block.
//! Parameters: `cow-block-size=N` (power of 2, >= 4k, default 64k),
//! `cow-on-read=true|false|/PATH`, `cow-on-cache=true|false`.
//! Example: `nbdscript -r file test.img --filter=cow` (the client may write;
//! the file is untouched; changes vanish at exit).
//! Must not import tokio or rhai.

use super::value;
use super::FilterDef;
use crate::alloc::{Allocator, Sparse};
use crate::backend::{
    budget, extent_type, flags, Backend, BackendError, Errno, Extents, Filter, Result,
};
use crate::params::{ConfigError, Params};
use crate::storage::alloc_error;
use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::Arc;

mod blocks;

use blocks::{Blk, BlockMap};

pub const DEF: FilterDef = FilterDef {
    name: "cow",
    params: &[
        (
            "cow-block-size",
            "overlay block size, a power of 2 >= 4k (default 64k)",
        ),
        (
            "cow-on-read",
            "true: copy read blocks into the overlay; /PATH: only while PATH exists",
        ),
        (
            "cow-on-cache",
            "true: copy cached (prefetched) blocks into the overlay",
        ),
    ],
    description: "writable RAM overlay; the layer below is never written",
    make,
};

#[derive(Debug, Clone)]
enum OnRead {
    Never,
    Always,
    WhilePathExists(PathBuf),
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let bs = value::power_of_2(p, "cow-block-size", "cow")?.unwrap_or(65536);
    if bs < 4096 {
        return Err(ConfigError::new(format!(
            "cow: cow-block-size={bs}: the block size must be at least 4k"
        )));
    }
    if bs > 1 << 30 {
        return Err(ConfigError::new(format!(
            "cow: cow-block-size={bs}: the block size must be at most 1G"
        )));
    }
    let on_read = match p.get("cow-on-read") {
        None => OnRead::Never,
        Some(v) if v.starts_with('/') => OnRead::WhilePathExists(PathBuf::from(v)),
        Some(_) => {
            if value::boolean(p, "cow-on-read", "cow")?.unwrap_or(false) {
                OnRead::Always
            } else {
                OnRead::Never
            }
        }
    };
    Ok(Arc::new(CowFilter {
        overlay: Arc::new(Overlay {
            alloc: Arc::new(Sparse::new()),
            map: RwLock::new(BlockMap::default()),
            write_lock: Mutex::new(()),
            bs,
        }),
        on_read,
        on_cache: value::boolean(p, "cow-on-cache", "cow")?.unwrap_or(false),
    }))
}

/// The process-wide overlay: blocks in `present` are served from `alloc`,
/// blocks in `zeroed` read as zeros, the rest come from the layer below.
/// A block is never in both. Both are ordered, so every walk over a range
/// costs what the overlay holds there, not the range's length: a zero or
/// trim of 2^62 bytes is one interval.
struct Overlay {
    alloc: Arc<dyn Allocator>,
    map: RwLock<BlockMap>,
    /// Serialises read-modify-write of partial blocks.
    write_lock: Mutex<()>,
    bs: u64,
}


pub struct CowFilter {
    overlay: Arc<Overlay>,
    on_read: OnRead,
    on_cache: bool,
}

impl Filter for CowFilter {
    fn name(&self) -> String {
        "cow".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let size = next.get_size()?;
        Ok(Arc::new(CowHandle {
            next,
            ov: self.overlay.clone(),
            size,
            on_read: self.on_read.clone(),
            on_cache: self.on_cache,
        }))
    }
}

struct CowHandle {
    next: Arc<dyn Backend>,
    ov: Arc<Overlay>,
    size: u64,
    on_read: OnRead,
    on_cache: bool,
}

impl CowHandle {
    fn cow_on_read(&self) -> bool {
        match &self.on_read {
            OnRead::Never => false,
            OnRead::Always => true,
            OnRead::WhilePathExists(p) => p.exists(),
        }
    }

    fn state(&self, blk: u64) -> Blk {
        self.ov.map.read().state(blk)
    }

    /// Read `buf` from `offset`, where it lies within one block.
    fn read_in_block(&self, buf: &mut [u8], offset: u64, copy_up: bool) -> Result<()> {
        let blk = offset / self.ov.bs;
        match self.state(blk) {
            Blk::Present => return self.ov.alloc.read(buf, offset).map_err(alloc_error),
            Blk::Zeroed => {
                buf.fill(0);
                return Ok(());
            }
            Blk::Below => {}
        }
        if copy_up {
            let g = self.ov.write_lock.lock();
            if self.state(blk) == Blk::Below {
                let data = self.read_block_below(blk)?;
                self.ov
                    .alloc
                    .write(&data, blk * self.ov.bs)
                    .map_err(alloc_error)?;
                self.ov.map.write().mark_present(blk);
            }
            drop(g);
            return self.read_in_block(buf, offset, false);
        }
        self.next.pread(buf, offset, 0)
    }

    /// The whole block from the layer below (short at the end of the disk).
    fn read_block_below(&self, blk: u64) -> Result<Vec<u8>> {
        let start = blk * self.ov.bs;
        let len = self.ov.bs.min(self.size - start) as usize;
        let mut b = vec![0u8; len];
        self.next.pread(&mut b, start, 0)?;
        Ok(b)
    }

    /// Call `f(offset, len)` for each piece of `[offset, offset+count)`
    /// that lies within one block.
    fn each_piece(
        &self,
        count: u64,
        offset: u64,
        mut f: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut off = offset;
        let end = offset + count;
        while off < end {
            let blk_end = (off / self.ov.bs + 1) * self.ov.bs;
            let n = blk_end.min(end) - off;
            f(off, n)?;
            off += n;
        }
        Ok(())
    }

    /// Write `[off, off+n)`, within one block, into the overlay (`data`
    /// None means zeros): a block not yet present is first copied up
    /// from below (or is known zeros). Called under `write_lock`.
    fn write_piece(&self, data: Option<&[u8]>, n: u64, off: u64) -> Result<()> {
        let bs = self.ov.bs;
        let blk = off / bs;
        let whole = off.is_multiple_of(bs) && (n == bs || off + n == self.size);
        match self.state(blk) {
            Blk::Present => {}
            Blk::Zeroed if data.is_none() => return Ok(()),
            // Zeroed blocks hold nothing in the allocator: it reads zeros.
            Blk::Zeroed => {}
            Blk::Below if whole => {}
            Blk::Below => {
                let below = self.read_block_below(blk)?;
                self.ov.alloc.write(&below, blk * bs).map_err(alloc_error)?;
            }
        }
        match data {
            Some(d) => self.ov.alloc.write(d, off).map_err(alloc_error)?,
            None => self.ov.alloc.zero(n, off).map_err(alloc_error)?,
        }
        self.ov.map.write().mark_present(blk);
        Ok(())
    }

    /// Write into the overlay: whole blocks directly, partial blocks by
    /// first copying the block up.
    fn write_overlay(&self, data: &[u8], offset: u64) -> Result<()> {
        let _g = self.ov.write_lock.lock();
        self.each_piece(data.len() as u64, offset, |off, n| {
            let s = (off - offset) as usize;
            self.write_piece(Some(&data[s..s + n as usize]), n, off)
        })
    }

    /// Zero `[offset, offset+count)`: partial blocks at the edges piece by
    /// piece, the whole blocks between as one zeroed interval (their data
    /// cleared from the allocator, which costs what it holds there).
    fn zero_overlay(&self, count: u64, offset: u64) -> Result<()> {
        let _g = self.ov.write_lock.lock();
        let bs = self.ov.bs;
        let end = offset + count;
        let first = offset.div_ceil(bs);
        // A last block cut short by the end of the disk counts as whole.
        let last = if end == self.size {
            end.div_ceil(bs)
        } else {
            end / bs
        };
        if first >= last {
            return self.each_piece(count, offset, |off, n| self.write_piece(None, n, off));
        }
        let (a, b) = (first * bs, (last * bs).min(end));
        self.each_piece(a - offset, offset, |off, n| self.write_piece(None, n, off))?;
        if self.ov.map.write().zero_blocks(first, last) {
            self.ov.alloc.zero(b - a, a).map_err(alloc_error)?;
        }
        self.each_piece(end - b, b, |off, n| self.write_piece(None, n, off))
    }
}

impl Backend for CowHandle {
    crate::backend::all_capabilities!();
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        // cow-on-read copies up what is read, holes included.
        matches!(self.on_read, OnRead::Never) && self.next.sparse_reads()
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let copy_up = self.cow_on_read();
        self.each_piece(buf.len() as u64, offset, |off, n| {
            let s = (off - offset) as usize;
            self.read_in_block(&mut buf[s..s + n as usize], off, copy_up)
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        self.write_overlay(buf, offset)
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        Ok(())
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        // Trimmed data reads back as zeros here, as in nbdkit's cow filter.
        self.zero(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let _ = flags & flags::FAST_ZERO; // zeroing RAM is always fast
        self.zero_overlay(count, offset)
    }
    fn cache(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        if !self.on_cache {
            return self.next.cache(count, offset, 0).or_else(|e| {
                if e.errno == Errno::NotSup {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        }
        // Copy up every block below not yet in the overlay: work that
        // grows with the length, so it stops at the request's budget.
        let bs = self.ov.bs;
        let end = offset + count;
        let mut blk = offset / bs;
        while blk * bs < end {
            budget::check(
                "cow: cache (cow-on-cache)",
                (blk * bs).saturating_sub(offset),
                count,
            )?;
            let map = self.ov.map.read();
            match map.state(blk) {
                Blk::Zeroed => {
                    blk = map.zeroed_at(blk).map_or(blk + 1, |(_, e)| e);
                    continue;
                }
                Blk::Present => {
                    blk = map.next_absent(blk);
                    continue;
                }
                Blk::Below => drop(map),
            }
            let mut one = [0u8; 1];
            self.read_in_block(&mut one, blk * bs, true)?;
            blk += 1;
        }
        Ok(())
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let bs = self.ov.bs;
        let end = offset + count;
        let mut e = Extents::new(offset, count);
        let mut off = offset;
        while off < end && !e.is_full() {
            let blk = off / bs;
            // A run of blocks in the same state, found from the maps (no
            // walk over blocks the overlay does not hold).
            let (state, run_end) = {
                let map = self.ov.map.read();
                let state = map.state(blk);
                let run_blk = match state {
                    Blk::Zeroed => map.zeroed_at(blk).map_or(blk + 1, |(_, e)| e),
                    Blk::Present => map.next_absent(blk),
                    Blk::Below => {
                        let p = map.next_present(blk).unwrap_or(u64::MAX);
                        let z = map.next_zeroed_start(blk).unwrap_or(u64::MAX);
                        p.min(z)
                    }
                };
                (state, run_blk.saturating_mul(bs).min(end))
            };
            match state {
                Blk::Zeroed => e.add(off, run_end - off, extent_type::HOLE | extent_type::ZERO)?,
                Blk::Present => {
                    for x in self
                        .ov
                        .alloc
                        .extents(run_end - off, off)
                        .map_err(alloc_error)?
                    {
                        e.add(x.offset, x.length, x.typ)?;
                    }
                }
                Blk::Below => {
                    let got = self
                        .next
                        .extents(run_end - off, off, flags & !flags::REQ_ONE)?;
                    if got.is_empty() {
                        return Err(BackendError::io("cow: the layer below returned no extents"));
                    }
                    for x in got.as_slice() {
                        e.add(x.offset, x.length, x.typ)?;
                    }
                    if e.next_offset() < run_end {
                        break;
                    }
                }
            }
            if flags & flags::REQ_ONE != 0 {
                break;
            }
            off = run_end;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests;
