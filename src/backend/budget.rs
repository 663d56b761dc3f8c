//! The time budget of one request and the process's shutdown flag: what
//! bounds work whose cost grows with a request's length (emulated zero and
//! cache, filters that split a request, copy-up loops). Extended headers
//! allow lengths up to 2^63, so every such loop calls [`check`] between
//! chunks: past the deadline the request fails with EIO, and once shutdown
//! has begun with ESHUTDOWN.
//! Must not import tokio or rhai.

use super::{BackendError, Errno, Result};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The default request time limit (the `--script-timeout` default).
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(10);

static LIMIT_MS: AtomicU64 = AtomicU64::new(DEFAULT_LIMIT.as_millis() as u64);

thread_local! {
    /// When the request running on this thread must stop, and when it began.
    static DEADLINE: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
}

/// Set how long one request's chunked work may run (`--script-timeout`);
/// `None` means unlimited.
pub fn set_limit(limit: Option<Duration>) {
    let ms = limit.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64);
    LIMIT_MS.store(ms, Relaxed);
}

/// The current request time limit; `None` when unlimited.
pub fn limit() -> Option<Duration> {
    match LIMIT_MS.load(Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Shutdown has begun (SIGTERM/SIGINT, `shutdown::begin`): long
/// requests stop at their next [`check`].
pub fn shutting_down() -> bool {
    super::shutdown::begun()
}

/// The budget of the request running on this thread, from its creation
/// until it is dropped. Nested budgets keep the outer deadline.
pub struct Budget {
    outer: Option<(Instant, Instant)>,
}

impl Budget {
    /// Start timing the current request on this thread.
    pub fn start() -> Budget {
        Budget::with_limit(limit())
    }

    fn with_limit(limit: Option<Duration>) -> Budget {
        let outer = DEADLINE.with(|d| d.get());
        if outer.is_none() {
            if let Some(l) = limit {
                let now = Instant::now();
                DEADLINE.with(|d| d.set(Some((now + l, now))));
            }
        }
        Budget { outer }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.outer));
    }
}

/// Fail when the request on this thread is past its deadline (EIO) or the
/// server is shutting down (ESHUTDOWN). `what` names the work, e.g.
/// `"write zeroes (emulated with pwrite)"`; `done`/`total` say how far it got.
pub fn check(what: &str, done: u64, total: u64) -> Result<()> {
    let r = over(what, done, total);
    if let Err(e) = &r {
        tracing::warn!("{}", e.message);
    }
    r
}

fn over(what: &str, done: u64, total: u64) -> Result<()> {
    if shutting_down() {
        return Err(BackendError::new(
            Errno::Shutdown,
            format!("{what}: stopped after {done} of {total} bytes: the server is shutting down"),
        ));
    }
    if let Some((deadline, began)) = DEADLINE.with(|d| d.get()) {
        let now = Instant::now();
        if now >= deadline {
            return Err(BackendError::new(
                Errno::Io,
                format!(
                    "{what}: stopped after {done} of {total} bytes: the request ran past its time limit of {:?} (--script-timeout)",
                    deadline - began
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_nesting() {
        assert!(check("x", 0, 1).is_ok(), "no budget: no deadline");
        {
            let _b = Budget::with_limit(Some(Duration::from_millis(30)));
            assert!(check("x", 0, 1).is_ok());
            {
                let _inner = Budget::start();
                std::thread::sleep(Duration::from_millis(40));
            }
            let e = check("write zeroes", 5, 10).unwrap_err();
            assert_eq!(e.errno, Errno::Io);
            assert!(
                e.message.contains("stopped after 5 of 10 bytes")
                    && e.message.contains("time limit of 30ms"),
                "{}",
                e.message
            );
        }
        assert!(check("x", 0, 1).is_ok(), "budget dropped");
    }
}
