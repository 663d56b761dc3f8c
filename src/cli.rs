//! The command line: clap flags → a validated `Config` (the stack of
//! plugin and filters, where to listen, what to run). anyhow is used only
//! here and in main.rs.

use crate::backend::{Filter, Plugin, Stack};
use crate::params::{ConfigError, Params};
use crate::{filters, plugins};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;
use std::sync::Arc;

/// nbdscript: a Network Block Device server whose plugins and filters can be
/// Rhai scripts, reloaded the moment the file is saved.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nbdscript",
    version,
    override_usage = "nbdscript [OPTIONS] PLUGIN [KEY=VALUE ...]\n       nbdscript [OPTIONS] ./script.rhai [KEY=VALUE ...]",
    about = "A Network Block Device server with hot-reloadable Rhai plugins and filters (nbdkit-compatible command line).",
    long_about = None
)]
pub struct Args {
    /// Listen on a Unix socket; `-U -` makes a private one in a temp dir.
    #[arg(short = 'U', long = "unix", value_name = "PATH")]
    pub unix: Option<String>,
    /// TCP port (default 10809).
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// TCP address to listen on (default all).
    #[arg(short = 'i', long = "ipaddr", value_name = "ADDR")]
    pub ipaddr: Option<String>,
    /// Serve one client on standard input/output, then exit.
    #[arg(short = 's', long = "single", visible_alias = "stdin")]
    pub single: bool,
    /// Read-only export, whatever the plugin can do.
    #[arg(short = 'r', long = "readonly", visible_alias = "read-only")]
    pub readonly: bool,
    /// Accepted for nbdkit compatibility; nbdscript stays in the foreground.
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Stack a filter (built-in name or .rhai path); repeatable; the first is nearest the client.
    #[arg(long = "filter", value_name = "NAME|PATH")]
    pub filters: Vec<String>,
    /// Captive mode: run CMD under `sh -c` with $uri, $nbd, $unixsocket, $port, $exportname set; exit with its status.
    #[arg(long = "run", value_name = "CMD")]
    pub run: Option<String>,
    /// The export name (for $uri and NBD_OPT_LIST).
    #[arg(short = 'e', long = "exportname", value_name = "NAME")]
    pub exportname: Option<String>,
    /// Write the PID to FILE once the socket accepts connections.
    #[arg(short = 'P', long = "pidfile", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Most threads per connection for plugins that wait on I/O (default 16).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Log to stderr (debug level); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Do not reload scripts when they change.
    #[arg(long = "no-watch")]
    pub no_watch: bool,
    /// Print the NBD URI on standard output once ready.
    #[arg(long = "print-uri")]
    pub print_uri: bool,
    /// Print the plugin's name, parameters and callbacks, then exit.
    #[arg(long = "dump-plugin")]
    pub dump_plugin: bool,
    /// Print the export as `hexdump -C` (optionally OFFSET:LEN), then exit.
    #[arg(long = "hexdump", value_name = "OFFSET:LEN", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub hexdump: Option<String>,
    /// Do not offer NBD extended headers (64-bit requests).
    #[arg(long = "no-extended-headers")]
    pub no_extended_headers: bool,
    /// Let data strings inside scripts read files (`<FILE`) and run commands (`<(SCRIPT)`).
    #[arg(long = "allow-files")]
    pub allow_files: bool,
    /// Script budget: operations per call before the request fails with EIO.
    #[arg(long = "max-operations", value_name = "N")]
    pub max_operations: Option<u64>,
    /// Script budget: milliseconds per call before the request fails with EIO.
    #[arg(long = "script-timeout", value_name = "MS")]
    pub script_timeout: Option<u64>,
    /// PLUGIN, then KEY=VALUE parameters (a bare first value goes to the plugin's magic key).
    #[arg(value_name = "PLUGIN [KEY=VALUE]...")]
    pub words: Vec<String>,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `-U PATH`; `None` for `-U -` (a private temp socket).
    Unix(Option<PathBuf>),
    Tcp(String, u16),
    Stdio,
    /// systemd socket activation (LISTEN_FDS).
    Systemd,
}

/// The validated configuration.
pub struct Config {
    pub stack: Stack,
    pub plugin_name: String,
    pub listen: ListenSpec,
    pub readonly: bool,
    pub export_name: String,
    pub run: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub print_uri: bool,
    pub threads: usize,
    pub verbose: bool,
    pub dump_plugin: bool,
    pub hexdump: Option<(u64, Option<u64>)>,
    pub extended_headers: bool,
    pub dump: Vec<(String, String)>,
}

/// Options the script host needs.
#[derive(Debug, Clone)]
pub struct ScriptFlags {
    pub watch: bool,
    pub allow_files: bool,
    pub max_operations: Option<u64>,
    pub timeout_ms: Option<u64>,
}

