//! What a script author sees in the log: warnings for mistakes (contract,
//! budget and size errors, misspelled callbacks), at the default level,
//! with identical lines repeated per request rate-limited: the first is
//! logged, the repeats within the next second are counted, and the next
//! one after that says "(repeated N times)". Only `src/script/` may
//! import rhai (this file does not).

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

/// Log `msg` as a warning (target `script`), rate-limited.
pub fn warn(msg: &str) {
    if let Some(line) = admit(msg, Instant::now()) {
        tracing::warn!(target: "script", "{line}");
    }
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
}
