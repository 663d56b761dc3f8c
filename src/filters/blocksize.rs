//! The `blocksize` filter: meet the block-size limits of the layer below
//! whatever the client sends, as nbdkit-blocksize-filter: reads are
//! widened to `minblock` alignment, unaligned heads and tails of writes and
//! zeroes are read-modify-write, unaligned trim edges are ignored, and
//! requests are split at `maxdata` (read/write) or `maxlen` (the rest).
//! The size is rounded down to `minblock`.
//! Parameters: `minblock=` (power of 2 <= 64k; default the minimum below,
//! or 1), `maxdata=` (default 64M or the maximum below), `maxlen=`
//! (default: no limit; trim, zero and cache are not split).
//! Example: `nbdscript file disk.img --filter=blocksize minblock=4k maxdata=1M`.
//! Must not import tokio or rhai.

use super::value;
use super::FilterDef;
use crate::backend::{
    budget, flags, Backend, BackendError, BlockSize, Errno, Extents, Filter, FuaMode, Result,
};
use crate::params::{ConfigError, Params};
use parking_lot::Mutex;
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "blocksize",
    params: &[
        ("minblock", "alignment passed below, a power of 2 <= 64k"),
        (
            "maxdata",
            "largest read or write passed below (default 64M)",
        ),
        (
            "maxlen",
            "largest trim, zero, cache or extents passed below (default: no limit)",
        ),
    ],
    description: "align and split requests for the layer below",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let minblock = value::power_of_2(p, "minblock", "blocksize")?;
    if let Some(m) = minblock {
        if m > 65536 {
            return Err(ConfigError::new(format!(
                "blocksize: minblock={m}: must be at most 64k"
            )));
        }
    }
    let maxdata = value::size(p, "maxdata", "blocksize")?;
    let maxlen = value::size(p, "maxlen", "blocksize")?;
    for (k, v) in [("maxdata", maxdata), ("maxlen", maxlen)] {
        match (v, minblock) {
            (Some(0), _) => {
                return Err(ConfigError::new(format!(
                    "blocksize: {k}=0: must be positive"
                )))
            }
            (Some(x), Some(m)) if x % m != 0 => {
                return Err(ConfigError::new(format!(
                    "blocksize: {k}={x}: must be a multiple of minblock={m}"
                )))
            }
            (Some(x), _) if x > u32::MAX as u64 => {
                return Err(ConfigError::new(format!(
                    "blocksize: {k}={x}: must be at most 4G-1"
                )))
            }
            _ => {}
        }
    }
    Ok(Arc::new(BlocksizeFilter {
        minblock,
        maxdata,
        maxlen,
    }))
}

pub struct BlocksizeFilter {
    minblock: Option<u64>,
    maxdata: Option<u64>,
    maxlen: Option<u64>,
}

impl Filter for BlocksizeFilter {
    fn name(&self) -> String {
        "blocksize".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let below = next.block_size()?;
        let minb = match self.minblock {
            Some(m) => m,
            None => below
                .map(|b| b.minimum as u64)
                .filter(|m| m.is_power_of_two() && *m <= 65536)
                .unwrap_or(1),
        };
        let round = |x: u64| (x / minb * minb).max(minb);
        let maxdata = match self.maxdata {
            Some(m) => m,
            None => {
                let lim = below.map_or(64 << 20, |b| (b.maximum as u64).min(64 << 20));
                round(lim)
            }
        };
        // No maxlen: trim, zero and cache pass through unsplit (every
        // layer takes 64-bit lengths; a client without extended headers
        // sends at most 4G-1 anyway).
        let maxlen = self.maxlen.unwrap_or(u64::MAX / minb * minb);
        if maxdata % minb != 0 || !maxlen.is_multiple_of(minb) {
            return Err(BackendError::inval(format!(
                "blocksize: maxdata={maxdata} and maxlen={maxlen} must be multiples of minblock={minb}"
            )));
        }
        let size = next.get_size()? / minb * minb;
        Ok(Arc::new(BlocksizeHandle {
            next,
            minb,
            maxdata,
            maxlen,
            size,
            rmw: Mutex::new(()),
        }))
    }
}

struct BlocksizeHandle {
    next: Arc<dyn Backend>,
    minb: u64,
    maxdata: u64,
    maxlen: u64,
    size: u64,
    /// Serialises read-modify-write cycles.
    rmw: Mutex<()>,
}

impl BlocksizeHandle {
    /// Split `[offset, offset+count)` into an unaligned head, an aligned
    /// middle and an unaligned tail: (head_len, middle_len, tail_len).
    fn split(&self, count: u64, offset: u64) -> (u64, u64, u64) {
        let m = self.minb;
        let head = if offset.is_multiple_of(m) {
            0
        } else {
            (m - offset % m).min(count)
        };
        let rest = count - head;
        let tail = rest % m;
        (head, rest - tail, tail)
    }

