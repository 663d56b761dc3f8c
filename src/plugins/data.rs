//! The `data` plugin: a disk described on the command line by a data
//! string (`data=`, the magic key), `raw=` bytes or `base64=`, with
//! `size=` and `allocator=` as in nbdkit, and other `KEY=VALUE` pairs as
//! `$KEY`. Writable and shared by all connections.
//!
//! Small patterns are written into the allocator exactly as nbdkit does
//! (so extents match); patterns that would need more than
//! [`EAGER_LIMIT`] bytes of storage stay lazy ([`datastr::Pattern`]) and
//! writes go to an overlay allocator, tracked by range.
//! May use `backend`, `alloc`, `datastr`, `params`.

use super::PluginDef;
use crate::alloc::{AllocSpec, Allocator};
use crate::backend::{debug, extent_type, flags, Backend, BlockSize, Extents, Plugin, Result};
use crate::datastr::{self, EvalOptions, Pattern};
use crate::params::{ConfigError, Params};
use crate::storage::{alloc_error, AllocDisk};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// Patterns needing at most this much storage are evaluated into the
/// allocator; bigger ones are served lazily.
pub const EAGER_LIMIT: u64 = 64 << 20;

const KNOWN: &[&str] = &["data", "raw", "base64", "size", "allocator"];

pub const DEF: PluginDef = PluginDef {
    name: "data",
    aliases: &[],
    magic_key: Some("data"),
    params: &[
        (
            "data",
            "the disk as a data string, e.g. '0 1 2 @0x1fe 0x55 0xaa'",
        ),
        ("raw", "the disk as literal bytes"),
        ("base64", "the disk as base64"),
        ("size", "truncate or zero-extend to this size"),
        (
            "allocator",
            "sparse (default), malloc, malloc,mlock=true or zstd",
        ),
        ("KEY", "any other KEY=VALUE is $KEY inside data="),
    ],
    description: "a disk described by a data string, raw bytes or base64",
    callbacks: &["dump_plugin", "pwrite", "flush", "trim", "zero", "extents"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    let (mine, extra) = p.split(KNOWN);
    let sources: Vec<&(String, String)> = mine
        .items
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "data" | "raw" | "base64"))
        .collect();
    let (key, value) = match sources.as_slice() {
        [one] => (one.0.as_str(), one.1.as_str()),
        [] => {
            return Err(ConfigError::new(
                "data: one of data=STRING, raw=BYTES or base64=B64 is required",
            ))
        }
        _ => {
            return Err(ConfigError::new(
                "data: give exactly one of data=, raw= or base64= (more than one was given)",
            ))
        }
    };
    if key != "data" {
        if let Some((k, v)) = extra.items.first() {
            return Err(ConfigError::new(format!(
                "data: unknown parameter {k}={v}; extra KEY=VALUE parameters are $KEY variables \
                 and only allowed with data=; accepted: {}",
                KNOWN.join(", ")
            )));
        }
    }
    let mut pattern = match key {
        "data" => compile(value, &EvalOptions::plugin(extra.items.clone()))
            .map_err(|e| ConfigError::new(format!("data: {e}")))?,
        "raw" => Pattern::bytes(value.as_bytes().to_vec()),
        _ => Pattern::bytes(
            base64_decode(value)
                .map_err(|e| ConfigError::new(format!("data: base64={value}: {e}")))?,
        ),
    };
    if let Some(size) = p.size("size")? {
        pattern = pattern.resized(size);
    }
    let spec_s = p.get("allocator").unwrap_or("sparse");
    let spec = AllocSpec::parse(spec_s).map_err(|e| ConfigError::new(format!("data: {e}")))?;
    let size = pattern.size();
    let disk: Arc<dyn Backend> = if pattern.dense_cost() <= EAGER_LIMIT {
        let alloc = spec
            .create(size)
            .map_err(|e| ConfigError::new(format!("data: allocator={spec_s}: {e}")))?;
        pattern
            .write_into(&*alloc, 0)
            .map_err(|e| ConfigError::new(format!("data: storing the data: {e}")))?;
        Arc::new(AllocDisk::new(alloc, size))
    } else {
        let overlay = spec
            .create(size)
            .map_err(|e| ConfigError::new(format!("data: allocator={spec_s}: {e}")))?;
        Arc::new(LazyDisk {
            pattern,
            overlay,
            written: RwLock::new(BTreeMap::new()),
        })
    };
    Ok(Arc::new(Data { disk }))
}

