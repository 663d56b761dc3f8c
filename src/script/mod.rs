//! The Rhai host: script plugins and filters (DESIGN.md §3), their hardened
//! engine, host functions, and live reload. This is the only module that
//! may import rhai; it may use `backend`, `alloc`, `datastr`, `params`, but
//! never tokio or the server.
//!
//! Entry points for the command line: [`load_plugin`] / [`load_filter`]
//! by name (path, `-`, or built-in), or [`load_plugin_from`] /
//! [`load_filter_from`] with a [`ScriptSource`]; [`stdlib_names`] lists the
//! built-in library. Thread model: a script chooses with
//! `fn thread_model() { "parallel" }` (or `"serialize_requests"`,
//! `"serialize_all_requests"`, the default); script calls always block, so
//! the server runs them on its worker pool.

mod budget;
mod bulk;
mod bytes;
mod call;
mod code;
mod dump;
mod engine;
mod filter;
mod host;
mod load;
mod memory;
mod next;
mod plugin;
mod raise;
mod rebuild;
mod reload;
mod report;
mod stack;
mod state;
mod stdlib;

pub use filter::ScriptFilter;
pub use plugin::ScriptPlugin;
pub use stdlib::{
    is_stdlib_filter, is_stdlib_plugin, stdlib_filters, stdlib_magic_key, stdlib_modules,
    stdlib_names, stdlib_plugins, stdlib_source,
};

use crate::backend::{Filter, Plugin};
use crate::params::{ConfigError, Params};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `--script-memory` by default: 4 GiB per script. On a 2-core, 24 GiB
/// machine a plugin and two script filters together stay under half of it
/// (one allocation may pass the budget by at most one capped value, 1 GiB).
pub const DEFAULT_MEMORY: u64 = 4 << 30;

/// Limits and switches for script layers (all user-settable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOptions {
    /// Reload the script (and what it imports) when the file changes.
    pub watch: bool,
    /// Operations one call may run (0 = unlimited); over it the request
    /// fails with EIO.
    pub max_operations: u64,
    /// Wall-clock limit for one call (None = unlimited).
    pub timeout: Option<Duration>,
    /// Nesting of function calls.
    pub max_call_levels: usize,
    /// Longest string a script may build.
    pub max_string_size: usize,
    /// Largest array or Blob (a Blob counts bytes) a script may build; must
    /// exceed the largest request (32 MiB).
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Memory one script may hold (bytes; 0 = unlimited); over it a call
    /// fails with ENOMEM.
    pub max_memory: u64,
    /// Reserved for `data()`'s `<FILE` and `<(SCRIPT)`: off by default.
    pub allow_files: bool,
}

impl Default for ScriptOptions {
    fn default() -> Self {
        ScriptOptions {
            watch: true,
            max_operations: 50_000_000,
            timeout: Some(Duration::from_secs(10)),
            max_call_levels: 64,
            max_string_size: 16 << 20,
            max_array_size: 64 << 20,
            max_map_size: 1 << 20,
            max_memory: DEFAULT_MEMORY,
            allow_files: false,
        }
    }
}

/// Where a script comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// A file (watched for reload).
    File(PathBuf),
    /// Text given directly (`nbdscript -` reads standard input); never reloaded.
    Text { name: String, text: String },
    /// A file of the built-in library, by name (`offset`).
    Stdlib(String),
}

