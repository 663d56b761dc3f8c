//! Captive mode (`--run CMD`): run CMD under `sh -c` with `$uri` (and
//! `$nbd`), `$unixsocket`, `$port`, `$exportname` set, and give its exit
//! status as the server's (128 + N when a signal N killed it, as a shell
//! reports it).

use std::path::Path;
use tokio::sync::watch;

/// What CMD is told about the server.
pub struct Env<'a> {
    pub uri: &'a str,
    pub unix_socket: Option<&'a Path>,
    pub port: Option<u16>,
    pub export_name: &'a str,
}

/// Run `cmd` until it ends, or until `shutdown` turns true (a signal):
/// then it is killed and the status is 1. Errors starting it are
/// returned; errors waiting for it are logged and give status 1.
pub async fn run(
    cmd: &str,
    env: &Env<'_>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<u8, String> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    c.env("uri", env.uri).env("nbd", env.uri);
    c.env("exportname", env.export_name);
    if let Some(p) = env.unix_socket {
        c.env("unixsocket", p);
    }
    if let Some(p) = env.port {
        c.env("port", p.to_string());
    }
    let mut child = c.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = shutdown.wait_for(|&down| down) => None,
    };
    Ok(match status {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(c), _) => c as u8,
                (None, Some(sig)) => (128 + sig) as u8,
                _ => 1,
            }
        }
        Some(Err(e)) => {
            tracing::error!("--run command failed: {e}");
            1
        }
        None => {
            let _ = child.kill().await;
            1
        }
    })
}
