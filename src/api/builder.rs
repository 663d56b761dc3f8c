//! `Server`: serve a plugin from a user's `main` (the library's builder
//! over `server::Launch`): blocking ([`Server::run`]), on the caller's
//! tokio runtime until a shutdown future ([`Server::serve`]), or in the
//! background with a handle ([`Server::start`], a test server in one line).

use super::adapter::{FilterLayer, PluginLayer};
use super::{Errno, Error, Filter, Plugin, Result};
use crate::backend::{self, Stack};
use crate::params::{ConfigError, Params};
use crate::server::{Launch, ListenSpec, ServerConfig, TlsMode, TlsNames, TlsSpec};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A server for one plugin and its filters. Without an address it
/// listens on a private Unix socket (`nbd+unix:///?socket=...`).
///
/// ```no_run
/// # use nbdscript::{Plugin, Result, Server};
/// # struct MyDisk;
/// # impl Plugin for MyDisk {
/// #     type Handle = ();
/// #     fn open(&self, _: bool, _: &str) -> Result<()> { Ok(()) }
/// #     fn get_size(&self, _: &()) -> Result<u64> { Ok(512) }
/// #     fn pread(&self, _: &(), b: &mut [u8], _: u64, _: u32) -> Result<()> { b.fill(0); Ok(()) }
/// # }
/// // Serve MyDisk read-only behind the built-in `offset` filter to one
/// // command, and exit with its status.
/// let status = Server::new(MyDisk)
///     .builtin_filter("offset", &[("offset", "1024")])?
///     .readonly(true)
///     .run_command("nbdinfo $uri")
///     .run()?;
/// std::process::exit(status.into());
/// # Ok::<(), nbdscript::Error>(())
/// ```
pub struct Server {
    plugin: Arc<dyn backend::Plugin>,
    filters: Vec<Arc<dyn backend::Filter>>,
    listen: Option<ListenSpec>,
    readonly: bool,
    export_name: String,
    threads: usize,
    run: Option<String>,
    pidfile: Option<PathBuf>,
    print_uri: bool,
    tls: TlsSpec,
}

