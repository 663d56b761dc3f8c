//! The plugin layer against a recording plugin: FUA taken off and a flush
//! after when the plugin has no native FUA, zero written with `pwrite`
//! when the plugin cannot zero, and everything else passed unchanged.

use super::*;
use std::sync::Mutex;

/// A plugin that records its calls as strings.
struct Rec {
    fua: FuaMode,
    zero: Option<Errno>,
    can_zero: bool,
    calls: Mutex<Vec<String>>,
}

impl Rec {
    fn new(fua: FuaMode) -> Rec {
        Rec {
            fua,
            zero: None,
            can_zero: true,
            calls: Mutex::new(Vec::new()),
        }
    }
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s)
    }
}

impl Backend for Rec {
    fn get_size(&self) -> Result<u64> {
        Ok(1 << 20)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.can_zero)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        self.log("can_fua".into());
        Ok(self.fua)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        self.log(format!("pwrite {} {offset} {f}", buf.len()));
        Ok(())
    }
    fn flush(&self, _f: u32) -> Result<()> {
        self.log("flush".into());
        Ok(())
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.log(format!("trim {count} {offset} {f}"));
        Ok(())
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.log(format!("zero {count} {offset} {f}"));
        match self.zero {
            Some(e) => Err(BackendError::new(e, "no")),
            None => Ok(()),
        }
    }
}

type Op = fn(&dyn Backend) -> Result<()>;

#[test]
fn fua_is_emulated_here_and_zero_falls_back_to_pwrite() {
    use flags::{FAST_ZERO as FAST, FUA, MAY_TRIM};
    let write: Op = |l| l.pwrite(&[1; 512], 0, FUA);
    let write_owned: Op = |l| l.pwrite_owned(vec![1; 512], 0, FUA);
    let trim: Op = |l| l.trim(512, 0, FUA);
    let zero: Op = |l| l.zero(4096, 0, FUA | MAY_TRIM);
    let fast: Op = |l| l.zero(4096, 0, FAST);
    let plain: Op = |l| l.pwrite(&[1; 512], 0, 0);
    let rec = |fua, zero, can_zero| Rec {
        zero,
        can_zero,
        ..Rec::new(fua)
    };
    use FuaMode::{Emulate, Native};
    // (plugin, call, what the plugin sees after `can_fua`, errno)
    let cases: Vec<(Rec, Op, Vec<&str>, Option<Errno>)> = vec![
        (rec(Native, None, true), write, vec!["pwrite 512 0 1"], None),
        (rec(Emulate, None, true), write, vec!["pwrite 512 0 0", "flush"], None),
        (rec(Emulate, None, true), write_owned, vec!["pwrite 512 0 0", "flush"], None),
        (rec(Emulate, None, true), plain, vec!["pwrite 512 0 0"], None),
        (rec(Emulate, None, true), trim, vec!["trim 512 0 0", "flush"], None),
        (rec(Emulate, None, true), zero, vec!["zero 4096 0 2", "flush"], None),
        (rec(Native, None, true), zero, vec!["zero 4096 0 3"], None),
        // A filter sending FUA to a plugin without it: still flushed.
        (rec(FuaMode::None, None, true), write, vec!["pwrite 512 0 0", "flush"], None),
        // ENOTSUP from zero: zeros written (without MAY_TRIM), then the
        // flush; a fast zero fails instead; no native zero: pwrite at once.
        (rec(Emulate, Some(Errno::NotSup), true), zero, vec!["zero 4096 0 2", "pwrite 4096 0 0", "flush"], None),
        (rec(Native, Some(Errno::NotSup), true), fast, vec!["zero 4096 0 4"], Some(Errno::NotSup)),
        (rec(Native, Some(Errno::Io), true), zero, vec!["zero 4096 0 3"], Some(Errno::Io)),
        (rec(Emulate, None, false), zero, vec!["pwrite 4096 0 0", "flush"], None),
        (rec(Emulate, None, false), fast, vec![], Some(Errno::NotSup)),
    ];
    for (i, (plugin, op, want, err)) in cases.into_iter().enumerate() {
        let plugin = Arc::new(plugin);
        let layer = wrap(plugin.clone());
        assert_eq!(op(&*layer).err().map(|e| e.errno), err, "case {i}");
        let calls = plugin.calls.lock().unwrap().clone();
        let calls: Vec<&str> = calls.iter().map(String::as_str).filter(|c| *c != "can_fua").collect();
        assert_eq!(calls, want, "case {i}");
    }
}

#[test]
fn capabilities_pass_unchanged_and_are_asked_once() {
    let plugin = Arc::new(Rec::new(FuaMode::Emulate));
    let layer = wrap(plugin.clone());
    // Filters above see the plugin's own answer, as nbdkit's next->can_fua.
    assert_eq!(layer.can_fua().unwrap(), FuaMode::Emulate);
    assert!(layer.can_zero().unwrap());
    layer.pwrite(&[0; 512], 0, flags::FUA).unwrap();
    layer.pwrite(&[0; 512], 0, flags::FUA).unwrap();
    let calls = plugin.calls.lock().unwrap();
    assert_eq!(calls.iter().filter(|c| *c == "can_fua").count(), 1, "{calls:?}");
    assert_eq!(layer.get_size().unwrap(), 1 << 20);
}
