//! The `truncate` filter: change the size of the layer below, as
//! nbdkit-truncate-filter. Bytes past the real end read as zeros (and are
//! a hole in extents); writes there must be zeros, else ENOSPC.
//! Parameters: `truncate=SIZE`, `round-up=N`, `round-down=N` (powers of 2).
//! Example: `nbdscript file odd.img --filter=truncate round-up=512`.
//! Must not import tokio or rhai.

use super::value;
use super::FilterDef;
use crate::backend::{extent_type, Backend, BackendError, Errno, Extents, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "truncate",
    params: &[
        (
            "truncate",
            "the new size (smaller or larger than the layer below)",
        ),
        (
            "round-up",
            "round the size up to a multiple of N (a power of 2)",
        ),
        (
            "round-down",
            "round the size down to a multiple of N (a power of 2)",
        ),
    ],
    description: "truncate, extend or round the size of the layer below",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    Ok(Arc::new(TruncateFilter {
        truncate: value::size(p, "truncate", "truncate")?,
        round_up: value::power_of_2(p, "round-up", "truncate")?,
        round_down: value::power_of_2(p, "round-down", "truncate")?,
    }))
}

pub struct TruncateFilter {
    truncate: Option<u64>,
    round_up: Option<u64>,
    round_down: Option<u64>,
}

impl Filter for TruncateFilter {
    fn name(&self) -> String {
        "truncate".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let real = next.get_size()?;
        let mut size = self.truncate.unwrap_or(real);
        if let Some(n) = self.round_up {
            size = size
                .checked_add(n - 1)
                .map(|s| s & !(n - 1))
                .filter(|&s| s <= i64::MAX as u64)
                .ok_or_else(|| BackendError::io("round-up: the size is too large"))?;
        }
        if let Some(n) = self.round_down {
            size &= !(n - 1);
        }
        Ok(Arc::new(TruncateHandle { next, real, size }))
    }
}

struct TruncateHandle {
    next: Arc<dyn Backend>,
    /// Size of the layer below.
    real: u64,
    /// Size served.
    size: u64,
}

impl TruncateHandle {
    /// How many of `count` bytes at `offset` lie inside the real disk.
    #[inline]
    fn inside(&self, count: u64, offset: u64) -> u64 {
        if offset >= self.real {
            0
        } else {
            count.min(self.real - offset)
        }
    }
}

impl Backend for TruncateHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // added bytes are zeros and report as holes
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        let n = self.inside(buf.len() as u64, offset) as usize;
        if n > 0 {
            self.next.pread(&mut buf[..n], offset, flags)?;
        }
        buf[n..].fill(0);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        let n = self.inside(buf.len() as u64, offset) as usize;
        if buf[n..].iter().any(|&b| b != 0) {
            return Err(BackendError::new(
                Errno::NoSpc,
                "truncate: write beyond the end of the underlying disk must be zeros",
            ));
        }
        if n > 0 {
            self.next.pwrite(&buf[..n], offset, flags)?;
        }
        Ok(())
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        if self.inside(buf.len() as u64, offset) == buf.len() as u64 {
            self.next.pwrite_owned(buf, offset, flags)
        } else {
            self.pwrite(&buf, offset, flags)
        }
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            self.next.trim(n, offset, flags)?;
        }
        Ok(())
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            self.next.zero(n, offset, flags)?;
        }
        Ok(())
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            self.next.cache(n, offset, flags)?;
        }
        Ok(())
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let n = self.inside(count, offset);
        let mut e = Extents::new(offset, count);
        if n > 0 {
            let got = self.next.extents(n, offset, flags)?;
            for x in got.as_slice() {
                e.add(x.offset, x.length, x.typ)?;
            }
            if e.next_offset() < offset + n {
                // The layer below stopped early: so do we.
                return Ok(e);
            }
        }
        if n < count {
            e.add(offset + n, count - n, extent_type::HOLE | extent_type::ZERO)?;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn sizes() {
        let open = |kv: &[(&str, &str)]| {
            make(&params(kv))
                .unwrap()
                .open(disk(1000), false)
                .unwrap()
                .get_size()
                .unwrap()
        };
        assert_eq!(open(&[]), 1000);
        assert_eq!(open(&[("truncate", "600")]), 600);
        assert_eq!(open(&[("round-up", "512")]), 1024);
        assert_eq!(open(&[("round-down", "512")]), 512);
        assert_eq!(open(&[("truncate", "3000"), ("round-up", "1024")]), 3072);
        assert!(make(&params(&[("round-up", "300")])).is_err());
    }

    #[test]
    fn extend() {
        let h = make(&params(&[("truncate", "2000")]))
            .unwrap()
            .open(disk(1000), false)
            .unwrap();
        let mut b = vec![1u8; 20];
        h.pread(&mut b, 990, 0).unwrap();
        assert_eq!(b[9], (999 % 251) as u8);
        assert!(b[10..].iter().all(|&x| x == 0));
        h.pwrite(&[5, 0, 0], 999, 0).unwrap();
        assert_eq!(h.pwrite(&[5, 1], 999, 0).unwrap_err().errno, Errno::NoSpc);
        h.pread(&mut b[..1], 999, 0).unwrap();
        assert_eq!(b[0], 5);
        let e = h.extents(1100, 900, 0).unwrap();
        let last = e.as_slice().last().unwrap();
        assert_eq!(last.offset + last.length, 2000);
        assert_eq!(last.typ, 3);
        h.zero(2000, 0, 0).unwrap();
    }
}
