//! The `pattern` plugin: a read-only disk whose every 8-byte word holds its
//! own offset as a 64-bit big-endian integer, as nbdkit-pattern-plugin.
//! Parameters: `size=` (required, the magic key).
//! Example: `nbdscript pattern size=1G --run 'nbdcopy $uri - | hexdump -C | head'`.
//! Must not import tokio or rhai.

use super::PluginDef;
use crate::backend::{Backend, CacheMode, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "pattern",
    aliases: &[],
    magic_key: Some("size"),
    params: &[("size", "size of the disk, e.g. 1G (required)")],
    description: "read-only disk of 8-byte big-endian offsets",
    callbacks: &[],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("pattern", &DEF.keys())?;
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new("pattern: the parameter size= is required, e.g. pattern size=1G")
    })?;
    Ok(Arc::new(Pattern { size }))
}

pub struct Pattern {
    size: u64,
}

impl Plugin for Pattern {
    fn name(&self) -> String {
        "pattern".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(PatternHandle { size: self.size }))
    }
}

struct PatternHandle {
    size: u64,
}

/// Fill `buf` with the pattern as it appears from `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    let mut pos = 0usize;
    let mut off = offset;
    // Unaligned head.
    let head = (off % 8) as usize;
    if head != 0 {
        let word = (off - head as u64).to_be_bytes();
        let n = (8 - head).min(buf.len());
        buf[..n].copy_from_slice(&word[head..head + n]);
        pos += n;
        off += n as u64;
    }
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&off.to_be_bytes());
        off = off.wrapping_add(8);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let n = rest.len();
        rest.copy_from_slice(&off.to_be_bytes()[..n]);
    }
}

impl Backend for PatternHandle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        fill_pattern(buf, offset);
        Ok(())
    }
    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_bytes() {
        let mut b = vec![0u8; 24];
        fill_pattern(&mut b, 0);
        assert_eq!(&b[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]);
        assert_eq!(b[23], 16);
        let mut c = vec![0u8; 5];
        fill_pattern(&mut c, 0x0106);
        assert_eq!(c, [0x01, 0x00, 0, 0, 0]);
        let mut d = vec![0u8; 3];
        fill_pattern(&mut d, 0x1234_5678_9abc_def5);
        assert_eq!(d, [0xbc, 0xde, 0xf0]);
        let p = make(&Params::new(vec![("size".into(), "1M".into())])).unwrap();
        let h = p.open(false, "").unwrap();
        assert_eq!(h.get_size().unwrap(), 1 << 20);
        assert!(!h.can_write().unwrap());
        let mut e = vec![0u8; 8];
        h.pread(&mut e, 0xff8, 0).unwrap();
        assert_eq!(e, 0xff8u64.to_be_bytes());
        assert!(make(&Params::default()).is_err());
    }
}
