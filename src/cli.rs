//! The command line: clap flags → a validated `Config` (the stack of
//! plugin and filters, where to listen, what to run).

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
    disable_version_flag = true,
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
    /// TCP address to listen on (default all, IPv6 and IPv4).
    #[arg(short = 'i', long = "ipaddr", value_name = "ADDR")]
    pub ipaddr: Option<String>,
    /// Serve one client on standard input/output, then exit.
    #[arg(short = 's', long = "single", visible_alias = "stdin")]
    pub single: bool,
    /// Read-only export, whatever the plugin can do.
    #[arg(short = 'r', long = "readonly", visible_alias = "read-only")]
    pub readonly: bool,
    /// Stay in the foreground. Without it the server forks into the
    /// background once it accepts connections, as nbdkit (--run, -s,
    /// socket activation and --exit-with-parent stay in the foreground).
    #[arg(short = 'f', long = "foreground", visible_alias = "no-fork")]
    pub foreground: bool,
    /// Exit when the parent process exits (stays in the foreground).
    #[arg(long = "exit-with-parent")]
    pub exit_with_parent: bool,
    /// Mask off global handshake flags, as nbdkit: bit 0 FIXED_NEWSTYLE,
    /// bit 1 NO_ZEROES (default: both offered).
    #[arg(long = "mask-handshake", value_name = "MASK")]
    pub mask_handshake: Option<String>,
    /// Newstyle protocol (the only one nbdscript speaks; accepted).
    #[arg(short = 'n', long = "newstyle")]
    pub newstyle: bool,
    /// Oldstyle protocol: not supported (an error).
    #[arg(short = 'o', long = "oldstyle")]
    pub oldstyle: bool,
    /// nbdkit debug flag NAME.FLAG=N (one no layer uses warns; a malformed one exits 1, as nbdkit).
    #[arg(short = 'D', long = "debug", value_name = "NAME.FLAG=N")]
    pub debug: Vec<String>,
    /// Print the version of nbdscript and of each layer named, then exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Print nbdscript's build configuration as KEY=VALUE lines, then exit.
    #[arg(long = "dump-config")]
    pub dump_config: bool,
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
    /// TLS: off (default), on (offered; clients may stay in plain text) or require.
    #[arg(long = "tls", value_name = "off|on|require", value_parser = ["off", "on", "require"])]
    pub tls: Option<String>,
    /// TLS X.509 directory: ca-cert.pem, server-cert.pem, server-key.pem (ca-crl.pem optional).
    #[arg(long = "tls-certificates", value_name = "DIR")]
    pub tls_certificates: Option<PathBuf>,
    /// TLS-PSK: a psktool file of `username:hexkey` lines (overrides X.509).
    #[arg(long = "tls-psk", value_name = "FILE")]
    pub tls_psk: Option<PathBuf>,
    /// TLS X.509: require a client certificate signed by ca-cert.pem.
    #[arg(long = "tls-verify-peer")]
    pub tls_verify_peer: bool,
    /// Close a client whose handshake (TLS included) takes longer than SECS (default 30).
    #[arg(long = "timeout", value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Open connections at most; at the limit the oldest still in its handshake is closed (default: from the open-file limit).
    #[arg(long = "max-connections", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Enable TCP keepalive on client connections.
    #[arg(long = "keepalive")]
    pub keepalive: bool,
    /// Script budget: memory one script may hold in total (state, handles,
    /// a call's temporaries, its disk() data), e.g. 512M; default 4G, 0 =
    /// unlimited. Over it the call fails with ENOMEM.
    #[arg(long = "script-memory", value_name = "SIZE", value_parser = parse_memory)]
    pub script_memory: Option<u64>,
    /// PLUGIN, then KEY=VALUE parameters (a bare first value goes to the plugin's magic key).
    #[arg(value_name = "PLUGIN [KEY=VALUE]...")]
    pub words: Vec<String>,
}

pub use crate::server::{ListenSpec, TlsSpec};

// What the binary needs from the crate besides the command line.
pub use crate::backend::{budget, debug as backend_debug};
pub use crate::hexdump::print_export;

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

fn parse_memory(s: &str) -> Result<u64, String> {
    crate::params::parse_size(s).map_err(|e| format!("{e} (a size like 512M or 4G; 0 = unlimited)"))
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
    s += "Script library (import \"std/NAME\" as x; see stdlib/README.md):\n";
    for (n, d) in crate::script::stdlib_modules() {
        s += &format!("  std/{n:<8} {d}\n");
    }
    s += "\nScripts: any PLUGIN containing '/' or ending in .rhai is a Rhai script ('-' reads one\n\
          from stdin); see README.md for the script API.\n\
          Examples:\n  nbdscript -f memory 1G -U /tmp/sock    (without -f: forks into the background once ready)\n  nbdscript -U - data '( 0x55 0xAA )*256' --run 'nbdinfo $uri'\n  \
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

/// `unknown plugin "memroy"` unless `name` is a built-in, a script path
/// or a library script: said before anything about its parameters.
fn check_plugin_exists(name: &str) -> Result<(), ConfigError> {
    if plugins::find(name).is_some() || is_script(name) || crate::script::is_stdlib_plugin(name) {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "unknown plugin {name:?}: see `nbdscript --help` for the built-in plugins, or give a path to a .rhai script"
    )))
}

fn check_filter_exists(name: &str) -> Result<(), ConfigError> {
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

/// A layer for `--version`: a script by its path, a built-in by its name.
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

fn version_line(name: &str) -> String {
    if invoked_as_nbdkit() {
        format!("{name} {NBDKIT_COMPAT_VERSION}")
    } else {
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    }
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
    fn params(&self, plugin_name: &str) -> Result<Params, ConfigError> {
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