/// `-D data.AST=1`: log the optimized tree of `data=` (with `-v`).
static DEBUG_AST: AtomicBool = AtomicBool::new(false);

/// Turn `-D data.AST=N` on (N ≠ 0) or off, as nbdkit's `data_debug_AST`.
pub fn set_debug_ast(on: bool) {
    DEBUG_AST.store(on, Relaxed);
}

/// Compile `data=`; with `-D data.AST=1`, log its optimized tree first as
/// nbdkit does (`nbdkit: debug: BEGIN AST (-D data.AST=1)`, a line per
/// node, `nbdkit: debug: END AST`, in the `-v` stream).
fn compile(value: &str, opts: &EvalOptions) -> datastr::Result<Pattern> {
    if !DEBUG_AST.load(Relaxed) {
        return datastr::compile(value, opts);
    }
    let (lines, pattern) = datastr::compile_with_ast(value, opts)?;
    tracing::debug!(target: debug::TARGET, "BEGIN AST (-D data.AST=1)");
    for l in lines {
        tracing::debug!(target: debug::TARGET, "{l}");
    }
    tracing::debug!(target: debug::TARGET, "END AST");
    pattern
}

/// Standard base64 (with padding); whitespace is ignored, as GnuTLS does.
pub fn base64_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    let chars: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::DecodeError as E;
    base64::engine::general_purpose::STANDARD
        .decode(chars)
        .map_err(|e| match e {
            E::InvalidByte(at, b'=') => format!("not valid base64 (misplaced '=' at {at})"),
            E::InvalidByte(at, c) => {
                format!("not valid base64 (bad character {:?} at {at})", c as char)
            }
            E::InvalidLength(_) | E::InvalidPadding => {
                "not valid base64 (the length must be a multiple of 4, with '=' padding)".into()
            }
            E::InvalidLastSymbol(at, c) => format!(
                "not valid base64 (the last character {:?} at {at} has bits that are not used)",
                c as char
            ),
        })
}

pub struct Data {
    disk: Arc<dyn Backend>,
}

impl Plugin for Data {
    fn name(&self) -> String {
        "data".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(self.disk.clone())
    }
}

/// A huge pattern served lazily, with writes in an overlay allocator.
/// `written` holds the merged ranges (start → end) the overlay owns.
pub struct LazyDisk {
    pattern: Pattern,
    overlay: Arc<dyn Allocator>,
    written: RwLock<BTreeMap<u64, u64>>,
}

