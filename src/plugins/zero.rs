//! The `zero` plugin: a read-only disk of zeros, one hole. nbdkit's zero
//! plugin is always zero bytes long and takes no parameters; here `size=`
//! (optional, default 0, the magic key) may give it a length.
//! Example: `nbdscript zero --run 'nbdinfo --size $uri'` (prints 0).
//! Must not import tokio or rhai.

use super::PluginDef;
use crate::backend::{extent_type, Backend, CacheMode, Extents, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "zero",
    aliases: &[],
    magic_key: Some("size"),
    params: &[(
        "size",
        "size of the disk (default 0, as nbdkit's zero plugin), e.g. 1G",
    )],
    description: "a read-only disk of zeros (zero bytes long by default)",
    callbacks: &["extents"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("zero", &DEF.keys())?;
    Ok(Arc::new(Zero {
        size: p.size("size")?.unwrap_or(0),
    }))
}

pub struct Zero {
    size: u64,
}

impl Plugin for Zero {
    fn name(&self) -> String {
        "zero".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(ZeroHandle { size: self.size }))
    }
}

struct ZeroHandle {
    size: u64,
}

impl Backend for ZeroHandle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }
    fn pread(&self, buf: &mut [u8], _offset: u64, _flags: u32) -> Result<()> {
        buf.fill(0);
        Ok(())
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
    fn zero_disk() {
        let p = make(&Params::default()).unwrap();
        assert_eq!(p.open(false, "").unwrap().get_size().unwrap(), 0);
        let p = make(&Params::new(vec![("size".into(), "4k".into())])).unwrap();
        let h = p.open(false, "").unwrap();
        assert!(!h.can_write().unwrap());
        let mut b = vec![7u8; 100];
        h.pread(&mut b, 10, 0).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(h.extents(4096, 0, 0).unwrap().as_slice()[0].typ, 3);
    }
}
