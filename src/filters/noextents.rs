//! The `noextents` filter: hide extents, as nbdkit-noextents-filter, so
//! the export looks fully allocated (NBD_CMD_BLOCK_STATUS answers one
//! data extent). No parameters.
//! Example: `nbdscript --filter=noextents file disk.img`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{Backend, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "noextents",
    params: &[],
    description: "disable extents: the export looks fully allocated",
    make,
};

fn make(_p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    Ok(Arc::new(NoextentsFilter))
}

pub struct NoextentsFilter;

impl Filter for NoextentsFilter {
    fn name(&self) -> String {
        "noextents".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(NoextentsHandle { next }))
    }
}

struct NoextentsHandle {
    next: Arc<dyn Backend>,
}

impl Backend for NoextentsHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(false)
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<crate::backend::Extents> {
        let mut e = crate::backend::Extents::new(offset, count);
        e.add(offset, count, crate::backend::extent_type::DATA)?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn everything_is_data() {
        let h = make(&params(&[])).unwrap().open(disk(8192), false).unwrap();
        assert!(!h.can_extents().unwrap());
        let e = h.extents(8192, 0, 0).unwrap();
        assert_eq!(e.as_slice().len(), 1);
        assert_eq!(e.as_slice()[0].typ, 0);
        assert_eq!(e.as_slice()[0].length, 8192);
    }
}
