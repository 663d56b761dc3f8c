//! Listeners (TCP, Unix, a socket passed by systemd) and `run`, the accept
//! loop: a connection task per client, and on shutdown stop accepting,
//! let connections finish in-flight requests, then return.

use super::connection::{serve, serve_socket, Socket};
use super::Shared;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

/// Where clients come from.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    /// One client on standard input/output (`-s`).
    Stdio,
}

impl Listener {
    /// Bind a Unix socket, replacing a stale socket file.
    pub fn unix(path: PathBuf) -> std::io::Result<Listener> {
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            }
        }
        let l = UnixListener::bind(&path)?;
        Ok(Listener::Unix(l, path))
    }

    /// Bind TCP on `addr:port` (TCP_NODELAY is set per connection). `::`
    /// (the default) is one dual-stack socket taking IPv6 and IPv4
    /// clients, as nbdkit listens on both; on a host without IPv6 it
    /// falls back to `0.0.0.0`.
    pub async fn tcp(addr: &str, port: u16) -> std::io::Result<Listener> {
        let l = match TcpListener::bind((addr, port)).await {
            Err(e) if addr == "::" && e.kind() != std::io::ErrorKind::AddrInUse => {
                TcpListener::bind(("0.0.0.0", port)).await?
            }
            r => r?,
        };
        Ok(Listener::Tcp(l))
    }

    /// Adopt the socket systemd (or libnbd) passed as fd 3, when
    /// LISTEN_PID is ours and LISTEN_FDS ≥ 1.
    pub fn from_systemd() -> std::io::Result<Option<Listener>> {
        let pid_ok = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .map(|p| p == std::process::id())
            .unwrap_or(false);
        let n = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        if !pid_ok || n == 0 {
            return Ok(None);
        }
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        let fd = 3;
        // SAFETY: fd 3 was passed to us by the activator and is owned by
        // this process from here on.
        let family = unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            addr.ss_family as i32
        };
        use std::os::unix::io::FromRawFd;
        if family == libc::AF_UNIX {
            // SAFETY: see above; the fd is a listening Unix socket.
            let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            std_l.set_nonblocking(true)?;
            Ok(Some(Listener::Unix(
                UnixListener::from_std(std_l)?,
                PathBuf::new(),
            )))
        } else {
            // SAFETY: see above; the fd is a listening TCP socket.
            let std_l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std_l.set_nonblocking(true)?;
            Ok(Some(Listener::Tcp(TcpListener::from_std(std_l)?)))
        }
    }

    /// The local TCP port, if TCP.
    pub fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            _ => None,
        }
    }
}

/// Serve until `shutdown` becomes true, then wait for connections to end.
/// A test server is one line: `tokio::spawn(run(listener, shared, rx))`.
pub async fn run(listener: Listener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    let mut id: u64 = 0;
    match &listener {
        Listener::Stdio => {
            let span = info_span!("conn", id = 0, peer = "stdio");
            match stdio_socket() {
                Some(s) => {
                    serve_socket(Socket::Unix(s), shared.clone(), shutdown.clone())
                        .instrument(span)
                        .await
                }
                None => {
                    serve(
                        tokio::io::stdin(),
                        tokio::io::stdout(),
                        shared.clone(),
                        shutdown.clone(),
                    )
                    .instrument(span)
                    .await
                }
            }
            return;
        }
        _ => loop {
            if *shutdown.borrow() {
                break;
            }
            id += 1;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = conns.join_next(), if !conns.is_empty() => { id -= 1; continue; }
                res = accept(&listener) => match res {
                    Ok((sock, peer)) => {
                        let span = info_span!("conn", id, %peer);
                        info!(parent: &span, "accepted");
                        conns.spawn(serve_socket(sock, shared.clone(), shutdown.clone()).instrument(span));
                    }
                    Err(e) => {
                        warn!("accept failed: {e}");
                        // Out of descriptors or similar: back off briefly
                        // rather than spin.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        },
    }
    while conns.join_next().await.is_some() {}
    if let Listener::Unix(_, path) = &listener {
        if !path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Standard input as a Unix socket, when it is one (libnbd's
/// `connect_command` passes a socketpair): faster than tokio's stdio.
fn stdio_socket() -> Option<tokio::net::UnixStream> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: fstat/dup on fd 0, which this process owns.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return None;
        }
        let fd = libc::dup(0);
        if fd < 0 {
            return None;
        }
        let s = std::os::unix::net::UnixStream::from_raw_fd(fd);
        s.set_nonblocking(true).ok()?;
        tokio::net::UnixStream::from_std(s).ok()
    }
}

async fn accept(l: &Listener) -> std::io::Result<(Socket, String)> {
    match l {
        Listener::Unix(u, _) => {
            let (s, _) = u.accept().await?;
            Ok((Socket::Unix(s), "unix".to_string()))
        }
        Listener::Tcp(t) => {
            let (s, addr) = t.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Socket::Tcp(s), addr.to_string()))
        }
        Listener::Stdio => Err(std::io::Error::other("stdio has no accept")),
    }
}
