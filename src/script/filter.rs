//! `ScriptFilter`: a script as the backend `Filter`; its callbacks receive
//! the layer below first, as a `Next` (`next.rs`). Only `src/script/` may
//! import rhai.

use super::code::Kind;
use super::load::Host;
use super::next::Next;
use super::plugin::{dump, Layer};
use super::reload::{self, Watch};
use super::{ScriptOptions, ScriptSource};
use crate::backend::{Backend, Filter, Result};
use crate::params::{ConfigError, Params};
use rhai::Dynamic;
use std::sync::Arc;

/// A script filter: process-wide, like a plugin.
pub struct ScriptFilter {
    host: Arc<Host>,
    _watch: Option<Watch>,
}

impl ScriptFilter {
    pub fn load(
        source: &ScriptSource,
        params: &Params,
        opts: &ScriptOptions,
    ) -> std::result::Result<Self, ConfigError> {
        let host = Arc::new(Host::load(source, params, opts, Kind::Filter)?);
        let _watch = reload::watch(&host)?;
        Ok(ScriptFilter { host, _watch })
    }

    /// Recompile now (what the watcher does on a change).
    pub fn reload(&self) -> std::result::Result<(), String> {
        self.host.reload()
    }

    /// The parameter keys the script declares with `fn params()`.
    pub fn param_keys(&self) -> Vec<String> {
        self.host.declared.clone().unwrap_or_default()
    }
}

impl Filter for ScriptFilter {
    fn name(&self) -> String {
        self.host.name.clone()
    }
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>> {
        let nd = Dynamic::from(Next::new(next.clone()));
        Ok(Arc::new(Layer::open(
            self.host.clone(),
            Some((next, nd)),
            readonly,
        )?))
    }
    fn dump(&self) -> Vec<(String, String)> {
        dump(&self.host)
    }
}
