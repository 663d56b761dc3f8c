//! Listeners (TCP, Unix, a socket passed by systemd, stdio) and `run`, the
//! accept loop: a connection per client up to `--max-connections` (at the
//! limit, or out of descriptors, the oldest connection still in its
//! handshake is closed to make room), and on shutdown stop accepting, let
//! connections finish in-flight requests, then return.

use super::connection::{serve, ConnState};
use super::socket::Socket;
use super::transport::{Pipes, Transport};
use super::Shared;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

/// Where clients come from.
pub enum Listener {
    /// The socket, its path, and the (device, inode) of the socket file
    /// this process created (removed at exit only if still that file).
    Unix(UnixListener, PathBuf, Option<(u64, u64)>),
    Tcp(TcpListener),
    /// One client on standard input/output (`-s`).
    Stdio,
}

impl Listener {
    /// Bind a Unix socket. A stale socket file (nobody answers) is
    /// replaced; a live one is refused: "address already in use".
    pub fn unix(path: PathBuf) -> std::io::Result<Listener> {
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "address already in use: another server is listening on this socket",
                    ));
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        let l = UnixListener::bind(&path)?;
        let id = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(Listener::Unix(l, path, id))
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
                None,
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

/// The open connections, oldest first, for the connection limit.
#[derive(Default)]
struct Conns {
    map: parking_lot::Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

impl Conns {
    fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Close the oldest connection still in its handshake, never `keep`
    /// (the one just accepted: it has had no time to negotiate); false if
    /// none.
    fn evict_one(&self, keep: u64) -> bool {
        let mut m = self.map.lock();
        let victim = m
            .iter()
            .find(|(id, c)| **id != keep && c.negotiating.load(SeqCst))
            .map(|(id, _)| *id);
        match victim.and_then(|id| m.remove(&id)) {
            Some(c) => {
                c.closer.shutdown_both();
                true
            }
            None => false,
        }
    }
}

/// Serve until `shutdown` becomes true, then wait for connections to end.
/// A test server is one line: `tokio::spawn(run(listener, shared, rx))`.
pub async fn run(listener: Listener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    if let Listener::Stdio = listener {
        let span = info_span!("conn", id = 0, peer = "stdio");
        match stdio_transport() {
            Ok(t) => {
                let state = conn_state(&t);
                serve(t, shared.clone(), shutdown.clone(), state)
                    .instrument(span)
                    .await
            }
            Err(e) => warn!("cannot use standard input/output: {e}"),
        }
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let conns = Arc::new(Conns::default());
    let max = shared.config.max_connections.max(1);
    let mut id: u64 = 0;
    let mut failures = FailureLog::default();
    // Refusals at the limit come in floods too: logged as failures are.
    let mut refusals = FailureLog::default();
    // The connection accepted last, and when (ids start at 1).
    let mut newest = (0u64, Instant::now());
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tasks.join_next(), if !tasks.is_empty() => continue,
            res = accept(&listener, shared.config.keepalive) => match res {
                Ok((t, peer)) => {
                    if let Some(n) = failures.accepted(Instant::now()) {
                        warn!("{n} more accept failures since the last warning; accepting again");
                    }
                    id += 1;
                    // (`id` is not in the map yet: any handshake may go.)
                    if conns.len() >= max && !conns.evict_one(id) {
                        match refusals.failed(Instant::now()) {
                            Some(0) => warn!(%peer, "connection limit {max} reached: refusing"),
                            Some(n) => warn!(%peer, "connection limit {max} reached: refusing ({n} more refused since the last warning)"),
                            None => {}
                        }
                        continue;
                    }
                    if let Some(n) = refusals.accepted(Instant::now()) {
                        warn!("{n} more connections refused at the limit since the last warning");
                    }
                    let span = info_span!("conn", id, %peer);
                    info!(parent: &span, "accepted");
                    let state = conn_state(&t);
                    conns.map.lock().insert(id, state.clone());
                    newest = (id, Instant::now());
                    let (c, sh, rx) = (conns.clone(), shared.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        serve(t, sh, rx, state).instrument(span).await;
                        c.map.lock().remove(&id);
                    });
                }
                Err(e) => {
                    // Out of descriptors or similar: make room by closing
                    // an idle handshake, or back off briefly. Every retry
                    // may fail again: one warning a second.
                    match failures.failed(Instant::now()) {
                        Some(0) => warn!("accept failed: {e}"),
                        Some(n) => warn!("accept failed: {e} ({n} more since the last warning)"),
                        None => {}
                    }
                    // Never the connection just accepted: it has had no
                    // time to negotiate (once older it is fair game).
                    let keep = if newest.1.elapsed() < NEWEST_GRACE { newest.0 } else { 0 };
                    if !conns.evict_one(keep) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Listener::Unix(_, path, Some((dev, ino))) = &listener {
        // Only the socket this process made: another server may have
        // taken the path since.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How long the connection accepted last is safe from being closed to
/// make room when the next accept fails for want of descriptors.
const NEWEST_GRACE: Duration = Duration::from_secs(2);

/// At most one accept warning per this long.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(1);

/// Accept failures come in floods (out of descriptors, every retry fails
/// again until a connection ends): they are logged at most once per
/// [`FAILURE_LOG_EVERY`], each warning with the count of those that were
/// not.
#[derive(Default)]
struct FailureLog {
    /// When the last warning was logged.
    last: Option<Instant>,
    /// Failures since then, not logged.
    unlogged: u64,
}

impl FailureLog {
    /// A failure at `now`: `Some(n)` when it is to be logged, `n` being
    /// the failures not logged before it.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < FAILURE_LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }

    /// An accept that worked at `now`: `Some(n)` when the `n` failures
    /// not logged yet are to be logged now (no sooner than a warning
    /// period after the last one, so failures and successes alternating
    /// cannot flood either).
    fn accepted(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if self.unlogged > 0 && now.duration_since(t) >= FAILURE_LOG_EVERY => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
            _ => None,
        }
    }
}

fn conn_state(t: &Transport) -> Arc<ConnState> {
    Arc::new(ConnState {
        closer: t.closer(),
        negotiating: AtomicBool::new(true),
    })
}

/// Standard input/output: a socket when stdin is one (libnbd's
/// `connect_command` passes a socketpair), else a pipe pair.
fn stdio_transport() -> std::io::Result<Transport> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: fstat on fd 0, which this process owns.
    let is_sock = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(0, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if is_sock {
        // SAFETY: a new descriptor we own.
        let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just created; a stream socket.
        let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        s.set_nonblocking(false)?;
        return Ok(Transport::Plain(Arc::new(Socket::Unix(s))));
    }
    Ok(Transport::Pipes(Pipes::stdio()?))
}

fn set_keepalive(s: &std::net::TcpStream) {
    use std::os::unix::io::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option on our socket.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn accept(l: &Listener, keepalive: bool) -> std::io::Result<(Transport, String)> {
    let (sock, peer) = match l {
        Listener::Unix(u, _, _) => {
            let (s, _) = u.accept().await?;
            (Socket::Unix(s.into_std()?), "unix".to_string())
        }
        Listener::Tcp(t) => {
            let (s, addr) = t.accept().await?;
            let _ = s.set_nodelay(true);
            let s = s.into_std()?;
            if keepalive {
                set_keepalive(&s);
            }
            (Socket::Tcp(s), addr.to_string())
        }
        Listener::Stdio => return Err(std::io::Error::other("stdio has no accept")),
    };
    sock.set_nonblocking(false)?;
    Ok((Transport::Plain(Arc::new(sock)), peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_once_a_second_with_a_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut f = FailureLog::default();
        // A flood: a failure every 50 ms for 2.5 s.
        let logged: Vec<(u64, u64)> = (0..50)
            .filter_map(|i| f.failed(at(i * 50)).map(|n| (i * 50, n)))
            .collect();
        assert_eq!(logged, [(0, 0), (1000, 19), (2000, 19)]);
        // Accepting again: the 9 failures since 2000 ms are told, but not
        // before a second has passed since that warning.
        assert_eq!(f.accepted(at(2500)), None);
        assert_eq!(f.accepted(at(3000)), Some(9));
        assert_eq!(f.accepted(at(4500)), None, "nothing left to tell");
        // Failures alternating with successes: still one line a second.
        let mut lines = 0;
        for i in 0..40 {
            lines += f.failed(at(5000 + i * 50)).is_some() as u32;
            lines += f.accepted(at(5000 + i * 50 + 25)).is_some() as u32;
        }
        assert!(lines <= 3, "{lines} lines in 2 s");
        // A lone failure long after is logged at once, with no count.
        let mut g = FailureLog::default();
        assert_eq!(g.failed(at(0)), Some(0));
        assert_eq!(g.failed(at(5000)), Some(0));
    }
}
