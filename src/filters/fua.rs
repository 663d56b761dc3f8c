//! The `fua` filter: change how Forced Unit Access is handled, as
//! nbdkit-fua-filter. `fuamode=none` (default: FUA not advertised),
//! `emulate` (advertise FUA, done by a flush; needs flush below),
//! `native` (advertise native FUA; needs FUA below), `force` (every write
//! is FUA, flush becomes a no-op), `pass` (no change), `discard` (drop FUA
//! and flush: unsafe, for scratch data).
//! Example: `nbdscript file disk.img --filter=fua fuamode=force`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{flags, Backend, BackendError, Filter, FuaMode, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "fua",
    params: &[(
        "fuamode",
        "none (default), emulate, native, force, pass or discard",
    )],
    description: "change how FUA and flush are handled",
    make,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Emulate,
    Native,
    Force,
    Pass,
    Discard,
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let mode = match p.get("fuamode").map(|s| s.trim().to_ascii_lowercase()) {
        None => Mode::None,
        Some(m) => match m.as_str() {
            "none" => Mode::None,
            "emulate" => Mode::Emulate,
            "native" => Mode::Native,
            "force" => Mode::Force,
            "pass" => Mode::Pass,
            "discard" => Mode::Discard,
            _ => {
                return Err(ConfigError::new(format!(
                    "fua: fuamode={m}: expected none, emulate, native, force, pass or discard"
                )))
            }
        },
    };
    Ok(Arc::new(FuaFilter { mode }))
}

pub struct FuaFilter {
    mode: Mode,
}

impl Filter for FuaFilter {
    fn name(&self) -> String {
        "fua".into()
    }
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>> {
        let next_fua = next.can_fua()?;
        if !readonly {
            match self.mode {
                Mode::Emulate if !next.can_flush()? => {
                    return Err(BackendError::io(
                        "fua: fuamode=emulate needs a layer below that can flush",
                    ))
                }
                Mode::Native | Mode::Force if next_fua == FuaMode::None => {
                    return Err(BackendError::io(format!(
                        "fua: fuamode={} needs a layer below that supports FUA",
                        if self.mode == Mode::Native {
                            "native"
                        } else {
                            "force"
                        }
                    )))
                }
                _ => {}
            }
        }
        Ok(Arc::new(FuaHandle {
            next,
            mode: self.mode,
            next_fua,
        }))
    }
}

struct FuaHandle {
    next: Arc<dyn Backend>,
    mode: Mode,
    next_fua: FuaMode,
}

impl FuaHandle {
    /// Run a write-like `op` with the flags the mode calls for.
    fn with_fua(&self, f: u32, op: impl FnOnce(u32) -> Result<()>) -> Result<()> {
        let fua = match self.mode {
            Mode::Pass => return op(f),
            // As nbdkit's fua filter: FUA becomes a flush after the write,
            // done here (the layers below see no FUA).
            Mode::Emulate if f & flags::FUA != 0 => {
                op(f & !flags::FUA)?;
                return self.next.flush(0);
            }
            Mode::None | Mode::Emulate | Mode::Discard => false,
            Mode::Native => f & flags::FUA != 0,
            Mode::Force => true,
        };
        let f = f & !flags::FUA;
        if !fua {
            return op(f);
        }
        match self.next_fua {
            FuaMode::Native => op(f | flags::FUA),
            _ => {
                op(f)?;
                self.next.flush(0)
            }
        }
    }
}

impl Backend for FuaHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads pass unchanged
    }
    fn can_fua(&self) -> Result<FuaMode> {
        Ok(match self.mode {
            Mode::None => FuaMode::None,
            Mode::Emulate => FuaMode::Emulate,
            Mode::Native | Mode::Force | Mode::Discard => FuaMode::Native,
            Mode::Pass => self.next_fua,
        })
    }
    fn can_flush(&self) -> Result<bool> {
        match self.mode {
            Mode::Force | Mode::Discard => Ok(true),
            _ => self.next.can_flush(),
        }
    }
    fn flush(&self, f: u32) -> Result<()> {
        match self.mode {
            Mode::Force | Mode::Discard => Ok(()),
            _ => self.next.flush(f),
        }
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.next.pwrite(buf, offset, f))
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.next.pwrite_owned(buf, offset, f))
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.next.trim(count, offset, f))
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.with_fua(f, |f| self.next.zero(count, offset, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};
    use parking_lot::Mutex;

    /// Records the flags of writes and the number of flushes.
    struct Spy {
        next: Arc<dyn Backend>,
        fua: FuaMode,
        seen: Mutex<Vec<String>>,
    }
    impl Backend for Spy {
        fn next(&self) -> Option<&dyn Backend> {
            Some(&*self.next)
        }
        fn can_fua(&self) -> Result<FuaMode> {
            Ok(self.fua)
        }
        fn pwrite(&self, _b: &[u8], _o: u64, f: u32) -> Result<()> {
            self.seen.lock().push(format!("w{}", f & flags::FUA));
            Ok(())
        }
        fn flush(&self, _f: u32) -> Result<()> {
            self.seen.lock().push("f".into());
            Ok(())
        }
    }

    fn run(mode: &str, below: FuaMode, write_flags: u32) -> (FuaMode, Vec<String>) {
        let spy = Arc::new(Spy {
            next: disk(4096),
            fua: below,
            seen: Mutex::new(Vec::new()),
        });
        let h = make(&params(&[("fuamode", mode)]))
            .unwrap()
            .open(spy.clone(), false)
            .unwrap();
        h.pwrite(&[1], 0, write_flags).unwrap();
        h.flush(0).unwrap();
        let seen = spy.seen.lock().clone();
        (h.can_fua().unwrap(), seen)
    }

    #[test]
    fn modes() {
        let n = FuaMode::Native;
        assert_eq!(
            run("none", n, 0),
            (FuaMode::None, vec!["w0".into(), "f".into()])
        );
        assert_eq!(run("emulate", n, flags::FUA).0, FuaMode::Emulate);
        // The write without FUA, this filter's flush, then the client's.
        assert_eq!(run("emulate", n, flags::FUA).1, vec!["w0", "f", "f"]);
        assert_eq!(run("emulate", n, 0).1, vec!["w0", "f"]);
        assert_eq!(
            run("native", n, flags::FUA),
            (n, vec!["w1".into(), "f".into()])
        );
        assert_eq!(
            run("native", FuaMode::Emulate, flags::FUA).1,
            vec!["w0", "f", "f"]
        );
        assert_eq!(run("force", n, 0), (n, vec!["w1".into()]));
        assert_eq!(run("discard", n, flags::FUA), (n, vec!["w0".into()]));
        assert_eq!(run("pass", FuaMode::Emulate, 0).0, FuaMode::Emulate);
        assert!(make(&params(&[("fuamode", "sometimes")])).is_err());
        let none_below = make(&params(&[("fuamode", "native")])).unwrap().open(
            Arc::new(Spy {
                next: disk(16),
                fua: FuaMode::None,
                seen: Mutex::new(Vec::new()),
            }),
            false,
        );
        assert!(none_below.is_err());
    }
}
