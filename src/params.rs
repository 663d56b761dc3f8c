//! `Params`: the `KEY=VALUE` words of the command line, in order, with the
//! parsers every layer shares (sizes, booleans) and `ConfigError`.
//! Must not import tokio or rhai.

use std::fmt;

/// A bad parameter: names the key, the value, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }
}

/// Ordered `KEY=VALUE` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub items: Vec<(String, String)>,
}

impl Params {
    pub fn new(items: Vec<(String, String)>) -> Self {
        Params { items }
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub fn require(&self, key: &str, layer: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(format!("{layer}: the parameter {key}= is required")))
    }

    /// A size parameter (`64M`, `1G`, `512`), if present.
    pub fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_size(v)
                .map(Some)
                .map_err(|e| ConfigError::new(format!("{key}={v}: {e}"))),
        }
    }

    /// A boolean parameter (`true/false/on/off/yes/no/1/0`), if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .map_err(|e| ConfigError::new(format!("{key}={v}: {e}"))),
        }
    }

    /// Refuse keys not in `known` (for layers with a fixed parameter set).
    pub fn check_known(&self, layer: &str, known: &[&str]) -> Result<(), ConfigError> {
        for (k, v) in &self.items {
            if !known.contains(&k.as_str()) {
                return Err(ConfigError::new(format!(
                    "{layer}: unknown parameter {k}={v}; accepted: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// The parameters whose key is in `keys`, and the rest.
    pub fn split(&self, keys: &[&str]) -> (Params, Params) {
        let (a, b): (Vec<_>, Vec<_>) = self
            .items
            .iter()
            .cloned()
            .partition(|(k, _)| keys.contains(&k.as_str()));
        (Params::new(a), Params::new(b))
    }
}

/// Parse a size as nbdkit does: a decimal number with an optional scaling
/// suffix `b` (1), `s` (512), `k K M G T P E` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(format!(
            "could not parse size {s:?}: expected a number with an optional suffix k, M, G, T, P, E"
        ));
    }
    let n: u64 = t[..digits_end]
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    let suffix = &t[digits_end..];
    let mult: u64 = match suffix {
        "" | "b" | "B" => 1,
        "s" | "S" => 512,
        "k" | "K" | "kB" | "KB" | "KiB" => 1 << 10,
        "m" | "M" | "MB" | "MiB" => 1 << 20,
        "g" | "G" | "GB" | "GiB" => 1 << 30,
        "t" | "T" | "TB" | "TiB" => 1 << 40,
        "p" | "P" | "PB" | "PiB" => 1 << 50,
        "e" | "E" | "EB" | "EiB" => 1 << 60,
        _ => {
            return Err(format!(
                "could not parse size {s:?}: unknown suffix {suffix:?} (use k, M, G, T, P or E)"
            ))
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if v > i64::MAX as u64 {
        return Err(format!("size {s:?} is larger than the maximum 2^63-1"));
    }
    Ok(v)
}

/// Parse a boolean as nbdkit does.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" | "t" => Ok(true),
        "0" | "false" | "off" | "no" | "n" | "f" => Ok(false),
        _ => Err(format!("could not parse boolean {s:?}: use true or false")),
    }
}

/// An integer as nbdkit's `nbdkit_parse_int` reads one (C's `strtol` with
/// base 0): decimal, `0x` hex, or a leading `0` for octal; an optional sign.
pub fn parse_int(s: &str) -> Result<i64, String> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<i64>()
    }
    .map_err(|_| format!("{s:?} is not an integer"))?;
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2s"), Ok(1024));
        assert_eq!(parse_size("7E"), Ok(7 << 60));
        assert!(parse_size("8E").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn bools_and_known() {
        assert_eq!(parse_bool("on"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
        let p = Params::new(vec![("size".into(), "1M".into()), ("x".into(), "y".into())]);
        let e = p.check_known("memory", &["size"]).unwrap_err();
        assert!(e.0.contains("x=y") && e.0.contains("size"), "{e}");
    }

    #[test]
    fn parse_int_reads_like_strtol_base_0() {
        use super::parse_int;
        assert_eq!(parse_int("10"), Ok(10));
        assert_eq!(parse_int("0x1F"), Ok(31));
        assert_eq!(parse_int("010"), Ok(8));
        assert_eq!(parse_int("-3"), Ok(-3));
        assert_eq!(parse_int("0"), Ok(0));
        assert!(parse_int("1k").is_err());
        assert!(parse_int("").is_err());
    }
}
