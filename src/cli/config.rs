//! Flags to a validated `Config`: the stack built from the plugin and
//! filters with their `KEY=VALUE` parameters (bare values to the magic
//! key), where to listen, TLS, limits, and the checks every mode shares.

use super::args::Args;
use crate::backend::{Filter, Plugin, Stack};
use crate::params::{ConfigError, Params};
use crate::server::{ListenSpec, TlsSpec};
use crate::{filters, plugins};
use std::path::PathBuf;
use std::sync::Arc;

/// The validated configuration.
pub struct Config {
    pub stack: Stack,
    pub listen: ListenSpec,
    pub readonly: bool,
    pub export_name: String,
    pub run: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub print_uri: bool,
    pub threads: usize,
    pub hexdump: Option<(u64, Option<u64>)>,
    pub extended_headers: bool,
    pub tls: TlsSpec,
    pub handshake_timeout: std::time::Duration,
    pub max_connections: usize,
    pub keepalive: bool,
    /// Global handshake flags offered (`--mask-handshake` applied).
    pub handshake_flags: u16,
}

/// Open files allowed (the soft limit), if known.
fn nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some(r.rlim_cur)
}

/// Default connection limit: what the open-file limit leaves after the
/// descriptors plugins, logs and the runtime need (each connection holds
/// one), at most 1000.
fn default_max_connections() -> usize {
    match nofile_limit() {
        Some(n) => (n.saturating_sub(64) / 2).clamp(1, 1000) as usize,
        None => 1000,
    }
}

fn is_script(name: &str) -> bool {
    name == "-" || name.contains('/') || name.ends_with(".rhai")
}

/// A hexdump offset or length: `0x1f0`, `512`, `4k`.
fn hex_or_size(v: &str) -> Result<u64, String> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).map_err(|_| format!("{v:?} is not a hex number")),
        None => crate::params::parse_size(v),
    }
}

fn parse_hexdump(s: &str) -> Result<(u64, Option<u64>), ConfigError> {
    if s.is_empty() {
        return Ok((0, None));
    }
    let (a, b) = s.split_once(':').unwrap_or((s, ""));
    let off = if a.is_empty() {
        0
    } else {
        hex_or_size(a).map_err(|e| ConfigError::new(format!("--hexdump={s}: {e}")))?
    };
    let len = if b.is_empty() {
        None
    } else {
        Some(hex_or_size(b).map_err(|e| ConfigError::new(format!("--hexdump={s}: {e}")))?)
    };
    Ok((off, len))
}

/// nbdkit's rule for the part before `=`: a letter, then letters, digits,
/// `.`, `_` or `-`. Anything else (`magnet:?xt=...`, `http://h/?a=b`) is a
/// bare value, for the magic key.
fn is_config_key(k: &str) -> bool {
    let mut c = k.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '.' | '_' | '-'))
}

/// `unknown plugin "memroy"` unless `name` is a built-in, a script path
/// or a library script: said before anything about its parameters.
pub(super) fn check_plugin_exists(name: &str) -> Result<(), ConfigError> {
    if plugins::find(name).is_some() || is_script(name) || crate::script::is_stdlib_plugin(name) {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "unknown plugin {name:?}: see `nbdscript --help` for the built-in plugins, or give a path to a .rhai script"
    )))
}

pub(super) fn check_filter_exists(name: &str) -> Result<(), ConfigError> {
    if filters::find(name).is_some() || is_script(name) || crate::script::is_stdlib_filter(name) {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "unknown filter {name:?}: see `nbdscript --help` for the built-in filters, or give a path to a .rhai file"
    )))
}

/// `-D NAME.FLAG=N`, checked as nbdkit does; returns `NAME.FLAG` and N.
fn debug_flag(arg: &str) -> Result<(String, i64), ConfigError> {
    let bad = || {
        ConfigError::new(format!(
            "-D {arg}: a debug flag must have the format NAME.FLAG=N"
        ))
    };
    let (name_flag, n) = arg.split_once('=').ok_or_else(bad)?;
    let (name, flag) = name_flag.split_once('.').ok_or_else(bad)?;
    if name.is_empty() || flag.is_empty() || n.is_empty() {
        return Err(bad());
    }
    let n = crate::params::parse_int(n).map_err(|e| {
        ConfigError::new(format!(
            "-D {arg}: {e} (a debug flag must have the format NAME.FLAG=N)"
        ))
    })?;
    Ok((name_flag.to_string(), n))
}

