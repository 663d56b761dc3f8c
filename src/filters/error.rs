//! The `error` filter: inject errors into requests at a chosen rate, as
//! nbdkit-error-filter. Parameters (all optional): `error=EIO|EPERM|...`,
//! `error-rate=N%|0..1`, `error-file=PATH` (inject only while PATH exists),
//! and the same three per command: `error-pread*`, `error-pwrite*`,
//! `error-trim*`, `error-zero*`, `error-extents*`, `error-cache*`, and
//! `error-flush*` (an extension: nbdkit 1.32 has no flush variant).
//! Settings apply in command-line order: `error-rate=` sets every command,
//! a later `error-pread-rate=` only reads.
//! Example: `nbdscript memory 1G --filter=error error=ENOSPC error-pwrite-rate=100%`.
//! Must not import tokio or rhai.

use super::value;
use super::FilterDef;
use crate::backend::{Backend, BackendError, Errno, Extents, Filter, Result};
use crate::params::{ConfigError, Params};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

macro_rules! keys {
    ($($cmd:literal),*) => {
        &[
            ("error", "the errno to inject: EPERM, EIO, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN (default EIO)"),
            ("error-rate", "rate of injected errors, N% or 0..1 (default 0)"),
            ("error-file", "inject only while this file exists"),
            $(
                (concat!("error-", $cmd), concat!("errno for ", $cmd, " only")),
                (concat!("error-", $cmd, "-rate"), concat!("error rate for ", $cmd, " only")),
                (concat!("error-", $cmd, "-file"), concat!("trigger file for ", $cmd, " only")),
            )*
        ]
    };
}

pub const DEF: FilterDef = FilterDef {
    name: "error",
    params: keys!("pread", "pwrite", "trim", "zero", "extents", "cache", "flush"),
    description: "inject errors at a chosen rate",
    make,
};

const CMDS: [&str; 7] = [
    "pread", "pwrite", "trim", "zero", "extents", "cache", "flush",
];

#[derive(Debug, Clone)]
struct Setting {
    errno: Errno,
    rate: f64,
    file: Option<PathBuf>,
}

impl Default for Setting {
    fn default() -> Self {
        Setting {
            errno: Errno::Io,
            rate: 0.0,
            file: None,
        }
    }
}

fn parse_errno(key: &str, v: &str) -> std::result::Result<Errno, ConfigError> {
    match v.trim().to_ascii_uppercase().as_str() {
        "EPERM" => Ok(Errno::Perm),
        "EIO" => Ok(Errno::Io),
        "ENOMEM" => Ok(Errno::NoMem),
        "EINVAL" => Ok(Errno::Inval),
        "ENOSPC" => Ok(Errno::NoSpc),
        "ESHUTDOWN" => Ok(Errno::Shutdown),
        _ => Err(ConfigError::new(format!(
            "error: {key}={v}: expected one of EPERM, EIO, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN"
        ))),
    }
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let mut s: [Setting; 7] = Default::default();
    for (k, v) in &p.items {
        let Some(rest) = k.strip_prefix("error") else {
            continue;
        };
        // "" | "-rate" | "-file" | "-CMD" | "-CMD-rate" | "-CMD-file"
        let (cmd, what) = match rest {
            "" => (None, ""),
            "-rate" => (None, "rate"),
            "-file" => (None, "file"),
            _ => {
                let r = &rest[1..];
                let (c, w) = match r.split_once('-') {
                    Some((c, w)) => (c, w),
                    None => (r, ""),
                };
                match CMDS.iter().position(|x| *x == c) {
                    Some(i) => (Some(i), w),
                    None => continue,
                }
            }
        };
        let targets: Vec<usize> = match cmd {
            Some(i) => vec![i],
            None => (0..CMDS.len()).collect(),
        };
        for i in targets {
            match what {
                "" => s[i].errno = parse_errno(k, v)?,
                "rate" => s[i].rate = value::parse_rate(k, v)?,
                "file" => s[i].file = Some(PathBuf::from(v)),
                _ => {
                    return Err(ConfigError::new(format!(
                        "error: unknown parameter {k}={v}"
                    )))
                }
            }
        }
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    Ok(Arc::new(ErrorFilter {
        s: Arc::new(s),
        rng: Arc::new(AtomicU64::new(seed)),
    }))
}

pub struct ErrorFilter {
    s: Arc<[Setting; 7]>,
    rng: Arc<AtomicU64>,
}

impl Filter for ErrorFilter {
    fn name(&self) -> String {
        "error".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(ErrorHandle {
            next,
            s: self.s.clone(),
            rng: self.rng.clone(),
        }))
    }
}