/// `KEY=VALUE` pairs as the layers take them.
fn params(pairs: &[(&str, &str)]) -> Params {
    Params::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn bad(e: ConfigError) -> Error {
    Error::new(Errno::Inval, e.0)
}

/// A path to a script (or `-`), as the command line tells them apart.
fn is_script(name: &str) -> bool {
    name == "-" || name.contains('/') || name.ends_with(".rhai")
}

impl Server {
    /// A server for `plugin`.
    pub fn new(plugin: impl Plugin) -> Server {
        Server::with(Arc::new(PluginLayer(Arc::new(plugin))))
    }

    fn with(plugin: Arc<dyn backend::Plugin>) -> Server {
        Server {
            plugin,
            filters: Vec::new(),
            listen: None,
            readonly: false,
            export_name: String::new(),
            threads: 16,
            run: None,
            pidfile: None,
            print_uri: false,
            tls: TlsSpec {
                names: TlsNames::Builder,
                ..TlsSpec::default()
            },
        }
    }

    /// A server for a built-in plugin by name (`memory`, `file`, `null`,
    /// `pattern`, `data`, ... as listed by `nbdscript --help`) with its
    /// `KEY=VALUE` parameters, or a plugin script (a path to a `.rhai`
    /// file, or a name from the built-in script library). An unknown name
    /// or parameter is an EINVAL error naming it.
    ///
    /// ```
    /// # use nbdscript::Server;
    /// let server = Server::builtin("memory", &[("size", "1M")])?;
    /// assert!(Server::builtin("memory", &[("colour", "red")]).is_err());
    /// assert!(Server::builtin("no-such-plugin", &[]).is_err());
    /// # Ok::<(), nbdscript::Error>(())
    /// ```
    pub fn builtin(name: &str, params_: &[(&str, &str)]) -> Result<Server> {
        let p = params(params_);
        let plugin = if let Some(def) = crate::plugins::find(name) {
            (def.make)(&p).map_err(bad)?
        } else if is_script(name) || crate::script::is_stdlib_plugin(name) {
            let opts = crate::script::ScriptOptions::default();
            crate::script::load_plugin(name, &p, &opts).map_err(bad)?
        } else {
            return Err(Error::new(
                Errno::Inval,
                format!("unknown plugin {name:?}: see `nbdscript --help` for the built-in plugins, or give a path to a .rhai script"),
            ));
        };
        Ok(Server::with(plugin))
    }

    /// Stack `filter`. The first filter added is nearest the client, as
    /// with nbdkit's `--filter`.
    pub fn filter(mut self, filter: impl Filter) -> Server {
        self.filters.push(Arc::new(FilterLayer(Arc::new(filter))));
        self
    }

    /// Stack a built-in filter by name (`cow`, `offset`, `delay`, ... as
    /// listed by `nbdscript --help`) with its `KEY=VALUE` parameters, or a
    /// filter script (a path to a `.rhai` file).
    pub fn builtin_filter(mut self, name: &str, params_: &[(&str, &str)]) -> Result<Server> {
        let p = params(params_);
        let f = if let Some(def) = crate::filters::find(name) {
            (def.make)(&p).map_err(bad)?
        } else if is_script(name) || crate::script::is_stdlib_filter(name) {
            let opts = crate::script::ScriptOptions::default();
            crate::script::load_filter(name, &p, &opts).map_err(bad)?.0
        } else {
            return Err(Error::new(
                Errno::Inval,
                format!("unknown filter {name:?}: see `nbdscript --help` for the built-in filters, or give a path to a .rhai file"),
            ));
        };
        self.filters.push(f);
        Ok(self)
    }

    /// Listen on the Unix socket `path` (`-U PATH`).
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Server {
        self.listen = Some(ListenSpec::Unix(Some(path.into())));
        self
    }

    /// Listen on TCP `addr:port` (`-i ADDR -p PORT`; `"::"` for every
    /// address; port 0 for one the system chooses, shown in the URI).
    pub fn tcp(mut self, addr: &str, port: u16) -> Server {
        self.listen = Some(ListenSpec::Tcp(addr.to_string(), port));
        self
    }

    /// Captive mode (`--run`): run `command` under `sh -c` with `$uri`,
    /// `$unixsocket`, `$port` and `$exportname` set, and stop serving when
    /// it ends; [`Server::run`] then returns its exit status.
    pub fn run_command(mut self, command: &str) -> Server {
        self.run = Some(command.to_string());
        self
    }

    /// Serve read-only whatever the plugin can do (`-r`).
    pub fn readonly(mut self, readonly: bool) -> Server {
        self.readonly = readonly;
        self
    }

    /// The export name listed by NBD_OPT_LIST and used in `$uri` (`-e`).
    pub fn export_name(mut self, name: &str) -> Server {
        self.export_name = name.to_string();
        self
    }

    /// Most threads per connection for layers that wait on I/O
    /// (`--threads`; default 16).
    pub fn threads(mut self, n: usize) -> Server {
        self.threads = n.max(1);
        self
    }

    /// Write the process id to `path` once clients can connect (`-P`).
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Server {
        self.pidfile = Some(path.into());
        self
    }

    /// Print the NBD URI on standard output once clients can connect.
    pub fn print_uri(mut self, yes: bool) -> Server {
        self.print_uri = yes;
        self
    }

    /// Offer TLS with the X.509 credentials in `dir`
    /// (`--tls=on --tls-certificates=DIR`): `server-cert.pem`,
    /// `server-key.pem`, and `ca-cert.pem` to verify clients. The URI
    /// becomes `nbds+unix://` or `nbds://` with `tls-certificates=DIR`.
    pub fn tls_certificates(mut self, dir: impl Into<PathBuf>) -> Server {
        self.tls.certificates = Some(dir.into());
        if self.tls.mode == TlsMode::Off {
            self.tls.mode = TlsMode::On;
        }
        self
    }

    /// Offer TLS with the pre-shared keys of a psktool file
    /// (`--tls=on --tls-psk=FILE`). The URI carries the first user name
    /// and `tls-psk-file=FILE`.
    ///
    /// ```no_run
    /// # use nbdscript::Server;
    /// // Only clients that know a key get past the handshake.
    /// let server = Server::builtin("memory", &[("size", "1G")])?
    ///     .tls_psk("/etc/nbd/keys.psk")
    ///     .tls_require(true)
    ///     .start()?;
    /// println!("{}", server.uri()); // nbds+unix://alice@/?socket=...&tls-psk-file=...
    /// # Ok::<(), nbdscript::Error>(())
    /// ```
    pub fn tls_psk(mut self, file: impl Into<PathBuf>) -> Server {
        self.tls.psk = Some(file.into());
        if self.tls.mode == TlsMode::Off {
            self.tls.mode = TlsMode::On;
        }
        self
    }

    /// Require TLS (`--tls=require`): every option but STARTTLS is refused
    /// before it, so no data is served in plain text. Without it TLS is
    /// only offered. Needs [`Server::tls_certificates`] or
    /// [`Server::tls_psk`] (or certificates in nbdkit's default
    /// directories).
    pub fn tls_require(mut self, yes: bool) -> Server {
        self.tls.mode = if yes { TlsMode::Require } else { TlsMode::On };
        self
    }

    /// Ask X.509 clients for a certificate signed by `ca-cert.pem`
    /// (`--tls-verify-peer`). Needs TLS: with TLS off, serving fails
    /// with an error naming this method rather than serving unverified.
    ///
    /// ```
    /// use nbdscript::Server;
    /// let server = Server::builtin("memory", &[("size", "1M")])?.tls_verify_peer(true);
    /// let err = server.start().err().expect("served with TLS off");
    /// assert!(err.to_string().contains("Server::tls_verify_peer(true) needs TLS"), "{err}");
    /// # Ok::<(), nbdscript::Error>(())
    /// ```
    pub fn tls_verify_peer(mut self, yes: bool) -> Server {
        self.tls.verify_peer = yes;
        self
    }

    fn launch(self, signals: bool) -> Launch {
        Launch {
            config: ServerConfig {
                stack: Stack::with_filters(self.plugin, self.filters),
                readonly: self.readonly,
                export_name: self.export_name,
                extended_headers: true,
                threads: self.threads,
                tls: None,
                handshake_timeout: Duration::from_secs(30),
                max_connections: 1000,
                keepalive: false,
                handshake_flags: crate::protocol::handshake::GLOBAL_FLAGS,
            },
            listen: self.listen.unwrap_or(ListenSpec::Unix(None)),
            tls: self.tls,
            pidfile: self.pidfile,
            print_uri: self.print_uri,
            run: self.run,
            signals,
        }
    }

    /// Serve until SIGINT or SIGTERM (in-flight requests finish), or in
    /// captive mode until the command ends. Returns the exit status: 0,
    /// or the captive command's.
    pub fn run(self) -> Result<u8> {
        self.launch(true)
            .run(|_| {}, std::future::pending())
            .map_err(Error::io)
    }

    /// Serve on the caller's tokio runtime until `shutdown` completes
    /// (then in-flight requests finish and connections close), or in
    /// captive mode until the command ends. No signal handlers are
    /// installed: the caller decides when to stop. Returns 0, or the
    /// captive command's exit status.
    ///
    /// ```no_run
    /// # async fn f() -> nbdscript::Result<()> {
    /// use nbdscript::Server;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// // ... hand `stop` to whoever decides: `stop.send(())` ends serving.
    /// let server = Server::builtin("memory", &[("size", "64M")])?.tcp("::", 10809);
    /// server.serve(async { stopped.await.ok(); }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<u8> {
        self.launch(false)
            .serve(|_| {}, shutdown)
            .await
            .map_err(Error::io)
    }

    /// Serve in the background (a thread with its own tokio runtime) and
    /// return once clients can connect. The server stops when the handle
    /// is dropped or [`Running::stop`] is called: a test server is one line.
    ///
    /// ```
    /// use nbdscript::Server;
    /// let server = Server::builtin("memory", &[("size", "1M")])?.start()?;
    /// assert!(server.uri().starts_with("nbd+unix:///?socket="));
    /// // ... connect clients to server.uri() ...
    /// assert_eq!(server.stop()?, 0);
    /// # Ok::<(), nbdscript::Error>(())
    /// ```
    pub fn start(self) -> Result<Running> {
        let launch = self.launch(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, uri) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nbd-server".into())
            .spawn(move || {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                launch.run(
                    |uri| {
                        let _ = ready.send(uri.to_string());
                    },
                    shutdown,
                )
            })
            .map_err(|e| Error::io(format!("cannot start the server thread: {e}")))?;
        match uri.recv() {
            Ok(uri) => Ok(Running {
                uri,
                stop: Some(stop),
                thread: Some(thread),
            }),
            // It failed before it could accept connections.
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => Error::io(e),
                _ => Error::io("the server thread ended before it was ready"),
            }),
        }
    }
}

