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
    /// The optional nbdkit callbacks it implements, for `--dump-plugin`'s
    /// `has_NAME=1` lines: `dump_plugin` (it prints its own keys),
    /// `list_exports`, and the data path: `pwrite` (writable), `flush`,
    /// `trim`, `zero` (native, not emulated with writes), `extents` and
    /// `cache` (one that does work, not a no-op). See [`has_callbacks`].
    pub callbacks: &'static [&'static str],
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
        "data" => &[("data_base64", "yes"), ("mlock", "yes"), ("zstd", "yes")],
        // What it zeroes and trims with (no block-device ioctls).
        "file" => &[
            ("file_falloc_fl_punch_hole", "yes"),
            ("file_falloc_fl_zero_range", "yes"),
        ],
        _ => &[],
    }
}

/// nbdkit's callbacks in the order its `--dump-plugin` prints `has_` keys.
const CALLBACK_ORDER: &[&str] = &[
    "dump_plugin",
    "config",
    "config_complete",
    "config_help",
    "list_exports",
    "open",
    "get_size",
    "pread",
    "pwrite",
    "flush",
    "trim",
    "zero",
    "extents",
    "cache",
];

/// The callbacks a built-in implements, in nbdkit's order, for its
/// `has_NAME=1` lines: `open`, `get_size` and `pread` always, the
/// `config` trio when it takes parameters, and [`PluginDef::callbacks`].
pub fn has_callbacks(d: &PluginDef) -> Vec<&'static str> {
    CALLBACK_ORDER
        .iter()
        .copied()
        .filter(|c| match *c {
            "open" | "get_size" | "pread" => true,
            "config" | "config_complete" | "config_help" => !d.params.is_empty(),
            _ => d.callbacks.contains(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CacheMode;

    /// Each built-in's `has_` lines say what an opened instance does:
    /// `pwrite` exactly when it is writable, `zero` exactly when zeroing
    /// is native, and so on.
    #[test]
    fn has_callbacks_match_what_each_builtin_does() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let img = img.to_str().unwrap();
        for (name, args) in [
            ("memory", vec![("size", "1M")]),
            ("data", vec![("data", "1 2 3")]),
            ("null", vec![("size", "1M")]),
            ("file", vec![("file", img)]),
            ("pattern", vec![("size", "1M")]),
            ("zero", vec![]),
            ("full", vec![("size", "1M")]),
            ("random", vec![("size", "1M")]),
            ("partitioning", vec![("file", img)]),
            ("sparse-random", vec![("size", "1M")]),
        ] {
            let d = find(name).unwrap();
            let params = Params::new(
                args.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            let p = (d.make)(&params).unwrap();
            let b = p.open(false, "").unwrap();
            let has = has_callbacks(d);
            let says = |c: &str| has.contains(&c);
            assert_eq!(says("pwrite"), b.can_write().unwrap(), "{name} pwrite");
            assert_eq!(says("flush"), b.can_flush().unwrap(), "{name} flush");
            assert_eq!(says("trim"), b.can_trim().unwrap(), "{name} trim");
            assert_eq!(says("zero"), b.can_zero().unwrap(), "{name} zero");
            assert_eq!(says("extents"), b.can_extents().unwrap(), "{name} extents");
            if says("cache") {
                assert_eq!(b.can_cache().unwrap(), CacheMode::Native, "{name} cache");
            }
            assert_eq!(
                says("dump_plugin"),
                !p.dump().is_empty() || !dump_static(d.name).is_empty(),
                "{name} dump_plugin"
            );
            for c in ["open", "get_size", "pread"] {
                assert!(says(c), "{name} {c}");
            }
        }
    }
}