impl Args {
    /// Fork into the background once ready (nbdkit's default)?
    pub fn daemonize(&self) -> bool {
        !(self.foreground
            || self.exit_with_parent
            || self.single
            || self.run.is_some()
            || self.dump_plugin
            || self.hexdump.is_some()
            || self.version
            || self.dump_config
            || std::env::var_os("LISTEN_FDS").is_some())
    }

    /// The `KEY=VALUE` words after the plugin name; a bare value anywhere
    /// goes to the plugin's magic key, as in nbdkit.
    pub(super) fn params(&self, plugin_name: &str) -> Result<Params, ConfigError> {
        let magic = plugins::find(plugin_name)
            .and_then(|d| d.magic_key)
            .or_else(|| crate::script::stdlib_magic_key(plugin_name))
            .map(str::to_string)
            .or_else(|| crate::script::script_magic_key(plugin_name));
        let mut items = Vec::new();
        for w in self.words.iter().skip(1) {
            match w.split_once('=') {
                Some((k, v)) if is_config_key(k) => items.push((k.to_string(), v.to_string())),
                _ => match &magic {
                    Some(k) => items.push((k.to_string(), w.clone())),
                    None => {
                        return Err(ConfigError::new(format!(
                            "unexpected argument {w:?}: parameters are KEY=VALUE ({plugin_name} has no magic key for a bare value)"
                        )))
                    }
                },
            }
        }
        Ok(Params::new(items))
    }

    /// Checks shared by every mode: `--oldstyle`, `--mask-handshake`,
    /// what `--dump-plugin` cannot go with.
    pub fn check_flags(&self) -> Result<(), ConfigError> {
        if self.oldstyle {
            return Err(ConfigError::new(
                "--oldstyle: nbdscript speaks only the newstyle protocol",
            ));
        }
        self.handshake_mask()?;
        if self.dump_plugin
            && (self.single || self.run.is_some() || self.unix.is_some() || self.port.is_some())
        {
            return Err(ConfigError::new(
                "--dump-plugin, -p, --run, -s or -U options cannot be used in this combination",
            ));
        }
        Ok(())
    }

    /// The `-D NAME.FLAG=N` debug flags, each checked (a malformed one is
    /// a runtime error, exit 1, as nbdkit's).
    pub fn debug_flags(&self) -> Result<Vec<(String, i64)>, ConfigError> {
        self.debug.iter().map(|d| debug_flag(d)).collect()
    }

    /// The global handshake flags to offer: every supported one, less
    /// those `--mask-handshake=MASK` leaves out (nbdkit's meaning: bit 0
    /// NBD_FLAG_FIXED_NEWSTYLE, bit 1 NBD_FLAG_NO_ZEROES).
    fn handshake_mask(&self) -> Result<u16, ConfigError> {
        let all = crate::protocol::handshake::GLOBAL_FLAGS;
        let Some(m) = &self.mask_handshake else {
            return Ok(all);
        };
        let v = crate::params::parse_int(m)
            .ok()
            .filter(|v| (0..=u32::MAX as i64).contains(v))
            .ok_or_else(|| {
                ConfigError::new(format!(
                    "--mask-handshake={m}: give an unsigned number (0 to 0xffffffff)"
                ))
            })?;
        Ok(all & v as u16)
    }

    /// The script layers' limits from `--no-watch`, `--max-operations N`,
    /// `--script-timeout MS`, `--script-memory SIZE`, `--allow-files`
    /// (0 means unlimited; a flag not given keeps the default).
    pub fn script_options(&self) -> crate::script::ScriptOptions {
        let d = crate::script::ScriptOptions::default();
        crate::script::ScriptOptions {
            watch: !self.no_watch,
            max_operations: self.max_operations.unwrap_or(d.max_operations),
            timeout: match self.script_timeout {
                None => d.timeout,
                Some(0) => None,
                Some(ms) => Some(std::time::Duration::from_millis(ms)),
            },
            max_memory: self.script_memory.unwrap_or(d.max_memory),
            allow_files: self.allow_files,
            ..d
        }
    }

    /// Turn raw flags into a validated configuration.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut words = self.words.iter();
        let plugin_name = words.next().ok_or_else(|| {
            ConfigError::new("no plugin given: try `nbdscript memory 1G` or `nbdscript --help`")
        })?;
        let native = plugins::find(plugin_name);
        check_plugin_exists(plugin_name)?;
        let all = self.params(plugin_name)?;
        let sf = self.script_options();

