//! The server: listeners (TCP, Unix, stdin, systemd activation), the
//! handshake, the two request loops (connection threads with blocking
//! socket I/O in `thread`, the async loop with a worker pool in
//! `connection`), captive `--run` and shutdown.
//! Uses tokio; talks to `protocol` for frames and `backend` for data.
//! Must not import rhai or any plugin.

mod connection;
mod dispatch;
mod listen;
mod negotiate;
mod thread;

pub use listen::{run, Listener};

use crate::backend::Stack;

/// What every connection needs to know.
#[derive(Clone)]
pub struct ServerConfig {
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
}

/// Shared per-process state. No lock is held across a whole request:
/// a layer that declares `SerializeAllRequests` or `SerializeRequests`
/// (scripts) takes its lock per call, so a long request that runs in
/// chunks (an emulated zero of 2^62 bytes) lets other connections in
/// between them.
pub struct Shared {
    pub config: ServerConfig,
}
