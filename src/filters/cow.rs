//! The `cow` filter: a writable copy-on-write overlay in RAM over the layer
//! below, as nbdkit-cow-filter. Writes, trims and zeroes go to a sparse
//! allocator shared by all connections; the layer below is never written
//! (it may be read-only). Reads and extents merge the two, block by block.
//! Parameters: `cow-block-size=N` (power of 2, >= 4k, default 64k),
//! `cow-on-read=true|false|/PATH`, `cow-on-cache=true|false`.
//! Example: `nbdscript -r file test.img --filter=cow` (the client may write;
//! the file is untouched; changes vanish at exit).
//! Must not import tokio or rhai.

use super::common;
use super::FilterDef;
use crate::alloc::{Allocator, Sparse};
use crate::backend::{extent_type, flags, Backend, BackendError, Errno, Extents, Filter, Result};
use crate::params::{ConfigError, Params};
use crate::plugins::memory::alloc_error;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
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
    let bs = common::power_of_2(p, "cow-block-size", "cow")?.unwrap_or(65536);
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
            if common::boolean(p, "cow-on-read", "cow")?.unwrap_or(false) {
                OnRead::Always
            } else {
                OnRead::Never
            }
        }
    };
    Ok(Arc::new(CowFilter {
        overlay: Arc::new(Overlay {
            alloc: Arc::new(Sparse::new()),
            present: RwLock::new(HashMap::new()),
            zeroed: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            bs,
        }),
        on_read,
        on_cache: common::boolean(p, "cow-on-cache", "cow")?.unwrap_or(false),
    }))
}

/// The process-wide overlay: blocks in `present` are served from `alloc`.
struct Overlay {
    alloc: Arc<dyn Allocator>,
    /// Bitmaps (word index -> 64 bits) of blocks present in the overlay,
    /// and of those known to be all zeros (whole-block zero or trim).
    present: RwLock<HashMap<u64, u64>>,
    zeroed: RwLock<HashMap<u64, u64>>,
    /// Serialises read-modify-write of partial blocks.
    write_lock: Mutex<()>,
    bs: u64,
}

impl Overlay {
    fn is_present(&self, blk: u64) -> bool {
        self.present
            .read()
            .get(&(blk / 64))
            .is_some_and(|w| w & (1 << (blk % 64)) != 0)
    }
    fn mark(&self, blk: u64) {
        *self.present.write().entry(blk / 64).or_insert(0) |= 1 << (blk % 64);
    }
    fn is_zeroed(&self, blk: u64) -> bool {
        self.zeroed
            .read()
            .get(&(blk / 64))
            .is_some_and(|w| w & (1 << (blk % 64)) != 0)
    }
    fn set_zeroed(&self, blk: u64, z: bool) {
        let mut m = self.zeroed.write();
        let w = m.entry(blk / 64).or_insert(0);
        if z {
            *w |= 1 << (blk % 64);
        } else {
            *w &= !(1 << (blk % 64));
        }
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

    /// Read `buf` from `offset`, where it lies within one block.
    fn read_in_block(&self, buf: &mut [u8], offset: u64, copy_up: bool) -> Result<()> {
        let blk = offset / self.ov.bs;
        if self.ov.is_present(blk) {
            return self.ov.alloc.read(buf, offset).map_err(alloc_error);
        }
        if copy_up {
            let _g = self.ov.write_lock.lock();
            if !self.ov.is_present(blk) {
                let data = self.read_block_below(blk)?;
                self.ov
                    .alloc
                    .write(&data, blk * self.ov.bs)
                    .map_err(alloc_error)?;
                self.ov.mark(blk);
            }
            return self.ov.alloc.read(buf, offset).map_err(alloc_error);
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

    /// Write into the overlay: whole blocks directly, partial blocks by
    /// first copying the block up. `data` None means zeros.
    fn write_overlay(&self, data: Option<&[u8]>, count: u64, offset: u64) -> Result<()> {
        let _g = self.ov.write_lock.lock();
        let bs = self.ov.bs;
        self.each_piece(count, offset, |off, n| {
            let blk = off / bs;
            let whole = off % bs == 0 && (n == bs || off + n == self.size);
            if !whole && !self.ov.is_present(blk) {
                let below = self.read_block_below(blk)?;
                self.ov.alloc.write(&below, blk * bs).map_err(alloc_error)?;
            }
            self.ov.set_zeroed(blk, data.is_none() && whole);
            match data {
                Some(d) => {
                    let s = (off - offset) as usize;
                    self.ov
                        .alloc
                        .write(&d[s..s + n as usize], off)
                        .map_err(alloc_error)?
                }
                None => self.ov.alloc.zero(n, off).map_err(alloc_error)?,
            }
            self.ov.mark(blk);
            Ok(())
        })
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
        self.write_overlay(Some(buf), buf.len() as u64, offset)
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
        self.write_overlay(None, count, offset)
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
        let bs = self.ov.bs;
        let mut blk = offset / bs;
        let end = offset + count;
        while blk * bs < end {
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
        while off < end {
            let present = self.ov.is_present(off / bs);
            // A run of blocks with the same presence.
            let mut run_end = ((off / bs) + 1) * bs;
            while run_end < end
                && self.ov.is_present(run_end / bs) == present
                && !(present && self.ov.is_zeroed(run_end / bs))
            {
                run_end += bs;
            }
            let run_end = run_end.min(end);
            if present && self.ov.is_zeroed(off / bs) {
                let mut z_end = ((off / bs) + 1) * bs;
                while z_end < end && self.ov.is_present(z_end / bs) && self.ov.is_zeroed(z_end / bs)
                {
                    z_end += bs;
                }
                let z_end = z_end.min(end);
                e.add(off, z_end - off, extent_type::HOLE | extent_type::ZERO)?;
                if flags & flags::REQ_ONE != 0 {
                    break;
                }
                off = z_end;
                continue;
            }
            if present {
                for x in self
                    .ov
                    .alloc
                    .extents(run_end - off, off)
                    .map_err(alloc_error)?
                {
                    e.add(x.offset, x.length, x.typ)?;
                }
            } else {
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
