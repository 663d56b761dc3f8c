//! Filter parameter values: durations (`10ms`, `1s`),
//! rates (`10%`, `0.1`), power-of-two sizes. No I/O.
//! Must not import tokio or rhai.

use crate::params::{parse_size, ConfigError, Params};
use std::time::Duration;

/// Parse `SECS`, `NNms`, `NNus`, `NNs` (fractions allowed, as nbdkit's delay filter).
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * scale < 1e9 => {
            Ok(Duration::from_secs_f64(x * scale))
        }
        _ => Err(ConfigError::new(format!(
            "{key}={v}: expected a delay such as 1 or 1s (seconds), 250ms or 100us"
        ))),
    }
}

/// Parse a probability: `N%`, `0..1`, or `1/N`.
pub fn parse_rate(key: &str, v: &str) -> Result<f64, ConfigError> {
    let t = v.trim();
    let r = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().ok().map(|x| x / 100.0)
    } else if let Some((a, b)) = t.split_once('/') {
        match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
            (Ok(a), Ok(b)) if b != 0.0 => Some(a / b),
            _ => None,
        }
    } else {
        t.parse::<f64>().ok()
    };
    match r {
        Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(ConfigError::new(format!(
            "{key}={v}: expected a rate between 0% and 100%, or 0 to 1"
        ))),
    }
}

/// A size parameter that must be a power of two (or absent).
pub fn power_of_2(p: &Params, key: &str, layer: &str) -> Result<Option<u64>, ConfigError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => {
            let n =
                parse_size(v).map_err(|e| ConfigError::new(format!("{layer}: {key}={v}: {e}")))?;
            if n == 0 || !n.is_power_of_two() {
                return Err(ConfigError::new(format!(
                    "{layer}: {key}={v}: the {key} parameter must be a power of 2 (e.g. 512, 4k)"
                )));
            }
            Ok(Some(n))
        }
    }
}

/// A size parameter with the layer named in the error.
pub fn size(p: &Params, key: &str, layer: &str) -> Result<Option<u64>, ConfigError> {
    p.size(key)
        .map_err(|e| ConfigError::new(format!("{layer}: {e}")))
}

/// A boolean parameter with the layer named in the error.
pub fn boolean(p: &Params, key: &str, layer: &str) -> Result<Option<bool>, ConfigError> {
    p.bool(key)
        .map_err(|e| ConfigError::new(format!("{layer}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates() {
        assert_eq!(
            parse_duration("d", "10ms").unwrap(),
            Duration::from_millis(10)
        );
        assert_eq!(parse_duration("d", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("d", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("d", "-1").is_err());
        assert!(parse_duration("d", "abc").is_err());
        assert_eq!(parse_rate("r", "50%").unwrap(), 0.5);
        assert_eq!(parse_rate("r", "1").unwrap(), 1.0);
        assert_eq!(parse_rate("r", "1/4").unwrap(), 0.25);
        assert!(parse_rate("r", "150%").is_err());
        assert!(parse_rate("r", "x").is_err());
    }
}
