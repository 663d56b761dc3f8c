//! The command line as clap parses it: every flag (`Args`), the `--help`
//! text listing the built-in layers, and `parse`.

use crate::{filters, plugins};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

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
