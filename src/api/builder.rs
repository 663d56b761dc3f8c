//! `Server`: serve a plugin from a user's `main` (the library's builder
//! over `server::Launch`).

use super::adapter::{FilterLayer, PluginLayer};
use super::{Errno, Error, Filter, Plugin, Result};
use crate::backend::{self, Stack};
use crate::params::Params;
use crate::server::{Launch, ListenSpec, ServerConfig, TlsSpec};
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
}

impl Server {
    /// A server for `plugin`.
    pub fn new(plugin: impl Plugin) -> Server {
        Server {
            plugin: Arc::new(PluginLayer(Arc::new(plugin))),
            filters: Vec::new(),
            listen: None,
            readonly: false,
            export_name: String::new(),
            threads: 16,
            run: None,
            pidfile: None,
            print_uri: false,
        }
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
    pub fn builtin_filter(mut self, name: &str, params: &[(&str, &str)]) -> Result<Server> {
        let p = Params::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let bad = |e: crate::params::ConfigError| Error::new(Errno::Inval, e.0);
        let f = if let Some(def) = crate::filters::find(name) {
            (def.make)(&p).map_err(bad)?
        } else if name.contains('/') || name.ends_with(".rhai") {
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
    /// address).
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

    /// Serve until SIGINT or SIGTERM (in-flight requests finish), or in
    /// captive mode until the command ends. Returns the exit status: 0,
    /// or the captive command's.
    pub fn run(self) -> Result<u8> {
        let launch = Launch {
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
            tls: TlsSpec::default(),
            pidfile: self.pidfile,
            print_uri: self.print_uri,
            run: self.run,
            signals: true,
        };
        launch.run(|| {}).map_err(Error::io)
    }
}
