//! The `nbdscript` program (what the binary's `main` runs): parse the
//! command line, fork into the background as nbdkit does unless told
//! otherwise, build the stack, then serve (`server::Launch`) or print a
//! version, configuration, hexdump or plugin dump.

use crate::cli::{self, budget, Config};
use crate::daemon;
use crate::server::{Launch, ServerConfig};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Run the program on this process's arguments; its exit status.
pub fn main() -> ExitCode {
    let args = cli::parse();
    init_tracing(args.verbose);
    if let Err(e) = args.check_flags() {
        eprintln!("nbdscript: {e}");
        return ExitCode::from(2);
    }
    // A malformed -D exits 1, as nbdkit.
    let debug_flags = match args.debug_flags() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            return ExitCode::from(1);
        }
    };
    if args.version || args.dump_config || args.dump_plugin {
        return print_info(&args);
    }
    if args.exit_with_parent {
        if let Err(e) = daemon::exit_with_parent() {
            eprintln!("nbdscript: --exit-with-parent: {e}");
            return ExitCode::from(1);
        }
    }
    // Fork before anything starts a thread (plugins may, tokio does): the
    // daemon does all the work, the parent only waits for it to be ready.
    let daemon = if args.daemonize() {
        match daemon::fork(args.verbose) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("nbdscript: cannot fork into the background: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    // Work that grows with a request's length stops at the script budget.
    budget::set_limit(match args.script_timeout {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(budget::DEFAULT_LIMIT),
    });
    // -v logs every call into every layer, as nbdkit; these two flags
    // turn off either half. ip.rules: the ip filter's rule matching is
    // in the -v output anyway. data.AST: the data plugin logs its
    // optimized tree (with another plugin the flag is not used, as in
    // nbdkit). Set before the layers are built.
    let (mut control, mut data) = (true, true);
    let plugin_is_data = args.words.first().is_some_and(|p| p == "data");
    for (d, n) in debug_flags {
        match d.as_str() {
            "nbdkit.backend.controlpath" => control = n != 0,
            "nbdkit.backend.datapath" => data = n != 0,
            "ip.rules" => {}
            "data.AST" if plugin_is_data => crate::plugins::data::set_debug_ast(n != 0),
            _ => eprintln!("nbdscript: warning: debug flag -D {d} was not used"),
        }
    }
    cli::backend_debug::set(args.verbose && control, args.verbose && data);
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            return ExitCode::from(2);
        }
    };
    match real_main(config, daemon) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            ExitCode::from(1)
        }
    }
}

/// Log to stderr: warnings, plus what scripts say (`print()`, accepted
/// and refused reloads: target `script` at info); `-v` for everything;
/// `RUST_LOG` overrides. Colour only when stderr is a terminal and
/// `NO_COLOR` is unset or empty.
fn init_tracing(verbose: bool) {
    use std::io::IsTerminal;
    let default = if verbose { "debug" } else { "warn,script=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .event_format(LineFormat {
            full: tracing_subscriber::fmt::format().with_ansi(colour),
            program: if cli::invoked_as_nbdkit() {
                "nbdkit"
            } else {
                "nbdscript"
            },
        })
        .try_init();
}
/// Log lines: tracing's usual format, except the backend debugging lines
/// of `-v` (target `nbdkit_backend`), which are written as nbdkit writes
/// them (`nbdkit: debug: memory: pread count=512 offset=0 flags=0x0`, with
/// the program's name), so scripts that grep nbdkit's output find them.
struct LineFormat {
    full: tracing_subscriber::fmt::format::Format,
    program: &'static str,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() != cli::backend_debug::TARGET {
            return self.full.format_event(ctx, writer, event);
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        writeln!(writer, "{}: debug: {}", self.program, m.0)
    }
}

/// `--version`, `--dump-config`, `--dump-plugin`: print, then exit (1 when
/// a layer named does not exist or cannot be loaded).
fn print_info(args: &cli::Args) -> ExitCode {
    let lines = if args.version {
        args.version_lines()
    } else if args.dump_config {
        Ok(dump_config())
    } else {
        args.dump_plugin_lines()
            .map(|l| l.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    };
    match lines {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nbdscript: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--dump-config`: nbdkit's keys that apply to nbdscript. Run as
/// `nbdkit`, the name and version are those of the nbdkit release it is
/// compatible with (see [`cli::invoked_as_nbdkit`]).
fn dump_config() -> Vec<String> {
    let own = env!("CARGO_PKG_VERSION");
    let (name, v) = if cli::invoked_as_nbdkit() {
        ("nbdkit", cli::NBDKIT_COMPAT_VERSION)
    } else {
        ("nbdscript", own)
    };
    let mut parts = v.split('.');
    let binary = std::env::current_exe().unwrap_or_default();
    let bindir = binary.parent().map(|d| d.display().to_string());
    let host_os = if cfg!(all(target_os = "linux", target_env = "gnu")) {
        "linux-gnu"
    } else {
        std::env::consts::OS
    };
    vec![
        format!("binary={}", binary.display()),
        format!("bindir={}", bindir.unwrap_or_default()),
        "exit_with_parent=yes".into(),
        format!("host_cpu={}", std::env::consts::ARCH),
        format!("host_os={host_os}"),
        format!("name={name}"),
        format!("nbdscript_version={own}"),
        format!("version={v}"),
        format!("version_major={}", parts.next().unwrap_or("0")),
        format!("version_minor={}", parts.next().unwrap_or("0")),
        "zstd=yes".into(),
    ]
}

fn real_main(config: Config, daemon: Option<daemon::Daemon>) -> Result<ExitCode, String> {
    if let Some((off, len)) = config.hexdump {
        cli::print_export(&config.stack, &config.export_name, off, len)?;
        return Ok(ExitCode::SUCCESS);
    }
    let launch = Launch {
        config: ServerConfig {
            stack: config.stack,
            readonly: config.readonly,
            export_name: config.export_name,
            extended_headers: config.extended_headers,
            threads: config.threads,
            tls: None,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            keepalive: config.keepalive,
            handshake_flags: config.handshake_flags,
        },
        listen: config.listen,
        tls: config.tls,
        pidfile: config.pidfile,
        print_uri: config.print_uri,
        run: config.run,
        signals: true,
    };
    let mut daemon = daemon;
    let code = launch.run(
        |_uri| {
            if let Some(d) = daemon.as_mut() {
                d.ready();
            }
        },
        std::future::pending(),
    )?;
    Ok(ExitCode::from(code))
}
