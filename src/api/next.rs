//! `Next`: the layer below a filter, as the public API shows it.

use super::{Capabilities, Extent, Result};
use crate::backend::{Backend, Extents};

/// The layer below a [`Filter`](super::Filter) (another filter or the
/// plugin), for one connection. Its calls are checked like the client's.
pub struct Next<'a> {
    pub(crate) layer: &'a dyn Backend,
}

impl Next<'_> {
    /// The size in bytes.
    pub fn get_size(&self) -> Result<u64> {
        self.layer.get_size()
    }
    /// What the layer below can do.
    pub fn capabilities(&self) -> Result<Capabilities> {
        let l = self.layer;
        Ok(Capabilities {
            write: l.can_write()?,
            flush: l.can_flush()?,
            trim: l.can_trim()?,
            zero: l.can_zero()?,
            fast_zero: l.can_fast_zero()?,
            extents: l.can_extents()?,
            fua: l.can_fua()?,
            multi_conn: l.can_multi_conn()?,
            cache: l.can_cache()?,
            rotational: l.is_rotational()?,
            block_size: l.block_size()?,
            description: l.export_description()?,
        })
    }
    /// Fill all of `buf` with the bytes at `offset`.
    pub fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        self.layer.pread(buf, offset, flags)
    }
    /// Write `buf` at `offset`.
    pub fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.layer.pwrite(buf, offset, flags)
    }
    /// Make written data durable.
    pub fn flush(&self, flags: u32) -> Result<()> {
        self.layer.flush(flags)
    }
    /// Discard `count` bytes at `offset`.
    pub fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.layer.trim(count, offset, flags)
    }
    /// Make `count` bytes at `offset` read as zeros.
    pub fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.layer.zero(count, offset, flags)
    }
    /// The extents of `[offset, offset+count)`.
    pub fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Vec<Extent>> {
        Ok(self.layer.extents(count, offset, flags)?.into_vec())
    }
    /// Prefetch `count` bytes at `offset`.
    pub fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.layer.cache(count, offset, flags)
    }
}

/// Collect a layer's extents into the window `[offset, offset+count)`.
pub(crate) fn to_extents(list: Vec<Extent>, count: u64, offset: u64) -> Result<Extents> {
    let mut e = Extents::new(offset, count);
    for x in list {
        e.add(x.offset, x.length, x.typ)?;
    }
    Ok(e)
}
