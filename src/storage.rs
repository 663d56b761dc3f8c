//! Storage glue: the allocators (`alloc/`) as a backend layer. Maps an
//! allocator's failures onto NBD errors and serves an allocator as a disk
//! ([`AllocDisk`]), for the `memory` and `data` plugins, the `cow` filter
//! and a script's `disk()`. Must not import tokio or rhai.

use crate::alloc::{AllocError, Allocator};
use crate::backend::{flags, Backend, BackendError, BlockSize, Errno, Extents, Result};
use std::sync::Arc;

/// Map an allocator failure onto an NBD error.
pub fn alloc_error(e: AllocError) -> BackendError {
    match e {
        AllocError::NoMem(m) => BackendError::new(Errno::NoMem, m),
        AllocError::Range(m) => BackendError::new(Errno::Inval, m),
        AllocError::Config(m) => BackendError::new(Errno::Io, m),
    }
}

/// A writable disk of `size` bytes over an allocator, shared by every
/// connection: calls are memcpy-cheap, so they run inline.
pub struct AllocDisk {
    pub alloc: Arc<dyn Allocator>,
    pub size: u64,
}

impl AllocDisk {
    pub fn new(alloc: Arc<dyn Allocator>, size: u64) -> Self {
        AllocDisk { alloc, size }
    }
}

impl Backend for AllocDisk {
    crate::backend::all_capabilities!();
    /// zstd compresses on the request path: run it on the worker pool.
    fn is_blocking(&self) -> bool {
        self.alloc.is_blocking()
    }
    /// Compression only computes: a connection thread, not the pool.
    fn waits(&self) -> bool {
        false
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(Some(BlockSize {
            minimum: 1,
            preferred: self.alloc.preferred_block().max(512),
            maximum: 0xffff_ffff,
        }))
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        self.alloc.read(buf, offset).map_err(alloc_error)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        self.alloc.write(buf, offset).map_err(alloc_error)
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        self.alloc.flush().map_err(alloc_error)
    }
    fn trim(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.alloc.zero(count, offset).map_err(alloc_error)
    }
    fn zero(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.alloc.zero(count, offset).map_err(alloc_error)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let count = if flags & flags::REQ_ONE != 0 {
            count.min(1 << 20)
        } else {
            count
        };
        let mut e = Extents::new(offset, count);
        for x in self.alloc.extents(count, offset).map_err(alloc_error)? {
            e.add(x.offset, x.length, x.typ)?;
        }
        Ok(e)
    }
    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}
