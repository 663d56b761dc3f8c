//! The `exitwhen` filter: exit gracefully when something happens outside,
//! as nbdkit-exitwhen-filter. Events: `exit-when-file-created=FILE`,
//! `exit-when-file-deleted=FILE`, `exit-when-pipe-closed=FD` (or
//! `exit-when-fd-closed=`), `exit-when-process-exits=PID` (or
//! `exit-when-pid-exits=`), `exit-when-script=CMD` (exit status 88 means
//! the event happened; other non-zero statuses are logged and ignored).
//! Each may be given more than once; any one is enough. Once an event
//! holds, new clients are refused before the handshake, and the server
//! exits (status 0) when the last client leaves. Events are checked when
//! a client connects or leaves, and every `exit-when-poll=SECS` (default
//! 60) while no client is connected. An event that holds at start-up
//! makes the server exit at once.
//! Example: `nbdscript --filter=exitwhen memory 1G exit-when-file-created=/tmp/stop`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{shutdown, Backend, BackendError, Errno, Filter, Peer, Result};
use crate::params::{parse_int, ConfigError, Params};
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub const DEF: FilterDef = FilterDef {
    name: "exitwhen",
    params: &[
        ("exit-when-file-created", "exit when this file exists"),
        ("exit-when-file-deleted", "exit when this file is gone"),
        (
            "exit-when-pipe-closed",
            "exit when the other end of this file descriptor (a pipe) is closed",
        ),
        ("exit-when-fd-closed", "the same as exit-when-pipe-closed"),
        ("exit-when-process-exits", "exit when this process ID exits"),
        ("exit-when-pid-exits", "the same as exit-when-process-exits"),
        (
            "exit-when-script",
            "shell command run to check: exit status 88 means exit",
        ),
        (
            "exit-when-poll",
            "seconds between checks while no client is connected (default 60)",
        ),
    ],
    description: "exit gracefully when a file appears or goes, a pipe closes, a process or a script says so",
    make,
};

enum Event {
    FileCreated(PathBuf),
    FileDeleted(PathBuf),
    FdClosed(i32),
    /// `/proc/PID/stat`, held open: reads fail with ESRCH once it exits.
    ProcessExits(OwnedFd),
    Script(String),
}

impl Event {
    fn happened(&self) -> bool {
        match self {
            Event::FileCreated(p) => {
                let h = p.exists();
                if h {
                    tracing::debug!("exit-when-file-created: detected {} created", p.display());
                }
                h
            }
            Event::FileDeleted(p) => match std::fs::symlink_metadata(p) {
                Ok(_) => false,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    tracing::debug!("exit-when-file-deleted: detected {} deleted", p.display());
                    true
                }
                Err(e) => {
                    tracing::error!("exit-when-file-deleted: {}: {e}", p.display());
                    false
                }
            },
            Event::FdClosed(fd) => {
                let mut p = libc::pollfd {
                    fd: *fd,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: polls one descriptor without touching its data.
                let r = unsafe { libc::poll(&mut p, 1, 0) };
                if r == 1 && p.revents & libc::POLLHUP != 0 {
                    tracing::debug!("exit-when-pipe-closed: detected pipe closed");
                    true
                } else if r == 1 && p.revents & libc::POLLNVAL != 0 {
                    tracing::error!("exit-when-pipe-closed: invalid file descriptor {fd}");
                    true
                } else {
                    false
                }
            }
            Event::ProcessExits(fd) => {
                let mut c = 0u8;
                // SAFETY: a one-byte read into `c` from a descriptor we own.
                let r = unsafe {
                    libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET);
                    libc::read(fd.as_raw_fd(), (&mut c as *mut u8).cast(), 1)
                };
                let gone = r == -1
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                if gone {
                    tracing::debug!("exit-when-process-exits: detected process exit");
                }
                gone
            }
            Event::Script(cmd) => {
                let st = std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .status();
                match st.map(|s| s.code()) {
                    Ok(Some(0)) => false,
                    Ok(Some(88)) => {
                        tracing::debug!("exit-when-script: detected scripted event");
                        true
                    }
                    Ok(c) => {
                        tracing::error!("exit-when-script: {cmd}: failed with status {c:?}");
                        false
                    }
                    Err(e) => {
                        tracing::error!("exit-when-script: cannot run /bin/sh: {e}");
                        false
                    }
                }
            }
        }
    }
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    make_with(p, Arc::new(shutdown::request))
}

