//! `Export` as tables of cases: range checks, read-only refusals, what is
//! emulated at the top (zero by pwrite, cache by reading) and what is
//! passed down (FUA, native or emulated), against a recording layer.

use super::*;
use crate::backend::{extent_type, Backend, CacheMode, FuaMode};
use std::sync::Mutex;

/// A layer of `size` bytes that records every call as a string.
struct Rec {
    size: u64,
    write: bool,
    zero: bool,
    fast_zero: bool,
    extents: bool,
    fua: FuaMode,
    cache: CacheMode,
    calls: Mutex<Vec<String>>,
}

impl Rec {
    fn new(size: u64) -> Rec {
        Rec {
            size,
            write: true,
            zero: true,
            fast_zero: false,
            extents: false,
            fua: FuaMode::Native,
            cache: CacheMode::None,
            calls: Mutex::new(Vec::new()),
        }
    }
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s)
    }
}

impl Backend for Rec {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.write)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.zero)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(self.fast_zero)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(self.extents)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        Ok(self.fua)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(self.cache)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        self.log(format!("pread {} {offset}", buf.len()));
        buf.fill(0);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.log(format!("pwrite {} {offset} {flags}", buf.len()));
        Ok(())
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        self.log("flush".into());
        Ok(())
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.log(format!("trim {count} {offset} {flags}"));
        Ok(())
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.log(format!("zero {count} {offset} {flags}"));
        Ok(())
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        // The first 4 KiB is data, the rest reads as zeros.
        let mut e = Extents::new(offset, count);
        if offset < 4096 {
            e.add(offset, 4096 - offset, extent_type::DATA)?;
        }
        e.add(offset.max(4096), u64::MAX / 2, extent_type::ZERO | extent_type::HOLE)?;
        Ok(e)
    }
    fn cache(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.log(format!("cache {count} {offset}"));
        Ok(())
    }
}

/// A request as the server makes it.
#[derive(Debug, Clone, Copy)]
enum Req {
    Read(u32, u64),
    Write(u32, u64, bool),
    Trim(u64, u64),
    Zero { count: u64, offset: u64, fua: bool, may_trim: bool, fast: bool },
    Status(u64, u64),
    Cache(u64, u64),
    Flush,
}

fn issue(e: &Export, r: Req) -> Result<()> {
    match r {
        Req::Read(n, o) => e.read(n, o).map(drop),
        Req::Write(n, o, fua) => e.write(vec![1; n as usize], o, fua),
        Req::Trim(n, o) => e.trim(n, o, false),
        Req::Zero { count, offset, fua, may_trim, fast } => e.zero(count, offset, fua, may_trim, fast),
        Req::Status(n, o) => e.extents(n, o, false).map(drop),
        Req::Cache(n, o) => e.cache(n, o),
        Req::Flush => e.flush(),
    }
}

const SIZE: u64 = 4 << 20;

#[test]
fn requests_outside_the_export_are_refused_with_the_right_errno() {
    use Errno::*;
    let z = |count, offset| Req::Zero { count, offset, fua: false, may_trim: false, fast: false };
    let cases: &[(Req, Option<Errno>)] = &[
        (Req::Read(512, 0), None),
        (Req::Read(512, SIZE - 512), None),
        (Req::Read(512, SIZE - 511), Some(Inval)),
        (Req::Read(1, u64::MAX), Some(Inval)),
        (Req::Write(512, SIZE - 512, false), None),
        (Req::Write(512, SIZE - 1, false), Some(NoSpc)),
        (Req::Write(1, u64::MAX, false), Some(NoSpc)),
        (Req::Trim(SIZE, 0), None),
        (Req::Trim(SIZE + 1, 0), Some(Inval)),
        (Req::Trim(2, u64::MAX), Some(Inval)),
        (z(SIZE, 0), None),
        (z(1, SIZE), Some(NoSpc)),
        (z(u64::MAX, 1), Some(NoSpc)),
        (Req::Status(SIZE, 0), None),
        (Req::Status(0, 0), Some(Inval)),
        (Req::Status(1, SIZE), Some(Inval)),
        (Req::Cache(SIZE, 0), None),
        (Req::Cache(1, SIZE), Some(Inval)),
        (Req::Flush, None),
    ];
    let e = Export::negotiate(Arc::new(Rec::new(SIZE)), false).unwrap();
    for (req, want) in cases {
        let got = issue(&e, *req).err().map(|e| e.errno);
        assert_eq!(got, *want, "{req:?}");
    }
}

#[test]
fn read_only_exports_refuse_every_write_with_eperm() {
    let writes = [
        Req::Write(512, 0, false),
        Req::Trim(512, 0),
        Req::Zero { count: 512, offset: 0, fua: false, may_trim: true, fast: false },
    ];
    // Read-only by the server (-r), and because the layer cannot write.
    let no_write = Rec { write: false, ..Rec::new(SIZE) };
    for (layer, readonly) in [(Rec::new(SIZE), true), (no_write, false)] {
        let layer = Arc::new(layer);
        let e = Export::negotiate(layer.clone(), readonly).unwrap();
        assert!(e.info().readonly);
        assert_eq!(e.info().fua, FuaMode::None);
        for w in writes {
            assert_eq!(issue(&e, w).unwrap_err().errno, Errno::Perm, "{w:?}");
        }
        assert!(e.read(512, 0).is_ok());
        assert!(layer.calls.lock().unwrap().iter().all(|c| c.starts_with("pread")));
    }
}

