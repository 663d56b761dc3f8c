//! nbdscript's entry point: parse the command line, fork into the
//! background as nbdkit does unless told otherwise, then serve (or print a
//! version, configuration, hexdump or plugin dump). anyhow only here and in
//! cli.rs.

mod daemon;

use anyhow::Context;
use nbdscript::cli::{self, Config, ListenSpec};
use nbdscript::server::{self, Listener, ServerConfig, Shared};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long in-flight requests may run after SIGTERM/SIGINT before the
/// process exits anyway (with status 1, a second later). The same 10 s as
/// the server's wait for clients that stopped reading their replies.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = cli::parse();
    init_tracing(args.verbose);
    let debug_flags = match args.check_flags() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            return ExitCode::from(2);
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
    nbdscript::backend::budget::set_limit(match args.script_timeout {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(nbdscript::backend::budget::DEFAULT_LIMIT),
    });
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            return ExitCode::from(2);
        }
    };
    for d in debug_flags {
        eprintln!("nbdscript: warning: debug flag -D {d} was not used");
    }
    match real_main(config, daemon) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nbdscript: {e:#}");
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
        .try_init();
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

fn real_main(config: Config, daemon: Option<daemon::Daemon>) -> anyhow::Result<ExitCode> {
    if let Some((off, len)) = config.hexdump {
        return hexdump(&config, off, len).map(|_| ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.threads)
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(serve(config, daemon))
}

fn hexdump(config: &Config, off: u64, len: Option<u64>) -> anyhow::Result<()> {
    let export = config
        .stack
        .open(true, &config.export_name)
        .map_err(|e| anyhow::anyhow!("cannot open the export: {e}"))?;
    let size = export.size();
    let start = off.min(size);
    let end = match len {
        Some(l) => start.saturating_add(l).min(size),
        None => size,
    };
    let mut out = std::io::stdout().lock();
    let r = nbdscript::hexdump::dump(&export, start, end, &mut out);
    export.close();
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// A private socket directory for `-U -`, removed on exit.
struct TempSock {
    dir: PathBuf,
}

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Make `$TMPDIR/nbdscriptXXXXXXXX` (random name, mode 0700, never an
/// existing path) for `-U -`.
fn temp_sock() -> anyhow::Result<(TempSock, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    for _ in 0..100u32 {
        let mut r = [0u8; 8];
        // SAFETY: getrandom fills the buffer it is given.
        let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        anyhow::ensure!(n == r.len() as isize, "cannot get random bytes");
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("nbdscript{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                let sock = dir.join("socket");
                return Ok((TempSock { dir }, sock));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot create a private socket directory in {}",
                        base.display()
                    )
                })
            }
        }
    }
    anyhow::bail!(
        "cannot create a private socket directory in {}",
        base.display()
    )
}