impl LazyDisk {
    /// Record `[a, b)` as owned by the overlay (merging neighbours).
    fn mark(&self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let mut w = self.written.write();
        let (mut lo, mut hi) = (a, b);
        let hits: Vec<(u64, u64)> = w
            .range(..=b)
            .rev()
            .take_while(|(_, &e)| e >= a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hits {
            w.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        w.insert(lo, hi);
    }

    /// Written ranges intersecting `[a, b)`, clipped.
    fn written_in(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let w = self.written.read();
        let mut out = Vec::new();
        if let Some((_, &e)) = w.range(..a).next_back() {
            if e > a {
                out.push((a, e.min(b)));
            }
        }
        for (&s, &e) in w.range(a..b) {
            out.push((s, e.min(b)));
        }
        out
    }
}

impl Backend for LazyDisk {
    crate::backend::all_capabilities!();
    fn is_blocking(&self) -> bool {
        self.overlay.is_blocking()
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.pattern.size())
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(Some(BlockSize {
            minimum: 1,
            preferred: self.overlay.preferred_block().max(512),
            maximum: 0xffff_ffff,
        }))
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        self.pattern.read(buf, offset);
        let end = offset + buf.len() as u64;
        for (a, b) in self.written_in(offset, end) {
            let r = &mut buf[(a - offset) as usize..(b - offset) as usize];
            self.overlay.read(r, a).map_err(alloc_error)?;
        }
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        self.overlay.write(buf, offset).map_err(alloc_error)?;
        self.mark(offset, offset + buf.len() as u64);
        Ok(())
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        Ok(())
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        self.zero(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.overlay.zero(count, offset).map_err(alloc_error)?;
        self.mark(offset, offset + count);
        Ok(())
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let count = if flags & flags::REQ_ONE != 0 {
            count.min(1 << 20)
        } else {
            count
        };
        let end = offset + count;
        let mut e = Extents::new(offset, count);
        let hole = extent_type::HOLE | extent_type::ZERO;
        let mut cur = offset;
        let written = self.written_in(offset, end);
        let mut wi = written.into_iter().peekable();
        while cur < end && e.len() < 1024 {
            match wi.peek().copied() {
                Some((a, b)) if a <= cur => {
                    for x in self.overlay.extents(b - cur, cur).map_err(alloc_error)? {
                        e.add(x.offset, x.length, x.typ)?;
                    }
                    cur = b;
                    wi.next();
                }
                next => {
                    let stop = next.map(|(a, _)| a).unwrap_or(end);
                    for x in self.pattern.extents(cur, stop - cur, 256) {
                        e.add(x.offset, x.length, if x.zero { hole } else { 0 })?;
                    }
                    // Extents may stop early; then so do we.
                    if e.next_offset() < stop {
                        break;
                    }
                    cur = stop;
                }
            }
        }
        Ok(e)
    }
    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(args: &[(&str, &str)]) -> std::result::Result<Arc<dyn Backend>, ConfigError> {
        let p = Params::new(
            args.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let pl = make(&p)?;
        Ok(pl.open(false, "").expect("open"))
    }

    fn read(d: &Arc<dyn Backend>, off: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0xEE; n];
        d.pread(&mut v, off, 0).expect("pread");
        v
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("MTIz").unwrap(), b"123");
        assert_eq!(base64_decode("MTI=").unwrap(), b"12");
        assert_eq!(base64_decode("MQ==").unwrap(), b"1");
        assert_eq!(base64_decode("MT Iz").unwrap(), b"123");
        for (bad, want) in [
            ("MT!z", "bad character '!' at 2"),
            ("MTI", "multiple of 4"),
            ("M=Iz", "misplaced '=' at 1"),
            ("MR==", "the last character 'R' at 1"),
        ] {
            let e = base64_decode(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert_eq!(base64_decode("").unwrap(), b"");
        for bad in ["MTI", "M", "MT!z", "MQ==MTIz", "M==="] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters() {
        let d = plugin(&[("data", "1 2 $x"), ("x", "3"), ("size", "5")]).unwrap();
        assert_eq!(d.get_size().unwrap(), 5);
        assert_eq!(read(&d, 0, 5), [1, 2, 3, 0, 0]);
        let d = plugin(&[("raw", "hi")]).unwrap();
        assert_eq!(read(&d, 0, 2), b"hi");
        let d = plugin(&[("base64", "MTIz"), ("size", "2")]).unwrap();
        assert_eq!(read(&d, 0, 2), b"12");
        for (args, want) in [
            (vec![], "required"),
            (vec![("data", "1"), ("raw", "2")], "exactly one"),
            (vec![("raw", "2"), ("x", "3")], "x=3"),
            (vec![("data", "256")], "0..255"),
            (vec![("data", "1"), ("allocator", "bogus")], "bogus"),
            (vec![("data", "1"), ("size", "1X")], "size=1X"),
        ] {
            let e = plugin(&args).map(|_| ()).unwrap_err();
            assert!(e.0.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn lazy_with_overlay() {
        let d = plugin(&[("data", "( 0x55 0xAA )*4294967296")]).unwrap();
        assert_eq!(d.get_size().unwrap(), 8 << 30);
        assert_eq!(read(&d, 7, 3), [0xAA, 0x55, 0xAA]);
        d.pwrite(&[1, 2, 3], 8, 0).unwrap();
        d.zero(4, 100, 0).unwrap();
        assert_eq!(read(&d, 6, 6), [0x55, 0xAA, 1, 2, 3, 0xAA]);
        assert_eq!(read(&d, 99, 6), [0xAA, 0, 0, 0, 0, 0x55]);
        d.pwrite(&[9], 11, 0).unwrap();
        assert_eq!(read(&d, 8, 4), [1, 2, 3, 9]);
        let e = d.extents(1 << 20, 0, 0).unwrap();
        assert!(e
            .as_slice()
            .iter()
            .all(|x| x.typ & extent_type::ZERO == 0
                || (x.offset >= 100 && x.offset + x.length <= 104)));
        // A huge sparse pattern: holes where nothing was written.
        let d = plugin(&[("data", "@1T 1 2 3 (0x55)*100000000")]).unwrap();
        let e = d.extents(1 << 41, 0, 0).unwrap();
        assert_eq!(e.as_slice()[0].typ, extent_type::HOLE | extent_type::ZERO);
        assert_eq!(e.as_slice()[0].length, 1 << 40);
        assert_eq!(e.as_slice()[1].typ, 0);
    }
}
