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
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Which blocks the overlay holds.
#[derive(Default)]
struct BlockMap {
    /// Bitmaps (word index -> 64 bits) of blocks with data in `alloc`.
    present: BTreeMap<u64, u64>,
    /// Disjoint, non-adjacent intervals `start -> end` of blocks that read
    /// as zeros (whole-block zero or trim).
    zeroed: BTreeMap<u64, u64>,
}

/// What the overlay says about a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blk {
    Present,
    Zeroed,
    Below,
}

impl BlockMap {
    fn is_present(&self, blk: u64) -> bool {
        self.present
            .get(&(blk / 64))
            .is_some_and(|w| w & (1 << (blk % 64)) != 0)
    }

    /// The zeroed interval holding `blk`.
    fn zeroed_at(&self, blk: u64) -> Option<(u64, u64)> {
        self.zeroed
            .range(..=blk)
            .next_back()
            .filter(|(_, &e)| e > blk)
            .map(|(&s, &e)| (s, e))
    }

    fn state(&self, blk: u64) -> Blk {
        if self.is_present(blk) {
            Blk::Present
        } else if self.zeroed_at(blk).is_some() {
            Blk::Zeroed
        } else {
            Blk::Below
        }
    }

    /// The first present block at or after `blk`.
    fn next_present(&self, blk: u64) -> Option<u64> {
        for (&w, &bits) in self.present.range(blk / 64..) {
            let bits = if w == blk / 64 {
                bits & (!0u64 << (blk % 64))
            } else {
                bits
            };
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as u64);
            }
        }
        None
    }

    /// The first block at or after `blk` that is not present.
    fn next_absent(&self, blk: u64) -> u64 {
        let mut b = blk;
        loop {
            let bits = self.present.get(&(b / 64)).copied().unwrap_or(0) >> (b % 64);
            let run = (!bits).trailing_zeros() as u64; // present blocks from b
            if run < 64 - b % 64 {
                return b + run;
            }
            b = (b / 64 + 1) * 64;
        }
    }

    /// The first zeroed interval starting after `blk`.
    fn next_zeroed_start(&self, blk: u64) -> Option<u64> {
        self.zeroed.range(blk + 1..).next().map(|(&s, _)| s)
    }

    /// Mark `blk` present, taking it out of any zeroed interval.
    fn mark_present(&mut self, blk: u64) {
        self.unzero(blk, blk + 1);
        *self.present.entry(blk / 64).or_insert(0) |= 1 << (blk % 64);
    }

    /// Take `[a, b)` out of the zeroed intervals.
    fn unzero(&mut self, a: u64, b: u64) {
        let mut hit: Vec<(u64, u64)> = Vec::new();
        if let Some(iv) = self.zeroed_at(a) {
            hit.push(iv);
        }
        hit.extend(self.zeroed.range(a + 1..b).map(|(&s, &e)| (s, e)));
        for (s, e) in hit {
            self.zeroed.remove(&s);
            if s < a {
                self.zeroed.insert(s, a);
            }
            if e > b {
                self.zeroed.insert(b, e);
            }
        }
    }

    /// Make `[a, b)` read as zeros: one interval (merged with its
    /// neighbours), and no block of it present. Returns whether any block
    /// was present (its data must be cleared from the allocator).
    fn zero_blocks(&mut self, a: u64, b: u64) -> bool {
        let mut had = false;
        let words: Vec<u64> = self
            .present
            .range(a / 64..=(b - 1) / 64)
            .map(|(&w, _)| w)
            .collect();
        for w in words {
            let lo = (w * 64).max(a) - w * 64;
            let hi = ((w + 1) * 64).min(b) - w * 64;
            let mask = if hi - lo == 64 {
                !0
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            if let Some(bits) = self.present.get_mut(&w) {
                had |= *bits & mask != 0;
                *bits &= !mask;
                if *bits == 0 {
                    self.present.remove(&w);
                }
            }
        }
        let (mut s, mut e) = (a, b);
        if let Some((ps, pe)) = self.zeroed.range(..=a).next_back().map(|(&s, &e)| (s, e)) {
            if pe >= a {
                s = ps;
                e = e.max(pe);
            }
        }
        let inside: Vec<(u64, u64)> = self.zeroed.range(s..=b).map(|(&s, &e)| (s, e)).collect();
        for (is, ie) in inside {
            self.zeroed.remove(&is);
            e = e.max(ie);
        }
        self.zeroed.insert(s, e);
        had
    }
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
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    /// A layer that refuses every write.
    struct NoWrite(Arc<dyn Backend>);
    impl Backend for NoWrite {
        fn next(&self) -> Option<&dyn Backend> {
            Some(&*self.0)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(false)
        }
        fn pwrite(&self, _: &[u8], _: u64, _: u32) -> Result<()> {
            panic!("cow wrote to the layer below")
        }
        fn zero(&self, _: u64, _: u64, _: u32) -> Result<()> {
            panic!("cow zeroed the layer below")
        }
        fn trim(&self, _: u64, _: u64, _: u32) -> Result<()> {
            panic!("cow trimmed the layer below")
        }
    }

    #[test]
    fn overlay() {
        let below = disk(200_000);
        let f = make(&params(&[("cow-block-size", "4k")])).unwrap();
        let h = f.open(Arc::new(NoWrite(below.clone())), true).unwrap();
        assert!(h.can_write().unwrap());
        h.pwrite(&[1, 2, 3], 4094, 0).unwrap();
        h.zero(10_000, 50_000, 0).unwrap();
        h.trim(5, 199_998, 0).unwrap();
        let mut want: Vec<u8> = (0..200_000u64).map(|i| (i % 251) as u8).collect();
        want[4094..4097].copy_from_slice(&[1, 2, 3]);
        want[50_000..60_000].fill(0);
        want[199_998..].fill(0);
        let mut got = vec![0u8; 200_000];
        h.pread(&mut got, 0, 0).unwrap();
        assert_eq!(got, want);
        // The layer below is unchanged.
        let mut orig = vec![0u8; 8];
        below.pread(&mut orig, 4094, 0).unwrap();
        assert_eq!(orig[0], (4094 % 251) as u8);
        // A second connection sees the same overlay.
        let h2 = f.open(Arc::new(NoWrite(below)), true).unwrap();
        let mut b = [0u8; 3];
        h2.pread(&mut b, 4094, 0).unwrap();
        assert_eq!(b, [1, 2, 3]);
        // Extents cover the request and see the zeroed range.
        let e = h.extents(200_000, 0, 0).unwrap();
        let s = e.as_slice();
        assert_eq!(s[0].offset, 0);
        let last = s.last().unwrap();
        assert_eq!(last.offset + last.length, 200_000);
        assert!(s.iter().any(|x| x.typ & extent_type::ZERO != 0
            && x.offset <= 53_248
            && x.offset + x.length >= 57_344));
        assert!(make(&params(&[("cow-block-size", "1k")])).is_err());
    }

    #[test]
    fn on_read() {
        let below = disk(100_000);
        let f = make(&params(&[("cow-on-read", "true")])).unwrap();
        let h = f.open(below.clone(), false).unwrap();
        let mut b = [0u8; 10];
        h.pread(&mut b, 70_000, 0).unwrap();
        below.pwrite(&[0u8; 10], 70_000, 0).unwrap();
        let mut c = [0u8; 10];
        h.pread(&mut c, 70_000, 0).unwrap();
        assert_eq!(b, c, "copied up on first read");
    }

    #[test]
    fn on_cache_and_req_one() {
        let below = disk(300_000);
        let f = make(&params(&[("cow-on-cache", "true")])).unwrap();
        let h = f.open(below.clone(), false).unwrap();
        h.cache(10, 131_072, 0).unwrap();
        below.pwrite(&[0u8; 10], 131_072, 0).unwrap();
        let mut b = [0u8; 2];
        h.pread(&mut b, 131_073, 0).unwrap();
        assert_eq!(b, [(131_073 % 251) as u8, (131_074 % 251) as u8]);
        h.zero(65536, 0, 0).unwrap();
        let e = h.extents(300_000, 0, flags::REQ_ONE).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e.as_slice()[0].length, 65536);
        assert_eq!(e.as_slice()[0].typ, extent_type::HOLE | extent_type::ZERO);
    }
}
