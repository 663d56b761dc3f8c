//! Starting a server process's work: bind the listener (a private socket
//! directory for `-U -`), load the TLS credentials, install the signal
//! handlers, write the pidfile, print the URI, announce readiness, serve,
//! and in captive mode (`--run`) stop when the command ends. What `main`
//! and the library's builder both call.

use super::captive;
use super::signals;
use super::socket_dir::SocketDir;
use super::uri::{uri, Address};
use super::{Listener, ServerConfig, Shared, TlsConfig, TlsMode, TlsNames};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `-U PATH`; `None` for `-U -` (a private temp socket).
    Unix(Option<PathBuf>),
    /// `-i ADDR -p PORT`.
    Tcp(String, u16),
    /// `-s`: one client on standard input/output.
    Stdio,
    /// systemd socket activation (LISTEN_FDS).
    Systemd,
}

/// The TLS flags, checked; the credentials are loaded when serving starts.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    /// `--tls=off|on|require`.
    pub mode: TlsMode,
    /// `--tls-certificates=DIR`.
    pub certificates: Option<PathBuf>,
    /// `--tls-psk=FILE`.
    pub psk: Option<PathBuf>,
    /// `--tls-verify-peer`.
    pub verify_peer: bool,
    /// How errors name these settings (flags, or builder methods).
    pub names: TlsNames,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            mode: TlsMode::Off,
            certificates: None,
            psk: None,
            verify_peer: false,
            names: TlsNames::Flags,
        }
    }
}

/// Everything a server process does besides serving connections.
pub struct Launch {
    /// What every connection needs (its `tls` is filled from [`Launch::tls`]).
    pub config: ServerConfig,
    /// Where to listen.
    pub listen: ListenSpec,
    /// TLS, loaded when serving starts.
    pub tls: TlsSpec,
    /// `-P FILE`: written once the socket accepts connections.
    pub pidfile: Option<PathBuf>,
    /// `--print-uri`.
    pub print_uri: bool,
    /// `--run CMD`: captive mode.
    pub run: Option<String>,
    /// Handle SIGINT and SIGTERM (a library user may not want that).
    pub signals: bool,
}