    /// Read-modify-write the block holding `[offset, offset+len)`:
    /// `data` None writes zeros.
    fn rmw(&self, data: Option<&[u8]>, len: u64, offset: u64, f: u32) -> Result<()> {
        let _g = self.rmw.lock();
        let start = offset / self.minb * self.minb;
        let mut block = vec![0u8; self.minb as usize];
        self.next.pread(&mut block, start, 0)?;
        let s = (offset - start) as usize;
        match data {
            Some(d) => block[s..s + len as usize].copy_from_slice(d),
            None => block[s..s + len as usize].fill(0),
        }
        self.next.pwrite(&block, start, f & flags::FUA)
    }

    /// Run a split request: with FUA emulated below, the pieces go down
    /// without it and one flush follows (nbdkit's blocksize filter), not
    /// a flush per piece.
    fn fua_once(&self, f: u32, op: impl FnOnce(u32) -> Result<()>) -> Result<()> {
        if f & flags::FUA != 0 && self.next.can_fua()? == FuaMode::Emulate {
            op(f & !flags::FUA)?;
            return self.next.flush(0);
        }
        op(f)
    }

    fn write_split(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        let (head, mid, tail) = self.split(buf.len() as u64, offset);
        if head > 0 {
            self.rmw(Some(&buf[..head as usize]), head, offset, f)?;
        }
        Self::chunks(
            "blocksize: write",
            mid,
            offset + head,
            self.maxdata,
            |o, n| {
                let s = (o - offset) as usize;
                self.next.pwrite(&buf[s..s + n as usize], o, f)
            },
        )?;
        if tail > 0 {
            let o = offset + head + mid;
            let s = (o - offset) as usize;
            self.rmw(Some(&buf[s..]), tail, o, f)?;
        }
        Ok(())
    }
    fn zero_split(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let (head, mid, tail) = self.split(count, offset);
        if f & flags::FAST_ZERO != 0 && (head > 0 || tail > 0) {
            return Err(BackendError::new(
                Errno::NotSup,
                "blocksize: an unaligned fast zero needs read-modify-write",
            ));
        }
        if head > 0 {
            self.rmw(None, head, offset, f)?;
        }
        Self::chunks(
            "blocksize: zero",
            mid,
            offset + head,
            self.maxlen,
            |o, n| self.next.zero(n, o, f),
        )?;
        if tail > 0 {
            self.rmw(None, tail, offset + head + mid, f)?;
        }
        Ok(())
    }
    fn trim_split(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let (head, mid, _) = self.split(count, offset);
        Self::chunks(
            "blocksize: trim",
            mid,
            offset + head,
            self.maxlen,
            |o, n| self.next.trim(n, o, f),
        )
    }
    /// Call `op(offset, len)` over `[offset, offset+count)` in pieces of at
    /// most `max`, within the request's time budget (a 2^62-byte zero
    /// split at a small `maxlen` is billions of calls).
    fn chunks(
        what: &str,
        count: u64,
        offset: u64,
        max: u64,
        mut op: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < count {
            if done > 0 {
                budget::check(what, done, count)?;
            }
            let n = (count - done).min(max);
            op(offset + done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl Backend for BlocksizeHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(Some(BlockSize {
            minimum: 1,
            preferred: (self.minb as u32).max(4096),
            maximum: 0xffff_ffff,
        }))
    }
    fn pread(&self, buf: &mut [u8], offset: u64, f: u32) -> Result<()> {
        let (head, mid, tail) = self.split(buf.len() as u64, offset);
        if head > 0 {
            let start = offset / self.minb * self.minb;
            let mut block = vec![0u8; self.minb as usize];
            self.next.pread(&mut block, start, f)?;
            let s = (offset - start) as usize;
            buf[..head as usize].copy_from_slice(&block[s..s + head as usize]);
        }
        Self::chunks(
            "blocksize: read",
            mid,
            offset + head,
            self.maxdata,
            |o, n| {
                let s = (o - offset) as usize;
                self.next.pread(&mut buf[s..s + n as usize], o, f)
            },
        )?;
        if tail > 0 {
            let o = offset + head + mid;
            let mut block = vec![0u8; self.minb as usize];
            self.next.pread(&mut block, o, f)?;
            let s = (o - offset) as usize;
            buf[s..].copy_from_slice(&block[..tail as usize]);
        }
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        self.fua_once(f, |f| self.write_split(buf, offset, f))
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.fua_once(f, |f| self.zero_split(count, offset, f))
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.fua_once(f, |f| self.trim_split(count, offset, f))
    }
    fn cache(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let start = offset / self.minb * self.minb;
        let end = (offset + count).div_ceil(self.minb) * self.minb;
        Self::chunks(
            "blocksize: cache",
            end.min(self.size) - start,
            start,
            self.maxlen,
            |o, n| self.next.cache(n, o, f),
        )
    }
    fn extents(&self, count: u64, offset: u64, f: u32) -> Result<Extents> {
        let start = offset / self.minb * self.minb;
        let end = (offset + count).div_ceil(self.minb) * self.minb;
        let len = (end.min(self.size) - start).min(self.maxlen);
        let got = self.next.extents(len, start, f)?;
        let mut e = Extents::new(offset, count);
        for x in got.as_slice() {
            e.add(x.offset, x.length, x.typ)?;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    /// Refuses requests that are unaligned to 512 or bigger than 4096.
    struct Strict(Arc<dyn Backend>);
    impl Strict {
        fn ok(&self, count: u64, offset: u64, max: u64) -> Result<()> {
            if !count.is_multiple_of(512) || !offset.is_multiple_of(512) || count > max {
                panic!("bad request count={count} offset={offset}");
            }
            Ok(())
        }
    }
    impl Backend for Strict {
        fn next(&self) -> Option<&dyn Backend> {
            Some(&*self.0)
        }
        fn block_size(&self) -> Result<Option<BlockSize>> {
            Ok(Some(BlockSize {
                minimum: 512,
                preferred: 4096,
                maximum: 4096,
            }))
        }
        fn pread(&self, b: &mut [u8], o: u64, f: u32) -> Result<()> {
            self.ok(b.len() as u64, o, 4096)?;
            self.0.pread(b, o, f)
        }
        fn pwrite(&self, b: &[u8], o: u64, f: u32) -> Result<()> {
            self.ok(b.len() as u64, o, 4096)?;
            self.0.pwrite(b, o, f)
        }
        fn zero(&self, c: u64, o: u64, f: u32) -> Result<()> {
            self.ok(c, o, 8192)?;
            self.0.zero(c, o, f)
        }
        fn trim(&self, c: u64, o: u64, f: u32) -> Result<()> {
            self.ok(c, o, 8192)?;
            self.0.trim(c, o, f)
        }
    }

    #[test]
    fn aligns_and_splits() {
        let below = disk(100_000);
        let h = make(&params(&[("maxlen", "8k")]))
            .unwrap()
            .open(Arc::new(Strict(below.clone())), false)
            .unwrap();
        assert_eq!(h.get_size().unwrap(), 100_000 / 512 * 512);
        let mut want: Vec<u8> = (0..100_000u64).map(|i| (i % 251) as u8).collect();
        let mut got = vec![0u8; 20_001];
        h.pread(&mut got, 1001, 0).unwrap();
        assert_eq!(got, &want[1001..21_002]);
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * 7) as u8).collect();
        h.pwrite(&data, 3, 0).unwrap();
        want[3..10_010].copy_from_slice(&data);
        h.zero(30_000, 40_001, 0).unwrap();
        want[40_001..70_001].fill(0);
        h.trim(100, 5, 0).unwrap();
        let mut all = vec![0u8; 99_840];
        h.pread(&mut all, 0, 0).unwrap();
        assert_eq!(all, &want[..99_840]);
        let e = h.extents(1000, 7, 0).unwrap();
        assert_eq!(e.as_slice()[0].offset, 7);
        assert_eq!(
            h.zero(10, 5, flags::FAST_ZERO).unwrap_err().errno,
            Errno::NotSup
        );
        h.zero(1024, 512, flags::FAST_ZERO).unwrap();
        assert!(make(&params(&[("minblock", "1000")])).is_err());
        assert!(make(&params(&[("minblock", "512"), ("maxdata", "1000")])).is_err());
    }

    /// Records writes' flags and flushes; FUA as `fua`.
    struct Spy(FuaMode, Mutex<Vec<String>>);
    impl Backend for Spy {
        fn get_size(&self) -> Result<u64> {
            Ok(1 << 20)
        }
        fn can_fua(&self) -> Result<FuaMode> {
            Ok(self.0)
        }
        fn pwrite(&self, b: &[u8], o: u64, f: u32) -> Result<()> {
            self.1.lock().push(format!("pwrite {} {o} {f}", b.len()));
            Ok(())
        }
        fn zero(&self, c: u64, o: u64, f: u32) -> Result<()> {
            self.1.lock().push(format!("zero {c} {o} {f}"));
            Ok(())
        }
        fn flush(&self, _f: u32) -> Result<()> {
            self.1.lock().push("flush".into());
            Ok(())
        }
    }

    #[test]
    fn emulated_fua_below_is_one_flush_after_the_pieces() {
        let w = |n: usize, o: u64, f: u32| format!("pwrite {n} {o} {f}");
        for (fua, want) in [
            (FuaMode::Emulate, vec![w(4096, 0, 0), w(4096, 4096, 0), "flush".into()]),
            (FuaMode::Native, vec![w(4096, 0, 1), w(4096, 4096, 1)]),
        ] {
            let spy = Arc::new(Spy(fua, Mutex::new(Vec::new())));
            let h = make(&params(&[("maxdata", "4k"), ("maxlen", "4k")]))
                .unwrap()
                .open(spy.clone(), false)
                .unwrap();
            h.pwrite(&[1; 8192], 0, flags::FUA).unwrap();
            assert_eq!(*spy.1.lock(), want, "{fua:?}");
            spy.1.lock().clear();
            h.zero(8192, 0, flags::FUA).unwrap();
            let zeros = spy.1.lock().clone();
            let fuas = zeros.iter().filter(|c| c.ends_with(" 1")).count();
            let flushes = zeros.iter().filter(|c| *c == "flush").count();
            assert_eq!((fuas, flushes), if fua == FuaMode::Emulate { (0, 1) } else { (2, 0) });
        }
    }
}
