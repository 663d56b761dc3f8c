//! The `full` plugin: reads return zeros, every write, trim and zero fails
//! with ENOSPC, as nbdkit-full-plugin (a thin disk that ran out of space).
//! Parameters: `size=` (required, the magic key).
//! Example: `nbdscript full size=1G --run 'nbdsh -u $uri -c "h.pwrite(b\"x\", 0)"'` (ENOSPC).
//! Must not import tokio or rhai.

use super::PluginDef;
use crate::backend::{
    extent_type, Backend, BackendError, CacheMode, Errno, Extents, Plugin, Result,
};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "full",
    aliases: &[],
    magic_key: Some("size"),
    params: &[("size", "size of the disk, e.g. 1G (required)")],
    description: "reads zeros, writes fail with ENOSPC",
    callbacks: &["pwrite", "trim", "zero", "extents"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("full", &DEF.keys())?;
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new("full: the parameter size= is required, e.g. full size=1G")
    })?;
    Ok(Arc::new(Full { size }))
}

pub struct Full {
    size: u64,
}

impl Plugin for Full {
    fn name(&self) -> String {
        "full".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(FullHandle { size: self.size }))
    }
}

struct FullHandle {
    size: u64,
}

fn nospc(what: &str) -> BackendError {
    BackendError::new(
        Errno::NoSpc,
        format!("{what}: the full plugin has no space"),
    )
}

impl Backend for FullHandle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }
    fn pread(&self, buf: &mut [u8], _offset: u64, _flags: u32) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _flags: u32) -> Result<()> {
        Err(nospc("pwrite"))
    }
    fn trim(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(nospc("trim"))
    }
    fn zero(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(nospc("zero"))
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        let mut e = Extents::new(offset, count);
        e.add(offset, count, extent_type::HOLE | extent_type::ZERO)?;
        Ok(e)
    }
    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk() {
        let p = make(&Params::new(vec![("size".into(), "1M".into())])).unwrap();
        let h = p.open(false, "").unwrap();
        assert!(h.can_write().unwrap());
        let mut b = vec![1u8; 10];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(b, vec![0u8; 10]);
        assert_eq!(h.pwrite(&b, 0, 0).unwrap_err().errno, Errno::NoSpc);
        assert_eq!(h.trim(1, 0, 0).unwrap_err().errno, Errno::NoSpc);
        assert_eq!(h.zero(1, 0, 0).unwrap_err().errno, Errno::NoSpc);
        assert!(make(&Params::default()).is_err());
    }
}
