//! The `readonly` filter: make the export read-only: writes, trims and
//! zeroes fail with EPERM. (nbdkit 1.32 has no such filter; later ones
//! do, with `readonly-file=`, which is followed here.)
//! Parameters: `readonly-file=PATH` (optional: read-only only while PATH
//! exists; the export then stays writable in negotiation).
//! Example: `nbdscript memory 1G --filter=readonly`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{Backend, BackendError, Errno, Filter, FuaMode, Result};
use crate::params::{ConfigError, Params};
use std::path::PathBuf;
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "readonly",
    params: &[(
        "readonly-file",
        "read-only only while this file exists (default: always)",
    )],
    description: "make the export read-only",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    Ok(Arc::new(ReadonlyFilter {
        file: p.get("readonly-file").map(PathBuf::from),
    }))
}

pub struct ReadonlyFilter {
    file: Option<PathBuf>,
}

impl Filter for ReadonlyFilter {
    fn name(&self) -> String {
        "readonly".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(ReadonlyHandle {
            next,
            file: self.file.clone().map(Arc::new),
        }))
    }
}

struct ReadonlyHandle {
    next: Arc<dyn Backend>,
    file: Option<Arc<PathBuf>>,
}

impl ReadonlyHandle {
    fn check(&self, what: &str) -> Result<()> {
        let ro = match &self.file {
            None => true,
            Some(f) => f.exists(),
        };
        if ro {
            Err(BackendError::new(
                Errno::Perm,
                format!("{what}: the export is read-only (readonly filter)"),
            ))
        } else {
            Ok(())
        }
    }
}

impl Backend for ReadonlyHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads pass unchanged
    }
    fn can_write(&self) -> Result<bool> {
        if self.file.is_none() {
            Ok(false)
        } else {
            self.next.can_write()
        }
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(self.file.is_some() && self.next.can_trim()?)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.file.is_some() && self.next.can_zero()?)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(self.file.is_some() && self.next.can_fast_zero()?)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        if self.file.is_none() {
            Ok(FuaMode::None)
        } else {
            self.next.can_fua()
        }
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.check("write")?;
        self.next.pwrite(buf, offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        self.check("write")?;
        self.next.pwrite_owned(buf, offset, flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.check("trim")?;
        self.next.trim(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.check("zero")?;
        self.next.zero(count, offset, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn readonly() {
        let h = make(&params(&[])).unwrap().open(disk(4096), false).unwrap();
        assert!(!h.can_write().unwrap());
        assert_eq!(h.pwrite(&[1], 0, 0).unwrap_err().errno, Errno::Perm);
        assert_eq!(h.zero(1, 0, 0).unwrap_err().errno, Errno::Perm);
        let mut b = [0u8; 1];
        h.pread(&mut b, 1, 0).unwrap();
        assert_eq!(b[0], 1);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ro");
        let h = make(&params(&[("readonly-file", f.to_str().unwrap())]))
            .unwrap()
            .open(disk(4096), false)
            .unwrap();
        assert!(h.can_write().unwrap());
        h.pwrite(&[1], 0, 0).unwrap();
        std::fs::write(&f, b"").unwrap();
        assert_eq!(h.pwrite(&[1], 0, 0).unwrap_err().errno, Errno::Perm);
    }
}
