//! What the command line prints and exits with: `--version` lines (as
//! the nbdkit release followed when run as `nbdkit`) and `--dump-plugin`.

use super::args::Args;
use super::config::{check_filter_exists, check_plugin_exists};
use crate::params::ConfigError;
use crate::{filters, plugins};
use std::path::PathBuf;

/// The nbdkit release whose command line, plugins and filters nbdscript
/// follows; what it answers to version probes when run as `nbdkit`.
pub const NBDKIT_COMPAT_VERSION: &str = "1.32.5";

/// Run under the name `nbdkit` (a symlink installed as a drop-in):
/// `--version` and `--dump-config` then answer as the nbdkit release
/// nbdscript is compatible with, so tools that probe nbdkit's version
/// (virt-v2v reads `version_major`/`version_minor`) accept it.
pub fn invoked_as_nbdkit() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "nbdkit"))
}

/// A layer for `--version`: a script by its path, a built-in by its name.
fn version_line(name: &str) -> String {
    if invoked_as_nbdkit() {
        format!("{name} {NBDKIT_COMPAT_VERSION}")
    } else {
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    }
}

impl Args {
    /// `--version`: nbdscript's version, then one line per filter and the
    /// plugin, each of which must exist (so `nbdscript PLUGIN --version`
    /// probes for a plugin, as with nbdkit).
    pub fn version_lines(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = vec![if invoked_as_nbdkit() {
            format!(
                "nbdkit {NBDKIT_COMPAT_VERSION} (nbdscript {})",
                env!("CARGO_PKG_VERSION")
            )
        } else {
            version_line("nbdscript")
        }];
        let plugin = self.words.first();
        if let Some(p) = plugin {
            check_plugin_exists(p)?;
        }
        for f in &self.filters {
            check_filter_exists(f)?;
            out.push(version_line(filters::find(f).map(|d| d.name).unwrap_or(f)));
        }
        if let Some(p) = plugin {
            out.push(version_line(plugins::find(p).map(|d| d.name).unwrap_or(p)));
        }
        Ok(out)
    }

    /// `--dump-plugin`: nbdkit's keys for the plugin, its parameters, then
    /// what the plugin itself reports ([`Plugin::dump`], the hook script
    /// plugins fill) when it can be built from the parameters given. A
    /// built-in's required parameters are not needed.
    pub fn dump_plugin_lines(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let name = self.words.first().ok_or_else(|| {
            ConfigError::new("--dump-plugin: name a plugin, e.g. `nbdscript memory --dump-plugin`")
        })?;
        check_plugin_exists(name)?;
        for f in &self.filters {
            check_filter_exists(f)?;
        }
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let native = plugins::find(name);
        let mut out = vec![kv("name", name), kv("version", env!("CARGO_PKG_VERSION"))];
        let params = self.params(name)?;
        match native {
            Some(d) => {
                out.push(kv("api_version", "2"));
                out.push(kv("max_thread_model", "parallel"));
                out.push(kv("thread_model", "parallel"));
                out.push(kv("errno_is_preserved", "1"));
                if let Some(m) = d.magic_key {
                    out.push(kv("magic_config_key", m));
                }
                for c in plugins::has_callbacks(d) {
                    out.push((format!("has_{c}"), "1".to_string()));
                }
                for (k, help) in d.params {
                    out.push((format!("param.{k}"), help.to_string()));
                }
                out.extend(plugins::dump_static(d.name).iter().map(|(k, v)| kv(k, v)));
                out.extend(self.filter_dump_lines()?);
                // What the plugin reports about itself, when the
                // parameters given are enough to build it.
                if let Ok(p) = (d.make)(&params) {
                    out.extend(p.dump());
                }
            }
            None => {
                // Compiled, described, never configured: `config` does
                // not run and no parameter is needed.
                out.extend(crate::script::dump_plugin(name, &self.script_options())?);
                out.extend(self.filter_dump_lines()?);
            }
        }
        Ok(out)
    }

    /// `filter=NAME` per `--filter`; a script filter's own lines follow
    /// its name, prefixed `filter.` (its callbacks, thread model, `can_*`
    /// functions, parameters).
    fn filter_dump_lines(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for f in &self.filters {
            match filters::find(f) {
                Some(d) => out.push(("filter".to_string(), d.name.to_string())),
                None => {
                    out.push(("filter".to_string(), f.clone()));
                    for (k, v) in crate::script::dump_filter(f, &self.script_options())? {
                        out.push((format!("filter.{k}"), v));
                    }
                }
            }
        }
        Ok(out)
    }
}