#[test]
fn what_reaches_the_layer_by_its_capabilities() {
    let zero = |fua, may_trim, fast| Req::Zero { count: 8192, offset: 0, fua, may_trim, fast };
    let big_zero = Req::Zero { count: 2 << 20, offset: 0, fua: true, may_trim: false, fast: false };
    // (layer, request, calls the layer sees, error)
    let cases: Vec<(Rec, Req, Vec<&str>, Option<Errno>)> = vec![
        // FUA: passed down native or emulated (the plugin layer flushes,
        // below the filters, as nbdkit), dropped when not advertised.
        (Rec::new(SIZE), Req::Write(512, 0, true), vec!["pwrite 512 0 1"], None),
        (Rec { fua: FuaMode::Emulate, ..Rec::new(SIZE) }, Req::Write(512, 0, true), vec!["pwrite 512 0 1"], None),
        (Rec { fua: FuaMode::None, ..Rec::new(SIZE) }, Req::Write(512, 0, true), vec!["pwrite 512 0 0"], None),
        (Rec { fua: FuaMode::Emulate, ..Rec::new(SIZE) }, zero(true, true, false), vec!["zero 8192 0 3"], None),
        // Zero: native with MAY_TRIM (2) and FAST_ZERO (4) flags.
        (Rec::new(SIZE), zero(false, true, false), vec!["zero 8192 0 2"], None),
        (Rec { fast_zero: true, ..Rec::new(SIZE) }, zero(true, false, true), vec!["zero 8192 0 5"], None),
        // Fast zero the layer cannot do: ENOTSUP, nothing called.
        (Rec::new(SIZE), zero(false, false, true), vec![], Some(Errno::NotSup)),
        (Rec { zero: false, ..Rec::new(SIZE) }, zero(false, false, true), vec![], Some(Errno::NotSup)),
        // No native zero: pwrite of zeros, skipping what reads as zeros
        // by the extents (only the first 4 KiB is data).
        (Rec { zero: false, ..Rec::new(SIZE) }, zero(false, false, false), vec!["pwrite 8192 0 0"], None),
        (Rec { zero: false, extents: true, ..Rec::new(SIZE) }, zero(false, false, false), vec!["pwrite 4096 0 0"], None),
        // ... with FUA as nbdkit's backend_zero: on every write when
        // native, on the last when emulated, and never a flush here.
        (Rec { zero: false, ..Rec::new(SIZE) }, big_zero, vec!["pwrite 1048576 0 1", "pwrite 1048576 1048576 1"], None),
        (Rec { zero: false, fua: FuaMode::Emulate, ..Rec::new(SIZE) }, big_zero, vec!["pwrite 1048576 0 0", "pwrite 1048576 1048576 1"], None),
        // Nothing left to write after the extents: FUA still flushes.
        (Rec { zero: false, extents: true, ..Rec::new(SIZE) }, Req::Zero { count: 4096, offset: 8192, fua: true, may_trim: false, fast: false }, vec!["flush"], None),
        // Cache: none does nothing, native calls cache, emulated reads
        // the data part only.
        (Rec::new(SIZE), Req::Cache(8192, 0), vec![], None),
        (Rec { cache: CacheMode::Native, ..Rec::new(SIZE) }, Req::Cache(8192, 0), vec!["cache 8192 0"], None),
        (Rec { cache: CacheMode::Emulate, extents: true, ..Rec::new(SIZE) }, Req::Cache(8192, 0), vec!["pread 4096 0"], None),
        // Trim and flush pass down.
        (Rec::new(SIZE), Req::Trim(512, 512), vec!["trim 512 512 0"], None),
        (Rec::new(SIZE), Req::Flush, vec!["flush"], None),
    ];
    for (layer, req, want, err) in cases {
        let layer = Arc::new(layer);
        let e = Export::negotiate(layer.clone(), false).unwrap();
        let got = issue(&e, req).err().map(|e| e.errno);
        assert_eq!(got, err, "{req:?}");
        assert_eq!(*layer.calls.lock().unwrap(), want, "{req:?}");
    }
}

#[test]
fn block_status_is_clipped_to_the_request() {
    let e = Export::negotiate(Arc::new(Rec { extents: true, ..Rec::new(SIZE) }), false).unwrap();
    // (count, offset, req_one, extents as (offset, length, type))
    type Case = (u64, u64, bool, &'static [(u64, u64, u32)]);
    let cases: &[Case] = &[
        (8192, 0, false, &[(0, 4096, 0), (4096, 4096, 3)]),
        (8192, 0, true, &[(0, 4096, 0)]),
        (100, 5000, false, &[(5000, 100, 3)]),
        (SIZE - 4000, 4000, false, &[(4000, 96, 0), (4096, SIZE - 4096, 3)]),
    ];
    for (count, offset, req_one, want) in cases {
        let got: Vec<(u64, u64, u32)> = e
            .extents(*count, *offset, *req_one)
            .unwrap()
            .as_slice()
            .iter()
            .map(|x| (x.offset, x.length, x.typ))
            .collect();
        assert_eq!(got, *want, "{count} at {offset}, req_one {req_one}");
    }
    // Without extents the whole request is one data extent.
    let plain = Export::negotiate(Arc::new(Rec::new(SIZE)), false).unwrap();
    let got = plain.extents(SIZE, 0, false).unwrap();
    assert_eq!(got.as_slice().len(), 1);
    assert_eq!((got.as_slice()[0].length, got.as_slice()[0].typ), (SIZE, 0));
}

#[test]
fn sizes_beyond_2_63_are_refused_at_negotiation() {
    for (size, ok) in [(0, true), (i64::MAX as u64, true), (i64::MAX as u64 + 1, false), (u64::MAX, false)] {
        let r = Export::negotiate(Arc::new(Rec::new(size)), false);
        assert_eq!(r.is_ok(), ok, "size {size}");
    }
}
