//! The Rhai script host (placeholder until the script host lands): script
//! plugins and filters. The only place rhai may be used.

use crate::backend::{Filter, Plugin};
use crate::cli::ScriptFlags;
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub fn stdlib_plugins() -> Vec<(String, String)> {
    Vec::new()
}
pub fn stdlib_filters() -> Vec<(String, String)> {
    Vec::new()
}
pub fn stdlib_magic_key(_name: &str) -> Option<&'static str> {
    None
}
pub fn is_stdlib_plugin(_name: &str) -> bool {
    false
}
pub fn is_stdlib_filter(_name: &str) -> bool {
    false
}
pub fn load_plugin(
    name: &str,
    _p: &Params,
    _f: &ScriptFlags,
) -> Result<Arc<dyn Plugin>, ConfigError> {
    Err(ConfigError::new(format!(
        "{name}: script plugins are not available in this build yet"
    )))
}
pub fn load_filter(
    name: &str,
    _p: &Params,
    _f: &ScriptFlags,
) -> Result<(Arc<dyn Filter>, Vec<String>), ConfigError> {
    Err(ConfigError::new(format!(
        "{name}: script filters are not available in this build yet"
    )))
}