/// Percent-encode for a URI (RFC 3986 unreserved characters and `/` stay).
fn pct(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The NBD URI clients use: `nbd[s]://` for TCP, `nbd[s]+unix://` for a
/// socket, with what a TLS client needs (`tls-certificates=` or the user
/// and `tls-psk-file=`).
fn uri(
    listen: &Listener,
    sock: Option<&PathBuf>,
    export: &str,
    tls: Option<&server::Credentials>,
) -> String {
    let s = if tls.is_some() { "s" } else { "" };
    let user = match tls {
        Some(server::Credentials::Psk(_, u)) => format!("{}@", pct(u)),
        _ => String::new(),
    };
    let mut query = Vec::new();
    let base = match (listen, sock) {
        (Listener::Tcp(_), _) => format!(
            "nbd{s}://{user}localhost:{}/{}",
            listen.port().unwrap_or(10809),
            pct(export)
        ),
        (_, Some(p)) => {
            query.push(format!("socket={}", pct(&p.to_string_lossy())));
            format!("nbd{s}+unix://{user}/{}", pct(export))
        }
        _ => return String::new(),
    };
    match tls {
        Some(server::Credentials::X509(d)) => {
            query.push(format!("tls-certificates={}", pct(&d.to_string_lossy())))
        }
        Some(server::Credentials::Psk(f, _)) => {
            query.push(format!("tls-psk-file={}", pct(&f.to_string_lossy())))
        }
        None => {}
    }
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Load the TLS credentials the flags ask for.
fn tls_config(spec: &cli::TlsSpec) -> anyhow::Result<Option<Arc<server::TlsConfig>>> {
    use server::{TlsConfig, TlsMode};
    if spec.mode == TlsMode::Off {
        return Ok(None);
    }
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let cfg = if let Some(f) = &spec.psk {
        TlsConfig::psk(spec.mode, &abs(f))
    } else {
        let dir = match &spec.certificates {
            Some(d) => abs(d),
            None => server::default_certificates_dirs()
                .into_iter()
                .find(|d| d.join("server-cert.pem").exists())
                .with_context(|| {
                    format!(
                        "--tls needs --tls-certificates=DIR or --tls-psk=FILE (no server-cert.pem in {})",
                        server::default_certificates_dirs()
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
        };
        TlsConfig::x509(spec.mode, &dir, spec.verify_peer)
    };
    cfg.map(|c| Some(Arc::new(c)))
        .map_err(|e| anyhow::anyhow!(e))
}

async fn serve(config: Config, mut daemon: Option<daemon::Daemon>) -> anyhow::Result<ExitCode> {
    let tls = tls_config(&config.tls)?;
    let (tx, rx) = watch::channel(false);
    let mut _tmp = None;
    let mut sock_path = None;
    let listener = match &config.listen {
        ListenSpec::Stdio => Listener::Stdio,
        ListenSpec::Systemd => Listener::from_systemd()
            .context("socket activation")?
            .context("LISTEN_FDS is set but LISTEN_PID is not this process")?,
        ListenSpec::Unix(p) => {
            let path = match p {
                Some(p) => p.clone(),
                None => {
                    let (t, p) = temp_sock()?;
                    _tmp = Some(t);
                    p
                }
            };
            sock_path = Some(path.clone());
            Listener::unix(path.clone())
                .with_context(|| format!("cannot listen on {}", path.display()))?
        }
        ListenSpec::Tcp(addr, port) => Listener::tcp(addr, *port)
            .await
            .with_context(|| format!("cannot listen on {addr}:{port}"))?,
    };
    // Signals: finish in-flight requests, then exit 0. Installed before
    // readiness is announced so a signal right after it is handled.
    // Requests still running after SHUTDOWN_GRACE do not hold the process.
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let sig_tx = tx.clone();
        tokio::spawn(async move {
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            // Wake layers that wait (delay), then stop serving.
            nbdscript::backend::shutdown::begin();
            let _ = sig_tx.send(true);
            // A thread, not a task: it must fire even if every runtime
            // worker is stuck.
            let _ = std::thread::Builder::new()
                .name("shutdown-grace".into())
                .spawn(|| {
                    // At the grace the server closes connections whose
                    // client stopped reading; a second more lets those end
                    // cleanly (status 0).
                    std::thread::sleep(SHUTDOWN_GRACE + Duration::from_secs(1));
                    tracing::error!(
                        "shutdown: requests still running after the {}s grace; exiting anyway",
                        SHUTDOWN_GRACE.as_secs()
                    );
                    std::process::exit(1);
                });
        });
    }
    let the_uri = uri(
        &listener,
        sock_path.as_ref(),
        &config.export_name,
        tls.as_ref().map(|t| &t.credentials),
    );
    if let Some(pf) = &config.pidfile {
        std::fs::write(pf, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", pf.display()))?;
    }
    if config.print_uri {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{the_uri}");
        let _ = o.flush();
    }
    if let Some(d) = daemon.as_mut() {
        d.ready();
    }
    let shared = Arc::new(Shared {
        config: ServerConfig {
            stack: config.stack.clone(),
            readonly: config.readonly,
            export_name: config.export_name.clone(),
            extended_headers: config.extended_headers,
            threads: config.threads,
            tls,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            keepalive: config.keepalive,
            handshake_flags: config.handshake_flags,
        },
    });
    let port = listener.port();
    let single = matches!(listener, Listener::Stdio);
    let server = tokio::spawn(server::run(listener, shared, rx));

    let mut code = ExitCode::SUCCESS;
    if let Some(cmd) = &config.run {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        c.env("uri", &the_uri)
            .env("nbd", &the_uri)
            .env("exportname", &config.export_name);
        if let Some(p) = &sock_path {
            c.env("unixsocket", p);
        }
        if let Some(p) = port {
            c.env("port", p.to_string());
        }
        let mut child = c.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
        let mut rx2 = tx.subscribe();
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = rx2.changed() => None,
        };
        code = match status {
            Some(Ok(s)) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => ExitCode::from(c as u8),
                    // As a shell reports it: 128 + the signal.
                    (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
                    _ => ExitCode::from(1),
                }
            }
            Some(Err(e)) => {
                eprintln!("nbdscript: --run command failed: {e}");
                ExitCode::from(1)
            }
            None => {
                let _ = child.kill().await;
                ExitCode::from(1)
            }
        };
        let _ = tx.send(true);
    } else if single {
        // The stdio connection ends the server by itself.
    }
    let _ = server.await;
    Ok(code)
}
