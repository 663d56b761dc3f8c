//! The `null` plugin: a disk of zeros; writes are discarded; all one hole.
//! Same parameters as nbdkit-null-plugin.

use super::PluginDef;
use crate::backend::{extent_type, Backend, Extents, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "null",
    aliases: &[],
    magic_key: Some("size"),
    params: &[("size", "size of the disk (default 0), e.g. 1G")],
    description: "a disk of zeros that discards writes",
    callbacks: &["pwrite", "flush", "trim", "zero", "extents"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("null", &DEF.keys())?;
    Ok(Arc::new(Null {
        size: p.size("size")?.unwrap_or(0),
    }))
}

pub struct Null {
    size: u64,
}

impl Plugin for Null {
    fn name(&self) -> String {
        "null".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(NullHandle { size: self.size }))
    }
}

struct NullHandle {
    size: u64,
}

impl Backend for NullHandle {
    crate::backend::all_capabilities!();
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn pread(&self, buf: &mut [u8], _offset: u64, _flags: u32) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
    fn trim(&self, _c: u64, _o: u64, _f: u32) -> Result<()> {
        Ok(())
    }
    fn zero(&self, _c: u64, _o: u64, _f: u32) -> Result<()> {
        Ok(())
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        let mut e = Extents::new(offset, count);
        e.add(offset, count, extent_type::HOLE | extent_type::ZERO)?;
        Ok(e)
    }
}