struct ErrorHandle {
    next: Arc<dyn Backend>,
    s: Arc<[Setting; 7]>,
    rng: Arc<AtomicU64>,
}

impl ErrorHandle {
    /// A uniform number in [0, 1) (splitmix64 over a shared counter).
    fn uniform(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fail command `i` if the dice say so.
    #[inline]
    fn check(&self, i: usize) -> Result<()> {
        let s = &self.s[i];
        if s.rate <= 0.0 {
            return Ok(());
        }
        if let Some(f) = &s.file {
            if !f.exists() {
                return Ok(());
            }
        }
        if s.rate < 1.0 && self.uniform() >= s.rate {
            return Ok(());
        }
        let msg = format!("injecting {} error into {}", s.errno.name(), CMDS[i]);
        tracing::error!("{msg}");
        Err(BackendError::new(s.errno, msg))
    }
}

impl Backend for ErrorHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        self.check(0)?;
        self.next.pread(buf, offset, flags)
    }
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        self.check(0)?;
        self.next.pread_owned(count, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.check(1)?;
        self.next.pwrite(buf, offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        self.check(1)?;
        self.next.pwrite_owned(buf, offset, flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.check(2)?;
        self.next.trim(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.check(3)?;
        self.next.zero(count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        self.check(4)?;
        self.next.extents(count, offset, flags)
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.check(5)?;
        self.next.cache(count, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        self.check(6)?;
        self.next.flush(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn inject() {
        let f = make(&params(&[
            ("error", "ENOSPC"),
            ("error-pwrite-rate", "100%"),
            ("error-zero-rate", "1"),
            ("error-flush-rate", "1"),
            ("error-flush", "EPERM"),
        ]))
        .unwrap();
        let h = f.open(disk(4096), false).unwrap();
        let mut b = [0u8; 4];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(h.pwrite(&b, 0, 0).unwrap_err().errno, Errno::NoSpc);
        assert_eq!(h.zero(1, 0, 0).unwrap_err().errno, Errno::NoSpc);
        assert_eq!(h.flush(0).unwrap_err().errno, Errno::Perm);
        h.trim(1, 0, 0).unwrap();
        h.extents(10, 0, 0).unwrap();
    }

    #[test]
    fn rate_and_file() {
        let f = make(&params(&[("error-rate", "50%")])).unwrap();
        let h = f.open(disk(4096), false).unwrap();
        let mut b = [0u8; 4];
        let fails = (0..2000).filter(|_| h.pread(&mut b, 0, 0).is_err()).count();
        assert!(
            (700..1300).contains(&fails),
            "{fails} of 2000 failed at 50%"
        );
        let dir = tempfile::tempdir().unwrap();
        let trig = dir.path().join("trigger");
        let f = make(&params(&[
            ("error-rate", "1"),
            ("error-file", trig.to_str().unwrap()),
        ]))
        .unwrap();
        let h = f.open(disk(4096), false).unwrap();
        h.pread(&mut b, 0, 0).unwrap();
        std::fs::write(&trig, b"").unwrap();
        assert_eq!(h.pread(&mut b, 0, 0).unwrap_err().errno, Errno::Io);
        assert!(make(&params(&[("error", "EBADF")])).is_err());
        assert!(make(&params(&[("error-rate", "2")])).is_err());
    }
}
