//! The `memory` plugin: a RAM disk shared by all connections, over one of
//! the allocators (`allocator=sparse|malloc[,mlock=true]|zstd`).
//! The disk itself is [`crate::storage::AllocDisk`].

use super::PluginDef;
use crate::alloc::AllocSpec;
use crate::backend::{Backend, Plugin, Result};
use crate::params::{ConfigError, Params};
use crate::storage::AllocDisk;
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
    callbacks: &["dump_plugin", "pwrite", "flush", "trim", "zero", "extents"],
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
