//! An in-process server for unit tests: [`TestServer::start`] serves a
//! stack on a private Unix socket from a thread of its own (the same
//! `run(listener, shared, shutdown)` the binary uses); dropping it shuts
//! the server down and waits for it.

use super::socket_dir::SocketDir;
use super::{run, Listener, ServerConfig, Shared};
use crate::backend::Stack;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A server running in this process until dropped.
pub struct TestServer {
    socket: PathBuf,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: SocketDir,
}

impl TestServer {
    /// Serve `stack` (read-write, extended headers on) on a private socket;
    /// returns once the socket accepts connections.
    pub fn start(stack: Stack) -> TestServer {
        let dir = SocketDir::new().expect("private socket directory");
        let socket = dir.socket();
        let (tx, rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = Listener::unix(path).expect("bind the test socket");
                let shared = Arc::new(Shared {
                    config: ServerConfig {
                        stack,
                        readonly: false,
                        export_name: String::new(),
                        extended_headers: true,
                        threads: 4,
                        tls: None,
                        handshake_timeout: Duration::from_secs(30),
                        max_connections: 64,
                        keepalive: false,
                handshake_flags: crate::protocol::handshake::GLOBAL_FLAGS,
                    },
                });
                let _ = ready_tx.send(());
                run(listener, shared, rx).await;
            });
        });
        ready_rx.recv().expect("the test server started");
        TestServer {
            socket,
            shutdown: tx,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The NBD URI of the export.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
