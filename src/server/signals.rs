//! SIGINT and SIGTERM: finish in-flight requests, then exit 0. Requests
//! still running after [`SHUTDOWN_GRACE`] do not hold the process: it
//! exits with status 1 a second later.

use std::time::Duration;
use tokio::sync::watch;

/// How long in-flight requests may run after SIGTERM/SIGINT before the
/// process exits anyway. The same 10 s as the server's wait for clients
/// that stopped reading their replies.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Install the handlers (before readiness is announced, so a signal right
/// after it is handled): on a signal, wake the layers that wait (delay),
/// then set `shutdown` to true.
pub fn install(shutdown: watch::Sender<bool>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("install SIGINT handler: {e}"))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("install SIGTERM handler: {e}"))?;
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        crate::backend::shutdown::begin();
        let _ = shutdown.send(true);
        // A thread, not a task: it must fire even if every runtime worker
        // is stuck.
        let _ = std::thread::Builder::new()
            .name("shutdown-grace".into())
            .spawn(|| {
                // At the grace the server closes connections whose client
                // stopped reading; a second more lets those end cleanly
                // (status 0).
                std::thread::sleep(SHUTDOWN_GRACE + Duration::from_secs(1));
                tracing::error!(
                    "shutdown: requests still running after the {}s grace; exiting anyway",
                    SHUTDOWN_GRACE.as_secs()
                );
                std::process::exit(1);
            });
    });
    Ok(())
}
