//! The plugin layer: what nbdkit's server/plugins.c does between the
//! lowest filter and the plugin. A plugin without native FUA gets the
//! write without the flag and a flush after it (nbdkit's
//! `NBDKIT_FUA_EMULATE`), and a `zero` the plugin cannot do (no native
//! zero, or ENOTSUP without FAST_ZERO) is written as zeros with `pwrite`.
//! Filters therefore see what nbdkit's filters see: one write with FUA,
//! no flush, and `can_fua` answering `Emulate`.
//! Must not import tokio or rhai.

use super::chunks;
use super::{
    flags, Backend, BackendError, BlockSize, CacheMode, Errno, Extents, FuaMode, Result,
    ThreadModel,
};
use std::sync::{Arc, OnceLock};

/// A plugin's opened layer wrapped in its emulation.
pub fn wrap(plugin: Arc<dyn Backend>) -> Arc<dyn Backend> {
    Arc::new(PluginLayer {
        inner: plugin,
        fua: OnceLock::new(),
        zero: OnceLock::new(),
        extents: OnceLock::new(),
    })
}

struct PluginLayer {
    inner: Arc<dyn Backend>,
    // Capabilities asked once per connection, as nbdkit caches them.
    fua: OnceLock<FuaMode>,
    zero: OnceLock<bool>,
    extents: OnceLock<bool>,
}

fn cached<T: Copy>(cell: &OnceLock<T>, ask: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Some(v) = cell.get() {
        return Ok(*v);
    }
    let v = ask()?;
    Ok(*cell.get_or_init(|| v))
}

impl PluginLayer {
    /// Run a write-like `op`: a FUA the plugin does not do natively is
    /// taken off and replaced by a flush once `op` succeeded.
    fn with_fua(&self, f: u32, op: impl FnOnce(u32) -> Result<()>) -> Result<()> {
        if f & flags::FUA == 0 || self.can_fua()? == FuaMode::Native {
            return op(f);
        }
        op(f & !flags::FUA)?;
        self.inner.flush(0)
    }

    /// `zero` as nbdkit's plugin layer does it (FUA already handled).
    fn zero_or_write(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let fast = f & flags::FAST_ZERO != 0;
        if self.can_zero()? {
            match self.inner.zero(count, offset, f) {
                Err(e) if e.errno == Errno::NotSup && !fast => {}
                r => return r,
            }
        } else if fast {
            return Err(BackendError::new(
                Errno::NotSup,
                "fast zero is not supported (the plugin has no zero)",
            ));
        }
        let extents = cached(&self.extents, || self.inner.can_extents())?;
        chunks::write_zeros(
            &*self.inner,
            extents,
            "write zeroes (emulated with pwrite: the plugin cannot zero)",
            count,
            offset,
            0,
            0,
        )
        .map(drop)
    }
}

impl Backend for PluginLayer {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn is_blocking(&self) -> bool {
        self.inner.is_blocking()
    }
    fn waits(&self) -> bool {
        self.inner.waits()
    }
    fn thread_model(&self) -> ThreadModel {
        self.inner.thread_model()
    }
    fn sparse_reads(&self) -> bool {
        self.inner.sparse_reads()
    }
    fn prefers_owned_reads(&self) -> bool {
        self.inner.prefers_owned_reads()
    }
    fn get_size(&self) -> Result<u64> {
        self.inner.get_size()
    }
    fn can_zero(&self) -> Result<bool> {
        cached(&self.zero, || self.inner.can_zero())
    }
    fn can_fua(&self) -> Result<FuaMode> {
        cached(&self.fua, || self.inner.can_fua())
    }
    fn can_cache(&self) -> Result<CacheMode> {
        self.inner.can_cache()
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        self.inner.block_size()
    }
    fn pread(&self, buf: &mut [u8], offset: u64, f: u32) -> Result<()> {
        self.inner.pread(buf, offset, f)
    }
    fn pread_owned(&self, count: u32, offset: u64, f: u32) -> Result<Vec<u8>> {
        self.inner.pread_owned(count, offset, f)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.inner.pwrite(buf, offset, f))
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.inner.pwrite_owned(buf, offset, f))
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.inner.trim(count, offset, f))
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.zero_or_write(count, offset, f))
    }
    fn extents(&self, count: u64, offset: u64, f: u32) -> Result<Extents> {
        self.inner.extents(count, offset, f)
    }
}

#[cfg(test)]
mod tests;
