//! A script call's time budget: a coarse clock (one atomic, advanced by a
//! ticker thread every few milliseconds) read at every rhai operation and
//! inside bulk host functions, so a call stops soon after its deadline even
//! when each operation is long (`a.reverse()` on a huge array). Only
//! `src/script/` may import rhai.

use super::raise::RResult;
use rhai::{Dynamic, EvalAltResult, Position};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the clock started (advanced by the ticker).
static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// How often the coarse clock moves.
const TICK: Duration = Duration::from_millis(5);

const NONE: u64 = u64::MAX;

thread_local! {
    /// When the script call running on this thread must stop (coarse ms).
    static DEADLINE: Cell<u64> = const { Cell::new(NONE) };
}

/// The coarse clock, started on first use.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(|| {
        let start = Instant::now();
        let _ = std::thread::Builder::new()
            .name("script-clock".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                NOW_MS.store(start.elapsed().as_millis() as u64, Relaxed);
            });
        start
    });
    NOW_MS.load(Relaxed)
}

/// Run `f` (one script call) with its time budget armed: it must end by
/// `limit` from now, and by the deadline of a call it is nested in (a
/// filter's `next` reaching another script).
pub fn with_deadline<T>(limit: Option<Duration>, f: impl FnOnce() -> T) -> T {
    let prev = DEADLINE.with(|d| d.get());
    let mine = limit.map_or(NONE, |l| {
        // Milliseconds without 128-bit arithmetic (saturating).
        let ms = l
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(l.subsec_millis()));
        now_ms().saturating_add(ms.min(u64::MAX / 2))
    });
    DEADLINE.with(|d| d.set(prev.min(mine)));
    let r = f();
    DEADLINE.with(|d| d.set(prev));
    r
}

/// Whether the call running on this thread is past its deadline (none is
/// `NONE`, which the clock never passes: one comparison).
#[inline]
pub fn past_deadline() -> bool {
    NOW_MS.load(Relaxed) > DEADLINE.with(|d| d.get())
}

/// The error that stops a call at its deadline.
pub fn time_error() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from("time limit"),
        Position::NONE,
    ))
}

/// For bulk host functions, between chunks: fail once past the deadline.
pub fn check_time() -> RResult<()> {
    if past_deadline() {
        Err(time_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_passes_and_nests() {
        with_deadline(Some(Duration::from_millis(30)), || {
            assert!(!past_deadline());
            with_deadline(Some(Duration::from_secs(100)), || {
                let t = Instant::now();
                while !past_deadline() {
                    assert!(
                        t.elapsed() < Duration::from_secs(2),
                        "inner kept the outer deadline"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            assert!(check_time().is_err());
        });
        assert!(!past_deadline());
        assert!(check_time().is_ok());
    }
}
