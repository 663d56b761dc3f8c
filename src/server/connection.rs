//! One client connection, whatever its transport: a thread of its own runs
//! the handshake and then the request loop (`thread.rs`) with blocking
//! I/O. The async side here only watches it: it ends a handshake that
//! outlives `--timeout`, and on shutdown ends the connection's reads so it
//! finishes in-flight requests (and its writes, after a grace period, if
//! the client does not read its replies).

use super::dispatch::ConnInfo;
use super::negotiate::negotiate;
use super::transport::{Closer, Transport};
use super::Shared;
use crate::backend::ThreadModel;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long shutdown waits for a connection's last replies to be read.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves once the server is shutting down (never if it cannot).
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await
    }
}

/// Where a connection is, for the listener's connection limit.
pub struct ConnState {
    pub closer: Closer,
    /// Still in the handshake (evictable when the limit is reached).
    pub negotiating: AtomicBool,
}

/// Serve one connection until the client disconnects or the server shuts
/// down. Never panics on client input; errors end only this connection.
pub async fn serve(
    t: Transport,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    state: Arc<ConnState>,
) {
    let (phase_tx, mut phase) = watch::channel(Phase::Handshake);
    let span = tracing::Span::current();
    let stop = shutdown.clone();
    let sh = shared.clone();
    let st = state.clone();
    let spawned = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || {
            let _e = span.entered();
            run(t, &sh, &stop, &st, &phase_tx);
            let _ = phase_tx.send(Phase::Done);
        });
    if let Err(e) = spawned {
        warn!("cannot start a connection thread: {e}");
        return;
    }
    let closer = &state.closer;
    let timeout = shared.config.handshake_timeout;
    let done = |p: &Phase| *p == Phase::Done;
    let handshake = tokio::time::timeout(timeout, phase.wait_for(|p| *p != Phase::Handshake));
    tokio::select! {
        r = handshake => {
            if r.is_err() {
                warn!("handshake not finished after {}s: closing", timeout.as_secs_f64());
                closer.shutdown_both();
            }
        }
        _ = shutdown_requested(&mut shutdown) => {}
    }
    let ended = tokio::select! {
        _ = phase.wait_for(done) => true,
        _ = shutdown_requested(&mut shutdown) => false,
    };
    if !ended {
        closer.shutdown_read();
        if tokio::time::timeout(SHUTDOWN_GRACE, phase.wait_for(done))
            .await
            .is_err()
        {
            warn!("client is not reading its replies: closing the connection");
            closer.shutdown_both();
            let _ = phase.wait_for(done).await;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Handshake,
    Transmission,
    Done,
}

/// The connection's thread: handshake, then the request loop.
fn run(
    mut t: Transport,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
    state: &ConnState,
    phase: &watch::Sender<Phase>,
) {
    let peer = super::peer::of(&t);
    if let Err(e) = shared.config.stack.preconnect(&peer, shared.config.readonly) {
        warn!(?peer, "connection refused: {e}");
        return;
    }
    let neg = match negotiate(&mut t, shared, &state.negotiating) {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            debug!("handshake ended: {e}");
            return;
        }
    };
    let _ = phase.send(Phase::Transmission);
    let ci = ConnInfo::of(&neg);
    let export = neg.export;
    let model = export.top().thread_model();
    let mode = match (model == ThreadModel::Parallel, export.waits()) {
        (false, _) => super::thread::Mode::One,
        (true, false) => super::thread::Mode::Helper,
        (true, true) => super::thread::Mode::Pool(shared.config.threads.max(1)),
    };
    if let Err(e) = super::thread::request_loop(&t, &export, &ci, mode) {
        warn!("connection closed: {e}");
    }
    if *stop.borrow() {
        // Not a client request: the log filter leaves it out.
        let _ = crate::backend::shutdown::server_call(|| export.flush());
    }
    export.close();
    info!("connection closed");
}
