//! Unit tests of the script host: call the Backend methods directly.
//! This module owns the loaders the submodules share.

use super::*;
use crate::backend::{Backend, Errno};

mod plugins;
mod errors;
mod sandbox;
mod filters;
mod reload;

pub(super) fn opts() -> ScriptOptions {
    ScriptOptions {
        watch: false,
        ..ScriptOptions::default()
    }
}

pub(super) fn text(s: &str) -> ScriptSource {
    ScriptSource::Text {
        name: "t.rhai".into(),
        text: s.into(),
    }
}

pub(super) fn plugin(s: &str, params: &[(&str, &str)]) -> ScriptPlugin {
    let p = Params::new(
        params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    match ScriptPlugin::load(&text(s), &p, &opts()) {
        Ok(p) => p,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn open(p: &ScriptPlugin) -> std::sync::Arc<dyn Backend> {
    crate::backend::Plugin::open(p, false, "").unwrap()
}

fn memory(size: u64) -> std::sync::Arc<dyn Backend> {
    let a = crate::alloc::AllocSpec::Sparse.create(size).unwrap();
    std::sync::Arc::new(crate::storage::AllocDisk::new(a, size))
}

fn filter(s: &str) -> ScriptFilter {
    match ScriptFilter::load(&text(s), &Params::default(), &opts()) {
        Ok(f) => f,
        Err(e) => panic!("load failed: {e}"),
    }
}
