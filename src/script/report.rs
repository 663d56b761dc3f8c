//! What a script author sees in the log: warnings for mistakes (contract,
//! budget and size errors, misspelled callbacks), at the default level,
//! with identical lines repeated per request rate-limited: the first is
//! logged, the repeats within the next second are counted, and the count
//! is logged as "(repeated N times)" once that second is over (by a timer,
//! so the last count is never lost when the failures stop), when a
//! connection closes, and when the script is unloaded. Only `src/script/`
//! may import rhai (this file does not).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long identical lines are counted instead of logged.
const WINDOW: Duration = Duration::from_secs(1);

/// Forget lines not seen for this long (bounds the table).
const FORGET: Duration = Duration::from_secs(60);

struct Seen {
    logged: Instant,
    repeats: u64,
}

static SEEN: Mutex<Option<HashMap<String, Seen>>> = Mutex::new(None);

/// How often the timer looks for counts to log.
const TICK: Duration = Duration::from_millis(200);

/// Log `msg` as a warning (target `script`), rate-limited.
pub fn warn(msg: &str) {
    match admit(msg, Instant::now()) {
        Some(line) => tracing::warn!(target: "script", "{line}"),
        None => start_timer(),
    }
}

/// Log every count still pending (a connection closed, a script is
/// unloaded): nothing counted is left unsaid.
pub fn flush() {
    for line in due(Instant::now(), true) {
        tracing::warn!(target: "script", "{line}");
    }
}

/// The thread that logs counts whose second is over; started by the first
/// repeat counted.
fn start_timer() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("script-log".into())
            .spawn(|| loop {
                std::thread::sleep(TICK);
                for line in due(Instant::now(), false) {
                    tracing::warn!(target: "script", "{line}");
                }
            });
    });
}

/// The "(repeated N times)" lines due now (all pending ones when `all`);
/// each count logged starts a new second of counting.
fn due(now: Instant, all: bool) -> Vec<String> {
    let mut g = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let Some(seen) = g.as_mut() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (msg, s) in seen.iter_mut() {
        if s.repeats > 0 && (all || now.duration_since(s.logged) >= WINDOW) {
            out.push(format!("{msg} (repeated {} times)", s.repeats));
            s.repeats = 0;
            s.logged = now;
        }
    }
    out
}

/// The line to log now for `msg`, or None while it is being counted.
fn admit(msg: &str, now: Instant) -> Option<String> {
    let mut g = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = g.get_or_insert_with(HashMap::new);
    if seen.len() > 1024 {
        seen.retain(|_, s| now.duration_since(s.logged) < FORGET);
    }
    match seen.get_mut(msg) {
        Some(s) if now.duration_since(s.logged) < WINDOW => {
            s.repeats += 1;
            None
        }
        Some(s) => {
            let n = std::mem::take(&mut s.repeats);
            s.logged = now;
            Some(if n > 0 {
                format!("{msg} (repeated {n} times)")
            } else {
                msg.to_string()
            })
        }
        None => {
            seen.insert(
                msg.to_string(),
                Seen {
                    logged: now,
                    repeats: 0,
                },
            );
            Some(msg.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_then_reported() {
        let t = Instant::now();
        let m = "report-test: x.rhai:1:1: pread: boom";
        assert_eq!(admit(m, t).as_deref(), Some(m));
        for i in 1..=5 {
            assert_eq!(admit(m, t + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(
            admit(m, t + Duration::from_millis(1100)),
            Some(format!("{m} (repeated 5 times)"))
        );
        assert_eq!(admit(m, t + Duration::from_millis(1200)), None);
        assert_eq!(
            admit("report-test: other", t).as_deref(),
            Some("report-test: other")
        );
    }

    #[test]
    fn the_last_count_is_flushed_when_its_second_is_over() {
        let t = Instant::now();
        let m = "report-test: y.rhai:2:1: pread: flushed";
        assert_eq!(admit(m, t).as_deref(), Some(m));
        for i in 1..=3 {
            assert_eq!(admit(m, t + Duration::from_millis(i * 10)), None);
        }
        let mine = |v: Vec<String>| {
            v.into_iter()
                .filter(|l| l.starts_with(m))
                .collect::<Vec<_>>()
        };
        assert!(mine(due(t + Duration::from_millis(500), false)).is_empty());
        let at = t + Duration::from_millis(1000);
        assert_eq!(mine(due(at, false)), [format!("{m} (repeated 3 times)")]);
        assert!(mine(due(at, true)).is_empty(), "logged twice");
        // Counting starts again from the flush; `all` flushes early.
        assert_eq!(admit(m, at + Duration::from_millis(10)), None);
        assert_eq!(
            mine(due(at + Duration::from_millis(20), true)),
            [format!("{m} (repeated 1 times)")]
        );
    }
}
