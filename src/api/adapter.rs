//! The public [`Plugin`] and [`Filter`] traits adapted onto the internal
//! `backend::Plugin` / `backend::Filter` / `Backend`: capabilities are
//! asked once per connection, [`Behaviour`] becomes the scheduling hints.

use super::next::{to_extents, Next};
use super::{Behaviour, Capabilities, Filter, Plugin};
use crate::backend::{self, Backend, BlockSize, CacheMode, Extents, FuaMode, Result};
use std::sync::Arc;

/// A public plugin as the server's plugin.
pub(crate) struct PluginLayer<P: Plugin>(pub Arc<P>);

impl<P: Plugin> backend::Plugin for PluginLayer<P> {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn open(&self, readonly: bool, export_name: &str) -> Result<Arc<dyn Backend>> {
        let h = self.0.open(readonly, export_name)?;
        let caps = match self.0.capabilities(&h) {
            Ok(c) => c,
            Err(e) => {
                self.0.close(&h);
                return Err(e);
            }
        };
        Ok(Arc::new(PluginConn {
            p: self.0.clone(),
            h,
            caps,
        }))
    }
}

struct PluginConn<P: Plugin> {
    p: Arc<P>,
    h: P::Handle,
    caps: Capabilities,
}

/// The capability methods of `Backend` from a cached [`Capabilities`].
macro_rules! capabilities_from {
    ($caps:ident) => {
        fn can_write(&self) -> Result<bool> {
            Ok(self.$caps.write)
        }
        fn can_flush(&self) -> Result<bool> {
            Ok(self.$caps.flush)
        }
        fn can_trim(&self) -> Result<bool> {
            Ok(self.$caps.trim)
        }
        fn can_zero(&self) -> Result<bool> {
            Ok(self.$caps.zero)
        }
        fn can_fast_zero(&self) -> Result<bool> {
            // nbdkit's rule: without a native `zero` the server fails
            // fast-zero requests at once, so fast zero is advertised.
            Ok(self.$caps.fast_zero || !self.$caps.zero)
        }
        fn can_extents(&self) -> Result<bool> {
            Ok(self.$caps.extents)
        }
        fn can_fua(&self) -> Result<FuaMode> {
            Ok(self.$caps.fua)
        }
        fn can_multi_conn(&self) -> Result<bool> {
            Ok(self.$caps.multi_conn)
        }
        fn can_cache(&self) -> Result<CacheMode> {
            Ok(self.$caps.cache)
        }
        fn is_rotational(&self) -> Result<bool> {
            Ok(self.$caps.rotational)
        }
        fn block_size(&self) -> Result<Option<BlockSize>> {
            Ok(self.$caps.block_size)
        }
        fn export_description(&self) -> Result<Option<String>> {
            Ok(self.$caps.description.clone())
        }
    };
}

impl<P: Plugin> Backend for PluginConn<P> {
    capabilities_from!(caps);
    fn waits(&self) -> bool {
        self.p.behaviour() == Behaviour::WaitsOnIo
    }
    fn is_blocking(&self) -> bool {
        self.waits()
    }
    fn get_size(&self) -> Result<u64> {
        self.p.get_size(&self.h)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        self.p.pread(&self.h, buf, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.p.pwrite(&self.h, buf, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        self.p.flush(&self.h, flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.p.trim(&self.h, count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.p.zero(&self.h, count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        to_extents(
            self.p.extents(&self.h, count, offset, flags)?,
            count,
            offset,
        )
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.p.cache(&self.h, count, offset, flags)
    }
    fn close(&self) {
        self.p.close(&self.h)
    }
}

/// A public filter as the server's filter.
pub(crate) struct FilterLayer<F: Filter>(pub Arc<F>);

impl<F: Filter> backend::Filter for FilterLayer<F> {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>> {
        let n = Next { layer: &*next };
        let h = self.0.open(&n, readonly)?;
        let caps = match self.0.capabilities(&n, &h) {
            Ok(c) => c,
            Err(e) => {
                self.0.close(&h);
                return Err(e);
            }
        };
        Ok(Arc::new(FilterConn {
            f: self.0.clone(),
            h,
            caps,
            next,
        }))
    }
}

struct FilterConn<F: Filter> {
    f: Arc<F>,
    h: F::Handle,
    caps: Capabilities,
    next: Arc<dyn Backend>,
}

impl<F: Filter> FilterConn<F> {
    fn n(&self) -> Next<'_> {
        Next { layer: &*self.next }
    }
}

impl<F: Filter> Backend for FilterConn<F> {
    capabilities_from!(caps);
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn waits(&self) -> bool {
        self.f.behaviour() == Behaviour::WaitsOnIo || self.next.waits()
    }
    fn is_blocking(&self) -> bool {
        self.f.behaviour() == Behaviour::WaitsOnIo || self.next.is_blocking()
    }
    /// The filter's `pread` runs for every read (no OFFSET_HOLE shortcut).
    fn sparse_reads(&self) -> bool {
        false
    }
    fn prefers_owned_reads(&self) -> bool {
        false
    }
    fn get_size(&self) -> Result<u64> {
        self.f.get_size(&self.n(), &self.h)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        self.f.pread(&self.n(), &self.h, buf, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.f.pwrite(&self.n(), &self.h, buf, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        self.f.flush(&self.n(), &self.h, flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.f.trim(&self.n(), &self.h, count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.f.zero(&self.n(), &self.h, count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        to_extents(
            self.f.extents(&self.n(), &self.h, count, offset, flags)?,
            count,
            offset,
        )
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.f.cache(&self.n(), &self.h, count, offset, flags)
    }
    fn close(&self) {
        self.f.close(&self.h);
        self.next.close()
    }
}