        // Filters take their own keys; the plugin gets the rest.
        let mut filters_out: Vec<Arc<dyn Filter>> = Vec::new();
        let mut rest = all.clone();
        for f in &self.filters {
            if let Some(def) = filters::find(f) {
                let (mine, others) = rest.split(&def.keys());
                rest = others;
                filters_out.push((def.make)(&mine)?);
            } else if is_script(f) || crate::script::is_stdlib_filter(f) {
                let (flt, keys) = crate::script::load_filter(f, &all, &sf)?;
                let (_, others) = rest.split(&keys.iter().map(|s| s.as_str()).collect::<Vec<_>>());
                rest = others;
                filters_out.push(flt);
            } else {
                return Err(ConfigError::new(format!(
                    "unknown filter {f:?}: see `nbdscript --help` for the built-in filters, or give a path to a .rhai file"
                )));
            }
        }
        let plugin: Arc<dyn Plugin> = if let Some(def) = native {
            (def.make)(&rest)?
        } else if is_script(plugin_name) || crate::script::is_stdlib_plugin(plugin_name) {
            crate::script::load_plugin(plugin_name, &rest, &sf)?
        } else {
            return Err(ConfigError::new(format!(
                "unknown plugin {plugin_name:?}: see `nbdscript --help` for the built-in plugins, or give a path to a .rhai script"
            )));
        };
        let stack = Stack::with_filters(plugin, filters_out);

        let listen = if self.single {
            ListenSpec::Stdio
        } else if std::env::var_os("LISTEN_FDS").is_some()
            && self.unix.is_none()
            && self.port.is_none()
        {
            ListenSpec::Systemd
        } else if let Some(u) = &self.unix {
            ListenSpec::Unix(if u == "-" {
                None
            } else {
                Some(PathBuf::from(u))
            })
        } else if self.port.is_none() && self.ipaddr.is_none() && self.run.is_some() {
            ListenSpec::Unix(None)
        } else {
            ListenSpec::Tcp(
                self.ipaddr.clone().unwrap_or_else(|| "::".into()),
                self.port.unwrap_or(10809),
            )
        };
        if self.single && self.run.is_some() {
            return Err(ConfigError::new(
                "--single and --run cannot be used together",
            ));
        }
        let threads = self.threads.unwrap_or(16);
        if threads == 0 {
            return Err(ConfigError::new("--threads=0: give at least 1"));
        }
        use crate::server::TlsMode;
        let mode = match self.tls.as_deref() {
            None | Some("off") => TlsMode::Off,
            Some("on") => TlsMode::On,
            _ => TlsMode::Require,
        };
        if mode == TlsMode::Off
            && (self.tls_certificates.is_some() || self.tls_psk.is_some() || self.tls_verify_peer)
        {
            return Err(ConfigError::new(
                "--tls-certificates, --tls-psk and --tls-verify-peer need --tls=on or --tls=require",
            ));
        }
        let handshake_timeout = match self.timeout {
            None => std::time::Duration::from_secs(30),
            Some(t) if t > 0.0 && t <= 86400.0 => std::time::Duration::from_secs_f64(t),
            Some(t) => {
                return Err(ConfigError::new(format!(
                    "--timeout={t}: give a number of seconds above 0"
                )))
            }
        };
        if self.max_connections == Some(0) {
            return Err(ConfigError::new("--max-connections=0: give at least 1"));
        }
        Ok(Config {
            tls: TlsSpec {
                mode,
                certificates: self.tls_certificates.clone(),
                psk: self.tls_psk.clone(),
                verify_peer: self.tls_verify_peer,
                names: crate::server::TlsNames::Flags,
            },
            handshake_timeout,
            max_connections: self.max_connections.unwrap_or_else(default_max_connections),
            keepalive: self.keepalive,
            handshake_flags: self.handshake_mask()?,
            stack,
            listen,
            readonly: self.readonly,
            export_name: self.exportname.clone().unwrap_or_default(),
            run: self.run.clone(),
            pidfile: self.pidfile.clone(),
            print_uri: self.print_uri,
            threads,
            hexdump: self.hexdump.as_deref().map(parse_hexdump).transpose()?,
            extended_headers: !self.no_extended_headers,
        })
    }
}