/// A server started with [`Server::start`], serving until dropped or
/// stopped.
pub struct Running {
    uri: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::result::Result<u8, String>>>,
}

impl Running {
    /// The NBD URI clients connect to (`nbd+unix:///?socket=...`,
    /// `nbds://localhost:PORT/...`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Stop: accept no more clients, let in-flight requests finish, close
    /// the connections, and wait. Returns 0, or the captive command's exit
    /// status.
    pub fn stop(mut self) -> Result<u8> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<u8> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r.map_err(Error::io),
            Some(Err(_)) => Err(Error::io("the server thread panicked")),
            None => Ok(0),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_builder_methods() {
        let launch = Server::builtin("memory", &[("size", "1M")])
            .unwrap()
            .tls_require(true)
            .launch(false);
        assert_eq!(launch.tls.mode, TlsMode::Require);
        let e = crate::server::load_tls(&launch.tls, &[])
            .err()
            .expect("TLS loaded without credentials");
        assert_eq!(
            e,
            "TLS needs Server::tls_certificates(dir) or Server::tls_psk(file) (no server-cert.pem in )"
        );
    }

    #[test]
    fn tls_verify_peer_without_tls_is_an_error_naming_the_method() {
        let launch = Server::builtin("memory", &[("size", "1M")])
            .unwrap()
            .tls_verify_peer(true)
            .launch(false);
        assert_eq!(launch.tls.mode, TlsMode::Off);
        let e = crate::server::load_tls(&launch.tls, &[])
            .err()
            .expect("verify-peer with TLS off was ignored");
        assert_eq!(
            e,
            "Server::tls_verify_peer(true) needs TLS: give Server::tls_certificates(dir) (or Server::tls_require(true) with certificates in nbdkit's default directories)"
        );
        // Without verify-peer, TLS off is fine.
        let launch = Server::builtin("memory", &[("size", "1M")])
            .unwrap()
            .launch(false);
        assert!(crate::server::load_tls(&launch.tls, &[]).unwrap().is_none());
    }
}
