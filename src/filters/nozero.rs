//! The `nozero` filter: change how WRITE_ZEROES is handled, as
//! nbdkit-nozero-filter. `zeromode=none` (default: not advertised, the
//! client writes zeros itself), `emulate` (advertised, done with writes of
//! zeros), `notrim` (passed on without the may-trim flag), `plugin`
//! (passed on unchanged); `fastzeromode=default|none|slow|ignore` says
//! whether fast zero is advertised and whether fast requests fail at once
//! (`slow`) or lose the flag (`ignore`).
//! Example: `nbdscript --filter=nozero file disk.img zeromode=emulate`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{budget, flags, Backend, BackendError, Errno, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "nozero",
    params: &[
        (
            "zeromode",
            "none (default: WRITE_ZEROES not advertised), emulate, notrim or plugin",
        ),
        ("fastzeromode", "default, none, slow or ignore"),
    ],
    description: "disable or emulate WRITE_ZEROES",
    make,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    None,
    Emulate,
    NoTrim,
    Plugin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastMode {
    Default,
    None,
    Slow,
    Ignore,
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let zero = match p.get("zeromode") {
        None | Some("none") => ZeroMode::None,
        Some("emulate") => ZeroMode::Emulate,
        Some("notrim") => ZeroMode::NoTrim,
        Some("plugin") => ZeroMode::Plugin,
        Some(m) => {
            return Err(ConfigError::new(format!(
                "nozero: unknown zeromode '{m}' (expected none, emulate, notrim or plugin)"
            )))
        }
    };
    let fast = match p.get("fastzeromode") {
        None | Some("default") => FastMode::Default,
        Some("none") => FastMode::None,
        Some("slow") => FastMode::Slow,
        Some("ignore") => FastMode::Ignore,
        Some(m) => {
            return Err(ConfigError::new(format!(
                "nozero: unknown fastzeromode '{m}' (expected default, none, slow or ignore)"
            )))
        }
    };
    Ok(Arc::new(NozeroFilter { zero, fast }))
}

pub struct NozeroFilter {
    zero: ZeroMode,
    fast: FastMode,
}

impl Filter for NozeroFilter {
    fn name(&self) -> String {
        "nozero".into()
    }
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>> {
        if !readonly
            && matches!(self.zero, ZeroMode::NoTrim | ZeroMode::Plugin)
            && !next.can_zero()?
        {
            return Err(BackendError::io(format!(
                "nozero: zeromode '{}' requires plugin zero support",
                if self.zero == ZeroMode::NoTrim {
                    "notrim"
                } else {
                    "plugin"
                }
            )));
        }
        Ok(Arc::new(NozeroHandle {
            next,
            zero: self.zero,
            fast: self.fast,
        }))
    }
}

struct NozeroHandle {
    next: Arc<dyn Backend>,
    zero: ZeroMode,
    fast: FastMode,
}

impl Backend for NozeroHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads pass unchanged
    }
    fn advertise_zero(&self) -> Result<bool> {
        match self.zero {
            ZeroMode::None => Ok(false),
            _ => self.next.advertise_zero(),
        }
    }
    /// True for `emulate`: this layer writes the zeros itself (every
    /// byte, as nbdkit: nothing is skipped or trimmed).
    fn can_zero(&self) -> Result<bool> {
        match self.zero {
            ZeroMode::None => Ok(false),
            ZeroMode::Emulate => Ok(true),
            _ => self.next.can_zero(),
        }
    }
    fn can_fast_zero(&self) -> Result<bool> {
        match (self.zero, self.fast) {
            (ZeroMode::None, _) => Ok(false),
            (ZeroMode::NoTrim | ZeroMode::Plugin, FastMode::Default) => self.next.can_fast_zero(),
            (_, f) => Ok(f != FastMode::None),
        }
    }
    fn zero(&self, count: u64, offset: u64, mut f: u32) -> Result<()> {
        if self.zero == ZeroMode::None {
            return Err(BackendError::new(
                Errno::Inval,
                "nozero: write zeroes is not advertised",
            ));
        }
        if self.zero == ZeroMode::Emulate {
            return self.emulate(count, offset, f);
        }
        if f & flags::FAST_ZERO != 0 {
            match self.fast {
                FastMode::Slow => {
                    return Err(BackendError::new(
                        Errno::NotSup,
                        "nozero: fast zero refused (fastzeromode=slow)",
                    ))
                }
                FastMode::Ignore => f &= !flags::FAST_ZERO,
                _ => {}
            }
        }
        if self.zero == ZeroMode::NoTrim {
            f &= !flags::MAY_TRIM;
        }
        self.next.zero(count, offset, f)
    }
}

/// The largest write of zeros `emulate` sends down (nbdkit's
/// MAX_REQUEST_SIZE, so its log lines match).
const EMULATE_CHUNK: u64 = 64 << 20;

impl NozeroHandle {
    /// WRITE_ZEROES as writes of zeros, in chunks of [`EMULATE_CHUNK`],
    /// FUA on the last; a fast zero fails with ENOTSUP.
    fn emulate(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        if f & flags::FAST_ZERO != 0 {
            return Err(BackendError::new(
                Errno::NotSup,
                "nozero: fast zero is not supported (zeromode=emulate)",
            ));
        }
        let zeros = vec![0u8; count.min(EMULATE_CHUNK) as usize];
        let mut done = 0;
        while done < count {
            budget::check("nozero: write zeroes (emulated)", done, count)?;
            let n = (count - done).min(EMULATE_CHUNK);
            let fua = if done + n == count { f & flags::FUA } else { 0 };
            self.next.pwrite(&zeros[..n as usize], offset + done, fua)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    fn open(kv: &[(&str, &str)]) -> Arc<dyn Backend> {
        make(&params(kv)).unwrap().open(disk(8192), false).unwrap()
    }

    #[test]
    fn modes() {
        let h = open(&[]);
        assert!(!h.advertise_zero().unwrap());
        assert!(!h.can_fast_zero().unwrap());
        let h = open(&[("zeromode", "emulate")]);
        assert!(h.advertise_zero().unwrap());
        assert!(h.can_fast_zero().unwrap());
        h.zero(100, 10, 0).unwrap();
        let mut b = [1u8; 120];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(&b[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(b[10..110].iter().all(|&x| x == 0));
        assert_eq!(b[110], 110);
        let e = h.zero(100, 10, flags::FAST_ZERO).unwrap_err();
        assert_eq!(e.errno, Errno::NotSup);
        let h = open(&[("zeromode", "emulate"), ("fastzeromode", "none")]);
        assert!(!h.can_fast_zero().unwrap());
        let h = open(&[("zeromode", "plugin"), ("fastzeromode", "slow")]);
        assert!(h.can_zero().unwrap());
        let e = h.zero(512, 0, flags::FAST_ZERO).unwrap_err();
        assert_eq!(e.errno, Errno::NotSup);
        h.zero(512, 0, 0).unwrap();
        let mut b = [1u8; 512];
        h.pread(&mut b, 0, 0).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert!(make(&params(&[("zeromode", "x")])).is_err());
        assert!(make(&params(&[("fastzeromode", "x")])).is_err());
    }
}