/// Load the TLS credentials the settings ask for; without any, the first
/// of `default_dirs` (nbdkit's) holding `server-cert.pem`.
pub(crate) fn load_tls(
    spec: &TlsSpec,
    default_dirs: &[PathBuf],
) -> Result<Option<Arc<TlsConfig>>, String> {
    if spec.mode == TlsMode::Off {
        if spec.verify_peer {
            return Err(spec.names.verify_peer_needs_tls().to_string());
        }
        return Ok(None);
    }
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let cfg = if let Some(f) = &spec.psk {
        TlsConfig::psk(spec.mode, &abs(f))
    } else {
        let dir = match &spec.certificates {
            Some(d) => abs(d),
            None => match default_dirs
                .iter()
                .find(|d| d.join("server-cert.pem").exists())
            {
                Some(d) => d.clone(),
                None => {
                    return Err(format!(
                        "{} (no server-cert.pem in {})",
                        spec.names.credentials_needed(),
                        default_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            },
        };
        TlsConfig::x509(spec.mode, &dir, spec.verify_peer, spec.names)
    };
    cfg.map(|c| Some(Arc::new(c)))
}

impl Launch {
    /// Build a tokio runtime (`threads` blocking workers) and
    /// [`Launch::serve`] on it.
    pub fn run(
        self,
        ready: impl FnOnce(&str),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<u8, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(self.config.threads.max(1))
            .build()
            .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
        rt.block_on(serve(self, ready, shutdown))
    }

    /// Serve (see [`serve`]) on the caller's tokio runtime.
    pub async fn serve(
        self,
        ready: impl FnOnce(&str),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<u8, String> {
        serve(self, ready, shutdown).await
    }
}

/// Serve until shutdown (a signal, `shutdown` completing, the `-s` client
/// leaving) or, in captive mode, until the command ends. `ready` is called
/// with the URI once the listener accepts connections and the pidfile and
/// URI are written. Returns the exit status: 0, or the captive command's.
async fn serve(
    mut launch: Launch,
    ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<u8, String> {
    let tls = load_tls(&launch.tls, &super::default_certificates_dirs())?;
    let (tx, rx) = watch::channel(false);
    let stop = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut _dir = None;
    let mut sock_path = None;
    let listener = match &launch.listen {
        ListenSpec::Stdio => Listener::Stdio,
        ListenSpec::Systemd => Listener::from_systemd()
            .map_err(|e| format!("socket activation: {e}"))?
            .ok_or("socket activation: LISTEN_FDS is set but LISTEN_PID is not this process")?,
        ListenSpec::Unix(p) => {
            let path = match p {
                Some(p) => p.clone(),
                None => {
                    let d = SocketDir::new()?;
                    let p = d.socket();
                    _dir = Some(d);
                    p
                }
            };
            sock_path = Some(path.clone());
            Listener::unix(path.clone())
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?
        }
        ListenSpec::Tcp(addr, port) => Listener::tcp(addr, *port)
            .await
            .map_err(|e| format!("cannot listen on {addr}:{port}: {e}"))?,
    };
    if launch.signals {
        signals::install(tx.clone())?;
    }
    // A layer's graceful shutdown (the exitwhen filter).
    let req = tx.clone();
    crate::backend::shutdown::on_request(move || {
        let _ = req.send(true);
    });
    let port = listener.port();
    let address = match (&sock_path, port) {
        (Some(p), _) => Some(Address::Unix(p)),
        (None, Some(port)) => Some(Address::Tcp(port)),
        _ => None,
    };
    let the_uri = address
        .map(|a| {
            uri(
                a,
                &launch.config.export_name,
                tls.as_ref().map(|t| &t.credentials),
            )
        })
        .unwrap_or_default();
    if let Some(pf) = &launch.pidfile {
        std::fs::write(pf, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pidfile {}: {e}", pf.display()))?;
    }
    if launch.print_uri {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{the_uri}");
        let _ = o.flush();
    }
    ready(&the_uri);
    launch.config.tls = tls;
    let export_name = launch.config.export_name.clone();
    let shared = Arc::new(Shared {
        config: launch.config,
    });
    let server = tokio::spawn(super::run(listener, shared, rx));
    let mut code = 0;
    if let Some(cmd) = &launch.run {
        let env = captive::Env {
            uri: &the_uri,
            unix_socket: sock_path.as_deref(),
            port,
            export_name: &export_name,
        };
        code = captive::run(cmd, &env, tx.subscribe()).await?;
        let _ = tx.send(true);
    }
    // Without --run, the server ends at a signal or when the `-s` client
    // leaves.
    let _ = server.await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error for TLS asked for with no credentials and none in the
    /// default directory (a fresh one), its path written `DEFAULT`.
    fn no_credentials(names: TlsNames) -> String {
        let dir = tempfile::tempdir().unwrap();
        let spec = TlsSpec {
            mode: TlsMode::Require,
            names,
            ..TlsSpec::default()
        };
        match load_tls(&spec, &[dir.path().to_path_buf()]) {
            Err(e) => e.replace(&dir.path().display().to_string(), "DEFAULT"),
            Ok(_) => panic!("TLS loaded without credentials"),
        }
    }

    #[test]
    fn tls_without_credentials_names_the_flags_or_the_builder_methods() {
        assert_eq!(
            no_credentials(TlsNames::Flags),
            "--tls needs --tls-certificates=DIR or --tls-psk=FILE (no server-cert.pem in DEFAULT)"
        );
        assert_eq!(
            no_credentials(TlsNames::Builder),
            "TLS needs Server::tls_certificates(dir) or Server::tls_psk(file) (no server-cert.pem in DEFAULT)"
        );
    }
}