fn make_with(
    p: &Params,
    exit: Arc<dyn Fn() + Send + Sync>,
) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let mut events = Vec::new();
    let abs = |v: &str| std::path::absolute(v).unwrap_or_else(|_| PathBuf::from(v));
    for (k, v) in &p.items {
        let (k, v) = (k.as_str(), v.as_str());
        let e = match k {
            "exit-when-file-created" => Event::FileCreated(abs(v)),
            "exit-when-file-deleted" => Event::FileDeleted(abs(v)),
            "exit-when-pipe-closed" | "exit-when-fd-closed" => {
                let fd = parse_int(v)
                    .ok()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ConfigError::new(format!("exitwhen: {k}={v}: expected a file descriptor"))
                    })?;
                Event::FdClosed(fd)
            }
            "exit-when-process-exits" | "exit-when-pid-exits" => {
                let pid = parse_int(v)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ConfigError::new(format!("exitwhen: {k}={v}: expected a process ID"))
                    })?;
                let path = format!("/proc/{pid}/stat");
                let f = std::fs::File::open(&path)
                    .map_err(|e| ConfigError::new(format!("exitwhen: {k}={v}: {path}: {e}")))?;
                Event::ProcessExits(f.into())
            }
            "exit-when-script" => Event::Script(v.to_string()),
            _ => continue,
        };
        events.push(e);
    }
    let poll = match p.get("exit-when-poll") {
        None => Duration::from_secs(60),
        Some(v) => match parse_int(v) {
            Ok(n) if n > 0 => Duration::from_secs(n as u64),
            _ => {
                return Err(ConfigError::new(format!(
                    "exitwhen: exit-when-poll={v}: expected a number of seconds (at least 1)"
                )))
            }
        },
    };
    let f = Arc::new(Inner {
        events,
        state: Mutex::new(State::default()),
        exit,
    });
    if !f.events.is_empty() {
        if f.state.lock().check(&f.events) {
            // nbdkit exits before serving; here the server starts and
            // stops at once with status 0.
            tracing::debug!("exitwhen: event already happened: exiting");
            (f.exit)();
        } else {
            start_polling(Arc::downgrade(&f), poll);
        }
    }
    Ok(Arc::new(ExitwhenFilter { inner: f }))
}

/// While no client is connected, check the events every `poll`; stops
/// once the filter is gone.
fn start_polling(f: Weak<Inner>, poll: Duration) {
    let spawned = std::thread::Builder::new()
        .name("exitwhen-poll".into())
        .spawn(move || loop {
            std::thread::sleep(poll);
            let Some(f) = f.upgrade() else { return };
            let mut st = f.state.lock();
            if st.connections == 0 && st.check(&f.events) {
                tracing::debug!("exitwhen: shutdown from polling thread");
                (f.exit)();
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::error!("exitwhen: cannot start the polling thread: {e}");
    }
}

#[derive(Default)]
struct State {
    /// Clients with the export open.
    connections: u64,
    /// An event happened: refuse new clients, exit when the last leaves.
    exiting: bool,
}

impl State {
    fn check(&mut self, events: &[Event]) -> bool {
        if !self.exiting {
            // Every event is checked (a script may have side effects).
            for e in events {
                if e.happened() {
                    self.exiting = true;
                }
            }
        }
        self.exiting
    }
}

struct Inner {
    events: Vec<Event>,
    state: Mutex<State>,
    /// Ask the server to exit ([`shutdown::request`]).
    exit: Arc<dyn Fn() + Send + Sync>,
}

pub struct ExitwhenFilter {
    inner: Arc<Inner>,
}

impl Filter for ExitwhenFilter {
    fn name(&self) -> String {
        "exitwhen".into()
    }
    fn preconnect(&self, _peer: &Peer, _readonly: bool) -> Result<()> {
        let f = &self.inner;
        if !f.events.is_empty() && f.state.lock().check(&f.events) {
            return Err(BackendError::new(
                Errno::Shutdown,
                "exitwhen: nbdkit is exiting: rejecting new connection",
            ));
        }
        Ok(())
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        self.inner.state.lock().connections += 1;
        Ok(Arc::new(ExitwhenHandle {
            next,
            inner: self.inner.clone(),
        }))
    }
}

struct ExitwhenHandle {
    next: Arc<dyn Backend>,
    inner: Arc<Inner>,
}

impl Backend for ExitwhenHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads pass unchanged
    }
    fn close(&self) {
        self.next.close();
        let f = &self.inner;
        let mut st = f.state.lock();
        if !f.events.is_empty() {
            st.check(&f.events);
        }
        st.connections = st.connections.saturating_sub(1);
        if st.connections == 0 && st.exiting {
            tracing::debug!("exitwhen: exiting on last client connection");
            (f.exit)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counted(kv: &[(&str, &str)]) -> (Arc<dyn Filter>, Arc<AtomicU32>) {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let f = make_with(
            &params(kv),
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        (f, n)
    }

    #[test]
    fn file_created_refuses_new_clients_and_exits_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let ev = dir.path().join("ev");
        let (f, exits) = counted(&[("exit-when-file-created", ev.to_str().unwrap())]);
        f.preconnect(&Peer::Unknown, false).unwrap();
        let a = f.open(disk(4096), false).unwrap();
        std::fs::write(&ev, b"").unwrap();
        let e = f.preconnect(&Peer::Unknown, false).unwrap_err();
        assert_eq!(e.errno, Errno::Shutdown);
        assert_eq!(exits.load(Ordering::SeqCst), 0, "exited with a client");
        a.close();
        assert_eq!(exits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn already_happened_and_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let (_f, exits) = counted(&[("exit-when-file-deleted", dir.path().join("none").to_str().unwrap())]);
        assert_eq!(exits.load(Ordering::SeqCst), 1);
        let (f, exits) = counted(&[("exit-when-script", "exit 3"), ("exit-when-poll", "1")]);
        f.preconnect(&Peer::Unknown, false).unwrap();
        assert_eq!(exits.load(Ordering::SeqCst), 0);
        let (f, exits) = counted(&[("exit-when-script", "exit 88")]);
        assert_eq!(exits.load(Ordering::SeqCst), 1);
        assert!(f.preconnect(&Peer::Unknown, false).is_err());
        // Nothing to watch: the filter does nothing.
        let (f, exits) = counted(&[]);
        f.open(disk(512), false).unwrap().close();
        assert_eq!(exits.load(Ordering::SeqCst), 0);
        assert!(make(&params(&[("exit-when-poll", "x")])).is_err());
        assert!(make(&params(&[("exit-when-process-exits", "0")])).is_err());
    }
}