fn help_text() -> String {
    let mut s = String::from("Plugins (native):\n");
    for d in plugins::builtin() {
        s += &format!("  {:<10} {}\n", d.name, d.description);
        for (k, h) in d.params {
            let magic = if d.magic_key == Some(*k) {
                " (magic: may be given bare)"
            } else {
                ""
            };
            s += &format!("      {k}=  {h}{magic}\n");
        }
    }
    let sp = crate::script::stdlib_plugins();
    if !sp.is_empty() {
        s += "Plugins (built-in scripts):\n";
        for (n, d) in sp {
            s += &format!("  {n:<10} {d}\n");
        }
    }
    s += "Filters:\n";
    for d in filters::builtin() {
        let keys: Vec<String> = d.params.iter().map(|(k, _)| format!("{k}=")).collect();
        s += &format!("  {:<10} {} [{}]\n", d.name, d.description, keys.join(" "));
    }
    for (n, d) in crate::script::stdlib_filters() {
        s += &format!("  {n:<10} {d} (script)\n");
    }
    s += "\nScripts: any PLUGIN containing '/' or ending in .rhai is a Rhai script ('-' reads one\n\
          from stdin); see README.md for the script API.\n\
          Examples:\n  nbdscript memory 1G -U /tmp/sock\n  nbdscript -U - data '( 0x55 0xAA )*256' --run 'nbdinfo $uri'\n  \
          nbdscript data '1 2 3 @0x1000 4' --hexdump\n  ./examples/ramdisk.rhai -U - size=64M --run 'nbdinfo $uri'\n";
    s
}

/// Parse the process arguments (clap errors exit with status 2).
pub fn parse() -> Args {
    let cmd = Args::command().after_help(help_text());
    let m = cmd.get_matches();
    match Args::from_arg_matches(&m) {
        Ok(a) => a,
        Err(e) => e.exit(),
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

impl Args {
    pub fn script_flags(&self) -> ScriptFlags {
        ScriptFlags {
            watch: !self.no_watch,
            allow_files: self.allow_files,
            max_operations: self.max_operations,
            timeout_ms: self.script_timeout,
        }
    }

    /// Turn raw flags into a validated configuration.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut words = self.words.iter();
        let plugin_name = words.next().ok_or_else(|| {
            ConfigError::new("no plugin given: try `nbdscript memory 1G` or `nbdscript --help`")
        })?;
        let mut items = Vec::new();
        let native = plugins::find(plugin_name);
        for (i, w) in words.enumerate() {
            match w.split_once('=') {
                Some((k, v)) if is_config_key(k) => items.push((k.to_string(), v.to_string())),
                _ => {
                    let magic = native
                        .and_then(|d| d.magic_key)
                        .or_else(|| crate::script::stdlib_magic_key(plugin_name));
                    match (i, magic) {
                        (0, Some(k)) => items.push((k.to_string(), w.clone())),
                        _ => {
                            return Err(ConfigError::new(format!(
                                "unexpected argument {w:?}: parameters are KEY=VALUE{}",
                                match magic {
                                    Some(k) => format!(" (only the first bare value goes to {k}=)"),
                                    None => String::new(),
                                }
                            )))
                        }
                    }
                }
            }
        }
        let all = Params::new(items);
        let sf = self.script_flags();

        // Filters take their own keys; the plugin gets the rest.
        let mut filters_out: Vec<Arc<dyn Filter>> = Vec::new();
        let mut rest = all.clone();
        let mut dump = Vec::new();
        for f in &self.filters {
            if let Some(def) = filters::find(f) {
                let (mine, others) = rest.split(&def.keys());
                rest = others;
                filters_out.push((def.make)(&mine)?);
                dump.push(("filter".to_string(), def.name.to_string()));
            } else if is_script(f) || crate::script::is_stdlib_filter(f) {
                let (flt, keys) = crate::script::load_filter(f, &all, &sf)?;
                let (_, others) = rest.split(&keys.iter().map(|s| s.as_str()).collect::<Vec<_>>());
                rest = others;
                filters_out.push(flt);
                dump.push(("filter".to_string(), f.clone()));
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
        dump.extend(plugin.dump());
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
                self.ipaddr.clone().unwrap_or_else(|| "0.0.0.0".into()),
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
        Ok(Config {
            stack,
            plugin_name: plugin_name.clone(),
            listen,
            readonly: self.readonly,
            export_name: self.exportname.clone().unwrap_or_default(),
            run: self.run.clone(),
            pidfile: self.pidfile.clone(),
            print_uri: self.print_uri,
            threads,
            verbose: self.verbose,
            dump_plugin: self.dump_plugin,
            hexdump: self.hexdump.as_deref().map(parse_hexdump).transpose()?,
            extended_headers: !self.no_extended_headers,
            dump,
        })
    }
}
