//! The server: listeners (TCP, Unix, stdin, systemd activation) and the
//! connection limit (`listen`), transports (socket, TLS, pipes), the
//! handshake with STARTTLS, the one request loop (connection threads with
//! blocking I/O in `thread`), and shutdown. tokio runs only the listeners
//! and the watch over each connection; talks to `protocol` for frames and
//! `backend` for data. Starting a server process (`launch`): the private
//! socket of `-U -`, signals, the pidfile, the URI, captive `--run`.
//! Must not import rhai or any plugin.

mod captive;
mod connection;
mod dispatch;
#[cfg(test)]
pub(crate) mod inprocess;
mod launch;
mod listen;
mod negotiate;
mod peer;
mod redact;
mod signals;
mod socket;
mod socket_dir;
mod thread;
mod tls;
mod transport;
mod uri;

pub use redact::for_client;
pub use launch::{Launch, ListenSpec, TlsSpec};
#[cfg(test)]
pub(crate) use launch::load_tls;
pub use listen::{run, Listener};
pub use tls::{default_certificates_dirs, Credentials, TlsConfig, TlsMode, TlsNames};

use crate::backend::Stack;
use std::sync::Arc;

/// What every connection needs to know.
#[derive(Clone)]
pub struct ServerConfig {
    /// The plugin and its filters.
    pub stack: Stack,
    /// `-r`: read-only whatever the plugin can do.
    pub readonly: bool,
    /// `-e`: the export name listed by NBD_OPT_LIST (and used in URIs).
    pub export_name: String,
    /// Offer NBD_OPT_EXTENDED_HEADERS.
    pub extended_headers: bool,
    /// `--threads`: most worker threads per connection for exports whose
    /// calls wait on I/O or a timer (nbdkit's threads per connection).
    pub threads: usize,
    /// TLS, when `--tls` is on or require.
    pub tls: Option<Arc<TlsConfig>>,
    /// `--timeout`: the longest a handshake may take.
    pub handshake_timeout: std::time::Duration,
    /// `--max-connections`: open connections at most; at the limit the
    /// oldest one still in its handshake makes room for a new one.
    pub max_connections: usize,
    /// `--keepalive`: TCP keepalive on accepted connections.
    pub keepalive: bool,
    /// Global handshake flags offered in the greeting (all supported ones
    /// unless `--mask-handshake` masks some off).
    pub handshake_flags: u16,
}

/// Shared per-process state. No lock is held across a whole request:
/// a layer that declares `SerializeAllRequests` or `SerializeRequests`
/// (scripts) takes its lock per call, so a long request that runs in
/// chunks (an emulated zero of 2^62 bytes) lets other connections in
/// between them.
pub struct Shared {
    /// The configuration.
    pub config: ServerConfig,
}
