//! The `memory` plugin: a RAM disk shared by all connections, over one of
//! the allocators (`allocator=sparse|malloc[,mlock=true]|zstd`).
//! Also provides `AllocDisk`, the backend any allocator-backed plugin
//! (memory, data) serves through.

use super::PluginDef;
use crate::alloc::{AllocError, AllocSpec, Allocator};
use crate::backend::{flags, Backend, BackendError, BlockSize, Errno, Extents, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "memory",
    aliases: &[],
    magic_key: Some("size"),
    params: &[
        ("size", "size of the RAM disk, e.g. 1G (required)"),
        (
            "allocator",
            "sparse (default), malloc, malloc,mlock=true or zstd",
        ),
    ],
    description: "a RAM disk shared by all connections",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("memory", &DEF.keys())?;
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new("memory: the parameter size= is required, e.g. memory size=1G")
    })?;
    let spec = AllocSpec::parse(p.get("allocator").unwrap_or("sparse"))
        .map_err(|e| ConfigError::new(format!("memory: {e}")))?;
    let alloc = spec
        .create(size)
        .map_err(|e| ConfigError::new(format!("memory: {e}")))?;
    Ok(Arc::new(Memory {
        disk: Arc::new(AllocDisk::new(alloc, size)),
    }))
}

/// Map an allocator failure onto an NBD error.
pub fn alloc_error(e: AllocError) -> BackendError {
    match e {
        AllocError::NoMem(m) => BackendError::new(Errno::NoMem, m),
        AllocError::Range(m) => BackendError::new(Errno::Inval, m),
        AllocError::Config(m) => BackendError::new(Errno::Io, m),
    }
}

pub struct Memory {
    disk: Arc<AllocDisk>,
}

impl Drop for Memory {
    /// The stats line at exit (`-v`): bytes stored, compression ratio.
    fn drop(&mut self) {
        tracing::debug!(
            "memory: {} allocator: {}",
            self.disk.alloc.name(),
            self.disk.alloc.stats()
        );
    }
}

impl Plugin for Memory {
    fn name(&self) -> String {
        "memory".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(self.disk.clone())
    }
    fn dump(&self) -> Vec<(String, String)> {
        crate::alloc::dump_lines(&*self.disk.alloc)
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
