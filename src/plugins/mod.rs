//! Native plugins, named as in nbdkit, and the registry the command line
//! looks names up in. May use `backend`, `alloc`, `datastr`, `params`.

pub mod data;
pub mod file;
pub mod full;
pub mod http;
pub mod memory;
pub mod null;
pub mod partitioning;
pub mod pattern;
pub mod random;
pub mod sparse_random;
pub mod s3;
pub mod tmpdisk;
pub mod torrent;
pub mod zero;

use crate::backend::Plugin;
use crate::params::{ConfigError, Params};
use std::sync::Arc;

/// A built-in plugin as the command line and `--help` know it.
pub struct PluginDef {
    pub name: &'static str,
    /// Other names it answers to (`curl` for `http`).
    pub aliases: &'static [&'static str],
    /// The key a bare first value goes to (`nbdscript memory 1G`).
    pub magic_key: Option<&'static str>,
    /// `(key, help)` for every parameter.
    pub params: &'static [(&'static str, &'static str)],
    /// One line for `--help`.
    pub description: &'static str,
    /// Build it from its parameters.
    pub make: fn(&Params) -> Result<Arc<dyn Plugin>, ConfigError>,
}

impl PluginDef {
    pub fn keys(&self) -> Vec<&'static str> {
        self.params.iter().map(|(k, _)| *k).collect()
    }
}

/// Every built-in native plugin.
pub fn builtin() -> &'static [PluginDef] {
    static DEFS: &[PluginDef] = &[
        memory::DEF,
        null::DEF,
        file::DEF,
        pattern::DEF,
        zero::DEF,
        full::DEF,
        random::DEF,
        partitioning::DEF,
        sparse_random::DEF,
        http::DEF,
        s3::DEF,
        tmpdisk::DEF,
        torrent::DEF,
        data::DEF,
    ];
    DEFS
}

/// Look up a built-in plugin by name or alias.
pub fn find(name: &str) -> Option<&'static PluginDef> {
    builtin()
        .iter()
        .find(|d| d.name == name || d.aliases.contains(&name))
}

/// `--dump-plugin` keys a built-in has whatever its parameters, as nbdkit
/// prints them (what scripts probe for: `mlock=yes`, `data_base64=yes`).
pub fn dump_static(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "memory" => &[("mlock", "yes"), ("zstd", "yes")],
        "data" => &[("data_base64", "yes"), ("zstd", "yes")],
        _ => &[],
    }
}
