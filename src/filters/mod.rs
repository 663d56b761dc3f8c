//! Native filters, named as in nbdkit, and their registry.
//! May use `backend`, `alloc`, `params`.

pub mod blocksize;
pub mod cow;
pub mod delay;
pub mod error;
pub mod exitwhen;
pub mod fua;
pub mod ip;
pub mod log;
pub mod noextents;
pub mod noparallel;
pub mod nozero;
pub mod offset;
pub mod partition;
pub mod readonly;
pub mod tar;
pub mod truncate;
pub mod value;
pub mod xz;

use crate::backend::Filter;
use crate::params::{ConfigError, Params};
use std::sync::Arc;

/// A built-in native filter as the command line and `--help` know it.
pub struct FilterDef {
    pub name: &'static str,
    /// `(key, help)` for every parameter; these keys are taken from the
    /// shared `KEY=VALUE` list for this filter.
    pub params: &'static [(&'static str, &'static str)],
    pub description: &'static str,
    pub make: fn(&Params) -> Result<Arc<dyn Filter>, ConfigError>,
}

impl FilterDef {
    pub fn keys(&self) -> Vec<&'static str> {
        self.params.iter().map(|(k, _)| *k).collect()
    }
}

/// Every built-in native filter.
pub fn builtin() -> &'static [FilterDef] {
    static DEFS: &[FilterDef] = &[
        offset::DEF,
        partition::DEF,
        truncate::DEF,
        tar::DEF,
        cow::DEF,
        error::DEF,
        delay::DEF,
        log::DEF,
        readonly::DEF,
        blocksize::DEF,
        fua::DEF,
        xz::DEF,
        ip::DEF,
        nozero::DEF,
        noextents::DEF,
        noparallel::DEF,
        exitwhen::DEF,
    ];
    DEFS
}

/// Look up a built-in filter by name.
pub fn find(name: &str) -> Option<&'static FilterDef> {
    builtin().iter().find(|d| d.name == name)
}
