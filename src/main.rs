//! nbdscript's entry point: parse the command line, then serve (or print a
//! hexdump / plugin dump). anyhow only here and in cli.rs.

use anyhow::Context;
use nbdscript::cli::{self, Config, ListenSpec};
use nbdscript::hexdump::HexDump;
use nbdscript::server::{self, Listener, ServerConfig, Shared};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

fn main() -> ExitCode {
    let args = cli::parse();
    init_tracing(args.verbose);
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nbdscript: {e}");
            return ExitCode::from(2);
        }
    };
    match real_main(config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nbdscript: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: bool) {
    let default = if verbose { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn real_main(config: Config) -> anyhow::Result<ExitCode> {
    if config.dump_plugin {
        let mut out = std::io::stdout().lock();
        writeln!(out, "name={}", config.plugin_name)?;
        writeln!(out, "version={}", env!("CARGO_PKG_VERSION"))?;
        for (k, v) in &config.dump {
            writeln!(out, "{k}={v}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some((off, len)) = config.hexdump {
        return hexdump(&config, off, len).map(|_| ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.threads)
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(serve(config))
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
    let mut h = HexDump::new(start);
    let mut out = std::io::stdout().lock();
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(1 << 20) as u32;
        let data = export
            .read(n, pos)
            .map_err(|e| anyhow::anyhow!("read at {pos}: {e}"))?;
        let text = h.feed(&data);
        if out.write_all(text.as_bytes()).is_err() {
            return Ok(()); // e.g. piped into head
        }
        pos += n as u64;
    }
    let _ = out.write_all(h.finish().as_bytes());
    export.close();
    Ok(())
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

fn temp_sock() -> anyhow::Result<(TempSock, PathBuf)> {
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    for i in 0..100u32 {
        let dir = base.join(format!("nbdscript{}-{}", std::process::id(), i));
        if std::fs::create_dir(&dir).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            let sock = dir.join("socket");
            return Ok((TempSock { dir }, sock));
        }
    }
    anyhow::bail!(
        "cannot create a private socket directory in {}",
        base.display()
    )
}

fn uri(listen: &Listener, sock: Option<&PathBuf>, export: &str) -> String {
    match (listen, sock) {
        (Listener::Tcp(_), _) => format!(
            "nbd://localhost:{}/{}",
            listen.port().unwrap_or(10809),
            export
        ),
        (_, Some(p)) => format!("nbd+unix:///{}?socket={}", export, p.display()),
        _ => String::new(),
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
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
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let sig_tx = tx.clone();
        tokio::spawn(async move {
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            let _ = sig_tx.send(true);
        });
    }
    let the_uri = uri(&listener, sock_path.as_ref(), &config.export_name);
    if let Some(pf) = &config.pidfile {
        std::fs::write(pf, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", pf.display()))?;
    }
    if config.print_uri {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{the_uri}");
        let _ = o.flush();
    }
    let shared = Arc::new(Shared {
        config: ServerConfig {
            stack: config.stack.clone(),
            readonly: config.readonly,
            export_name: config.export_name.clone(),
            extended_headers: config.extended_headers,
            threads: config.threads,
        },
        global_lock: Arc::new(parking_lot::Mutex::new(())),
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
            Some(Ok(s)) => match s.code() {
                Some(c) => ExitCode::from(c as u8),
                None => ExitCode::from(1),
            },
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