impl ScriptSource {
    /// Interpret a PLUGIN or `--filter` word: `-` reads standard input now;
    /// a word containing `/` or ending `.rhai` is a file; otherwise a name
    /// in the built-in library (None when it is not one: a native name).
    pub fn from_arg(arg: &str) -> Result<Option<ScriptSource>, ConfigError> {
        if arg == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                ConfigError::new(format!("reading a script from standard input: {e}"))
            })?;
            return Ok(Some(ScriptSource::Text {
                name: "<stdin>".into(),
                text,
            }));
        }
        if arg.contains('/') || arg.ends_with(".rhai") {
            return Ok(Some(ScriptSource::File(PathBuf::from(arg))));
        }
        Ok((is_stdlib_plugin(arg) || is_stdlib_filter(arg))
            .then(|| ScriptSource::Stdlib(arg.to_string())))
    }

    /// The script's text.
    pub fn text(&self) -> Result<String, String> {
        match self {
            ScriptSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read script {}: {e}", p.display())),
            ScriptSource::Text { text, .. } => Ok(text.clone()),
            ScriptSource::Stdlib(n) => stdlib_source(n).map(str::to_string).ok_or_else(|| {
                format!(
                    "no script named {n:?} in the built-in library; known: {}",
                    stdlib_names().join(", ")
                )
            }),
        }
    }

    /// The name used in messages (`file:line:col`).
    pub fn display_name(&self) -> String {
        match self {
            ScriptSource::File(p) => p.display().to_string(),
            ScriptSource::Text { name, .. } => name.clone(),
            ScriptSource::Stdlib(n) => format!("stdlib/{n}.rhai"),
        }
    }

    /// The directory imports are resolved in (files only).
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            ScriptSource::File(p) => {
                let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                abs.parent().map(|d| d.to_path_buf())
            }
            _ => None,
        }
    }
}

/// The magic key a script plugin file declares with
/// `fn magic_key() { "size" }` (read from the text, without running it),
/// so `./disk.rhai 2M` means `size=2M`.
pub fn script_magic_key(arg: &str) -> Option<String> {
    if !(arg.contains('/') || arg.ends_with(".rhai")) {
        return None;
    }
    dump::magic_key_in(&std::fs::read_to_string(arg).ok()?)
}

/// `--dump-plugin` for a script plugin named on the command line (a path,
/// `-` or a built-in library name): nbdkit's `key=value` lines from the
/// compiled script; `config` is not run, so no parameter is needed.
pub fn dump_plugin(name: &str, opts: &ScriptOptions) -> Result<Vec<(String, String)>, ConfigError> {
    dump::dump_source(&source_for(name)?, opts, code::Kind::Plugin)
}

/// `--dump-plugin` lines of a script filter named by `--filter` (as
/// [`dump_plugin`]; a filter's capabilities it does not decide are the
/// layer below's, so only its `can_*` functions are listed).
pub fn dump_filter(name: &str, opts: &ScriptOptions) -> Result<Vec<(String, String)>, ConfigError> {
    dump::dump_source(&source_for(name)?, opts, code::Kind::Filter)
}

/// Load a script plugin named on the command line: a path, `-` (standard
/// input) or a built-in library name.
pub fn load_plugin(
    name: &str,
    params: &Params,
    opts: &ScriptOptions,
) -> Result<Arc<dyn Plugin>, ConfigError> {
    let src = source_for(name)?;
    load_plugin_from(&src, params, opts)
}

/// Load a script filter named on the command line. Returns the filter and
/// the parameter keys it takes (declared by the script's `fn params()`;
/// empty when it declares none, and then it sees every parameter).
pub fn load_filter(
    name: &str,
    params: &Params,
    opts: &ScriptOptions,
) -> Result<(Arc<dyn Filter>, Vec<String>), ConfigError> {
    let src = source_for(name)?;
    let f = ScriptFilter::load(&src, params, opts)?;
    let keys = f.param_keys();
    Ok((Arc::new(f), keys))
}

fn source_for(name: &str) -> Result<ScriptSource, ConfigError> {
    ScriptSource::from_arg(name)?.ok_or_else(|| {
        ConfigError::new(format!(
            "{name:?} is neither a script path nor a built-in script; built-in: {}",
            stdlib_names().join(", ")
        ))
    })
}

/// Load a script plugin: compile it, run `config(params)` once, and (for a
/// file, when `opts.watch`) watch it for changes.
pub fn load_plugin_from(
    source: &ScriptSource,
    params: &Params,
    opts: &ScriptOptions,
) -> Result<Arc<dyn Plugin>, ConfigError> {
    Ok(Arc::new(ScriptPlugin::load(source, params, opts)?))
}

/// Load a script filter (same rules as [`load_plugin_from`]).
pub fn load_filter_from(
    source: &ScriptSource,
    params: &Params,
    opts: &ScriptOptions,
) -> Result<Arc<dyn Filter>, ConfigError> {
    Ok(Arc::new(ScriptFilter::load(source, params, opts)?))
}

#[cfg(test)]
mod tests;
