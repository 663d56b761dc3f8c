//! The `offset` filter: serve the byte range `[offset, offset+range)` of the
//! layer below, as nbdkit-offset-filter. `OffsetHandle` is the shared
//! window layer the `partition` and `tar` filters serve through too.
//! Parameters: `offset=` (default 0), `range=` (default: to the end).
//! Example: `nbdscript file disk.img --filter=offset offset=1M range=100M`.
//! Must not import tokio or rhai. Zero-cost on the data path: no
//! allocation, every method inlined into a single add.

use super::value;
use super::FilterDef;
use crate::backend::{Backend, BackendError, Extents, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "offset",
    params: &[
        (
            "offset",
            "start of the window in the layer below (default 0)",
        ),
        ("range", "length of the window (default: to the end)"),
    ],
    description: "serve a byte range of the layer below",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    Ok(Arc::new(OffsetFilter {
        offset: value::size(p, "offset", "offset")?.unwrap_or(0),
        range: value::size(p, "range", "offset")?,
    }))
}

pub struct OffsetFilter {
    offset: u64,
    range: Option<u64>,
}

impl Filter for OffsetFilter {
    fn name(&self) -> String {
        "offset".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let size = next.get_size()?;
        let range = match self.range {
            Some(r) => r,
            None => size.checked_sub(self.offset).ok_or_else(|| {
                BackendError::inval(format!(
                    "offset={} is beyond the end of the layer below ({size} bytes)",
                    self.offset
                ))
            })?,
        };
        Ok(Arc::new(OffsetHandle::new(next, self.offset, range, size)?))
    }
}

/// A window `[offset, offset+size)` over `next`.
pub struct OffsetHandle {
    next: Arc<dyn Backend>,
    offset: u64,
    size: u64,
    /// Report `is_blocking` (the tar filter) regardless of the layer below.
    blocking: bool,
}

impl OffsetHandle {
    /// Check that the window lies inside `next_size` bytes.
    pub fn new(next: Arc<dyn Backend>, offset: u64, size: u64, next_size: u64) -> Result<Self> {
        match offset.checked_add(size) {
            Some(end) if end <= next_size => Ok(OffsetHandle {
                next,
                offset,
                size,
                blocking: false,
            }),
            _ => Err(BackendError::inval(format!(
                "offset {offset} + range {size} is beyond the end of the layer below ({next_size} bytes)"
            ))),
        }
    }
}

impl OffsetHandle {
    /// Mark this layer as blocking (its open scanned the layer below).
    pub fn blocking(mut self) -> Self {
        self.blocking = true;
        self
    }
}

impl Backend for OffsetHandle {
    #[inline]
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads only move
    }
    fn is_blocking(&self) -> bool {
        self.blocking || self.next.is_blocking()
    }
    #[inline]
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    #[inline]
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        self.next.pread(buf, offset + self.offset, flags)
    }
    #[inline]
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        self.next.pread_owned(count, offset + self.offset, flags)
    }
    #[inline]
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.next.pwrite(buf, offset + self.offset, flags)
    }
    #[inline]
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        self.next.pwrite_owned(buf, offset + self.offset, flags)
    }
    #[inline]
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.next.trim(count, offset + self.offset, flags)
    }
    #[inline]
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.next.zero(count, offset + self.offset, flags)
    }
    #[inline]
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.next.cache(count, offset + self.offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let got = self.next.extents(count, offset + self.offset, flags)?;
        Ok(got.shifted_down(self.offset))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alloc::Sparse;
    use crate::backend::extent_type;
    use crate::storage::AllocDisk;

    /// A memory disk of `size` bytes whose byte i is `i % 251`.
    pub fn disk(size: u64) -> Arc<dyn Backend> {
        let d = AllocDisk::new(Arc::new(Sparse::new()), size);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        d.pwrite(&data, 0, 0).unwrap();
        Arc::new(d)
    }

    pub fn params(kv: &[(&str, &str)]) -> Params {
        Params::new(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn window() {
        let f = make(&params(&[("offset", "1000"), ("range", "2000")])).unwrap();
        let h = f.open(disk(4096), false).unwrap();
        assert_eq!(h.get_size().unwrap(), 2000);
        let mut b = [0u8; 4];
        h.pread(&mut b, 10, 0).unwrap();
        assert_eq!(
            b,
            [
                (1010 % 251) as u8,
                (1011 % 251) as u8,
                (1012 % 251) as u8,
                (1013 % 251) as u8
            ]
        );
        h.pwrite(&[9, 9], 0, 0).unwrap();
        h.zero(100, 500, 0).unwrap();
        let e = h.extents(2000, 0, 0).unwrap();
        assert_eq!(e.as_slice()[0].offset, 0);
        assert!(e.as_slice().iter().all(|x| x.offset < 2000));
        let v = h.pread_owned(2, 0, 0).unwrap();
        assert_eq!(v, vec![9, 9]);
        // Whole remainder by default.
        let f = make(&params(&[("offset", "4000")])).unwrap();
        assert_eq!(f.open(disk(4096), false).unwrap().get_size().unwrap(), 96);
        // Beyond the end.
        let f = make(&params(&[("offset", "4000"), ("range", "100")])).unwrap();
        assert!(f.open(disk(4096), false).is_err());
        let f = make(&params(&[("offset", "5000")])).unwrap();
        assert!(f.open(disk(4096), false).is_err());
        assert!(make(&params(&[("offset", "x")])).is_err());
    }

    #[test]
    fn extents_shift() {
        let d = AllocDisk::new(Arc::new(Sparse::new()), 1 << 20);
        d.pwrite(&[1u8; 4096], 65536, 0).unwrap();
        let f = make(&params(&[("offset", "32768")])).unwrap();
        let h = f.open(Arc::new(d), false).unwrap();
        let e = h.extents(1 << 19, 0, 0).unwrap();
        let s = e.as_slice();
        assert_eq!(s[0].offset, 0);
        assert_eq!(s[0].length, 32768);
        assert_eq!(s[0].typ, extent_type::HOLE | extent_type::ZERO);
        assert_eq!(s[1].offset, 32768);
        assert_eq!(s[1].typ, 0);
    }
}
