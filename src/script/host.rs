//! Host functions every script has: `disk(...)` (native storage over
//! `crate::alloc`), `data(...)`, `pattern`, `write_blob`, `fill`, `is_zero`,
//! `parse_size`, `nbd_error`, the `nbd::` constants, and the mapping between
//! script errors and `BackendError`. Only `src/script/` may import rhai.

use crate::alloc::{AllocSpec, Allocator};
use crate::backend::{extent_type, flags, BackendError, Errno, Extents};
use crate::storage::alloc_error;
use super::raise::{raise, raise_backend, raise_map, thrown_errno, RResult};
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, Map, Module, Position, INT};
use std::sync::Arc;

/// Map a script error onto the client's errno, with `file:line:col` and the
/// message for the log. Anything but `nbd_error` (or a thrown
/// `#{errno: ...}`) is EIO.
pub fn to_backend_error(err: &EvalAltResult, file: &str, callback: &str) -> BackendError {
    to_backend_error_kind(err, file, callback).0
}

/// Like `to_backend_error`, also saying whether the script raised the
/// error on purpose (`nbd_error`), which is logged quietly.
pub fn to_backend_error_kind(
    err: &EvalAltResult,
    file: &str,
    callback: &str,
) -> (BackendError, bool) {
    let mut inner = err;
    let mut pos = err.position();
    while let EvalAltResult::ErrorInFunctionCall(_, _, e, p) = inner {
        if !p.is_none() {
            pos = *p;
        }
        inner = e;
        if !inner.position().is_none() {
            pos = inner.position();
        }
    }
    let at = at(file, pos);
    match inner {
        EvalAltResult::ErrorRuntime(v, _) => {
            if let Some((errno, msg, limit)) = thrown_errno(v) {
                return (
                    BackendError::new(errno, format!("{at}: {callback}: {msg}")),
                    !limit,
                );
            }
            (
                BackendError::io(format!("{at}: {callback}: script error: {v}")),
                false,
            )
        }
        EvalAltResult::ErrorTooManyOperations(_) => (
            BackendError::io(format!(
                "{at}: {callback}: stopped: too many operations (--max-operations)"
            )),
            false,
        ),
        EvalAltResult::ErrorTerminated(v, _) if v.is::<super::memory::MemoryStop>() => (
            BackendError::new(
                Errno::NoMem,
                format!(
                    "{at}: {callback}: stopped: {}",
                    v.read_lock::<super::memory::MemoryStop>()
                        .map(|m| m.0.clone())
                        .unwrap_or_default()
                ),
            ),
            false,
        ),
        EvalAltResult::ErrorTerminated(_, _) => (
            BackendError::io(format!(
                "{at}: {callback}: stopped: the call ran past its time limit (--script-timeout)"
            )),
            false,
        ),
        _ => (
            BackendError::io(format!(
                "{at}: {callback}: {}",
                strip_pos(&inner.to_string())
            )),
            false,
        ),
    }
}

/// `file:line:col` for a position (`file` alone when unknown).
pub fn at(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

/// Drop rhai's trailing ` (line N, position M)`: we print file:line:col.
pub fn strip_pos(s: &str) -> String {
    match s.rfind(" (line ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s.to_string(),
    }
}

/// A size given as an integer or a size string (`"64M"`).
pub fn size_arg(v: &Dynamic, what: &str) -> RResult<u64> {
    if let Ok(i) = v.as_int() {
        return u64::try_from(i)
            .map_err(|_| raise(Errno::Inval, format!("{what}: negative size {i}")));
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return crate::params::parse_size(&s)
            .map_err(|e| raise(Errno::Inval, format!("{what}: {e}")));
    }
    Err(raise(
        Errno::Inval,
        format!(
            "{what}: expected an integer or a size string like \"64M\", got {}",
            v.type_name()
        ),
    ))
}

fn nonneg(v: INT, what: &str) -> RResult<u64> {
    u64::try_from(v).map_err(|_| {
        raise(
            Errno::Inval,
            format!("{what} must not be negative, got {v}"),
        )
    })
}

/// Check `[offset, offset+count)` against `size`.
fn range(size: u64, count: INT, offset: INT, errno: Errno, what: &str) -> RResult<(u64, u64)> {
    let c = nonneg(count, "count")?;
    let o = nonneg(offset, "offset")?;
    match o.checked_add(c) {
        Some(end) if end <= size => Ok((c, o)),
        _ => Err(raise(
            errno,
            format!(
                "{what} of {c} bytes at offset {o} is beyond the end of the disk ({size} bytes)"
            ),
        )),
    }
}

/// Largest single buffer a script may ask `disk.pread` or `pattern` for.
const MAX_BUF: u64 = 1 << 30;

/// Native storage: `disk(size[, allocator])`. Cloning shares the storage,
/// so a disk kept in `config`'s state survives reloads and is the same for
/// every connection.
#[derive(Clone)]
pub struct Disk {
    pub alloc: Arc<dyn Allocator>,
    pub size: u64,
}

impl Disk {
    pub fn new(size: u64, spec: &str) -> RResult<Disk> {
        let spec = AllocSpec::parse(spec).map_err(|e| raise(Errno::Inval, e.to_string()))?;
        let alloc = spec
            .create(size)
            .map_err(|e| raise(Errno::Inval, e.to_string()))?;
        Ok(Disk { alloc, size })
    }
    fn pread(&mut self, count: INT, offset: INT) -> RResult<Blob> {
        let (c, o) = range(self.size, count, offset, Errno::Inval, "disk.pread")?;
        if c > MAX_BUF {
            return Err(raise(
                Errno::Inval,
                format!("disk.pread: {c} bytes is too large"),
            ));
        }
        super::memory::reserve(c, "disk.pread")?;
        // Every byte is overwritten by the read.
        let mut buf = super::memory::read_buffer(c as usize);
        self.alloc
            .read(&mut buf, o)
            .map_err(|e| raise_backend(alloc_error(e)))?;
        Ok(buf)
    }
    fn pwrite(&mut self, buf: Blob, offset: INT) -> RResult<()> {
        let (_, o) = range(
            self.size,
            buf.len() as INT,
            offset,
            Errno::NoSpc,
            "disk.pwrite",
        )?;
        self.alloc
            .write(&buf, o)
            .map_err(|e| raise_backend(alloc_error(e)))
    }
    fn zero(&mut self, count: INT, offset: INT) -> RResult<()> {
        let (c, o) = range(self.size, count, offset, Errno::NoSpc, "disk.zero")?;
        self.alloc
            .zero(c, o)
            .map_err(|e| raise_backend(alloc_error(e)))
    }
    fn extents(&mut self, count: INT, offset: INT) -> RResult<Array> {
        let (c, o) = range(self.size, count, offset, Errno::Inval, "disk.extents")?;
        let list = self
            .alloc
            .extents(c, o)
            .map_err(|e| raise_backend(alloc_error(e)))?;
        Ok(list
            .into_iter()
            .map(|x| {
                Dynamic::from_array(vec![
                    Dynamic::from(x.offset as INT),
                    Dynamic::from(x.length as INT),
                    Dynamic::from(x.typ as INT),
                ])
            })
            .collect())
    }
}

/// Extents as a script array `[[offset, length, type], ...]`.
pub fn extents_to_array(e: &Extents) -> Array {
    e.as_slice()
        .iter()
        .map(|x| {
            Dynamic::from_array(vec![
                Dynamic::from(x.offset as INT),
                Dynamic::from(x.length as INT),
                Dynamic::from(x.typ as INT),
            ])
        })
        .collect()
}

/// A script's extents array (`[[offset, length, type], ...]`) into `Extents`.
pub fn array_to_extents(v: Dynamic, count: u64, offset: u64) -> Result<Extents, String> {
    let arr = v
        .into_array()
        .map_err(|t| format!("extents must return an array of [offset, length, type], got {t}"))?;
    let mut e = Extents::new(offset, count);
    for item in arr {
        let item = item.flatten();
        let triple = item
            .into_array()
            .map_err(|t| format!("each extent must be [offset, length, type], got {t}"))?;
        let nums: Vec<INT> = triple.iter().filter_map(|x| x.as_int().ok()).collect();
        if nums.len() != 3 || triple.len() != 3 || nums.iter().any(|n| *n < 0) {
            return Err(
                "each extent must be [offset, length, type] of non-negative integers".into(),
            );
        }
        e.add(nums[0] as u64, nums[1] as u64, nums[2] as u32)
            .map_err(|x| x.message)?;
    }
    Ok(e)
}

fn pattern(len: INT, pat: Blob) -> RResult<Blob> {
    let n = nonneg(len, "pattern length")?;
    if n > MAX_BUF {
        return Err(raise(
            Errno::Inval,
            format!("pattern: {n} bytes is too large"),
        ));
    }
    super::memory::reserve(n, "pattern")?;
    let n = n as usize;
    if pat.is_empty() {
        return Ok(vec![0u8; n]);
    }
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&pat[..pat.len().min(n)]);
    // Double what is there (whole copies of the pattern), at most 16 MiB
    // per step, checking the deadline between steps.
    let step = ((16 << 20) / pat.len()).max(1) * pat.len();
    while out.len() < n {
        // `out` holds whole copies here; only the last piece may be partial.
        let take = out.len().min(step).min(n - out.len());
        out.extend_from_within(..take);
        super::budget::check_time()?;
    }
    Ok(out)
}

fn write_blob(b: &mut Blob, offset: INT, src: Blob) -> RResult<()> {
    let o = nonneg(offset, "write_blob offset")?;
    let end = o.checked_add(src.len() as u64);
    match end {
        Some(end) if end <= b.len() as u64 => {
            b[o as usize..end as usize].copy_from_slice(&src);
            Ok(())
        }
        _ => Err(raise(
            Errno::Inval,
            format!(
                "write_blob: {} bytes at offset {o} do not fit in a blob of {} bytes",
                src.len(),
                b.len()
            ),
        )),
    }
}

fn nbd_error(errno: &str, message: &str) -> Box<EvalAltResult> {
    match Errno::from_name(errno) {
        Some(e) => raise_map(e, message.to_string(), false),
        None => raise(
            Errno::Io,
            format!("{message} (nbd_error: unknown errno {errno:?}; use EIO, EPERM, ENOSPC, EINVAL, ENOTSUP, ENOMEM, EOVERFLOW, ESHUTDOWN)"),
        ),
    }
}

/// Register every host function and the `nbd::` module. `allow_files`
/// lets data strings use `<FILE`, `<(SCRIPT)` and the environment.
pub fn register(engine: &mut Engine, allow_files: bool) {
    engine.register_type_with_name::<Disk>("Disk");
    engine.register_fn("disk", |size: Dynamic| -> RResult<Disk> {
        Disk::new(size_arg(&size, "disk(size)")?, "sparse")
    });
    engine.register_fn("disk", |size: Dynamic, a: &str| -> RResult<Disk> {
        Disk::new(size_arg(&size, "disk(size, allocator)")?, a)
    });
    // A Disk is a handle (cloning shares the storage), so its methods take
    // it by value: rhai then never writes it back after a call
    // (`h.disk.pread(..)` would otherwise run `h.disk = ...` every time);
    // the clone costs less than that setter call.
    engine.register_fn("size", |d: Disk| d.size as INT);
    engine.register_get("size", |d: &mut Disk| d.size as INT);
    engine.register_fn("pread", |mut d: Disk, c: INT, o: INT| d.pread(c, o));
    engine.register_fn("pwrite", |mut d: Disk, b: Blob, o: INT| d.pwrite(b, o));
    engine.register_fn("zero", |mut d: Disk, c: INT, o: INT| d.zero(c, o));
    engine.register_fn("trim", |mut d: Disk, c: INT, o: INT| d.zero(c, o));
    engine.register_fn("extents", |mut d: Disk, c: INT, o: INT| d.extents(c, o));
    engine.register_fn("flush", |d: Disk| -> RResult<()> {
        d.alloc.flush().map_err(|e| raise_backend(alloc_error(e)))
    });
    engine.register_fn("stats", |d: &mut Disk| {
        let u = d.alloc.usage();
        let mut m = Map::new();
        m.insert("allocator".into(), d.alloc.name().into());
        m.insert("stored".into(), (u.stored as INT).into());
        m.insert("used".into(), (u.used as INT).into());
        m.insert("ratio".into(), Dynamic::from_float(u.ratio()));
        m.insert("line".into(), d.alloc.stats().into());
        m
    });
    engine.register_fn("to_string", |d: &mut Disk| {
        format!("disk({} bytes, {})", d.size, d.alloc.name())
    });

    engine.register_fn("data", move |s: &str| -> RResult<Blob> {
        data_blob(s, None, allow_files)
    });
    engine.register_fn("data", move |s: &str, size: Dynamic| -> RResult<Blob> {
        let n = size_arg(&size, "data(string, size)")?;
        data_blob(s, Some(n), allow_files)
    });
    engine.register_type_with_name::<DataDisk>("DataDisk");
    engine.register_fn("data_disk", move |s: &str| -> RResult<DataDisk> {
        let p = crate::datastr::compile(s, &data_options(allow_files))
            .map_err(|e| raise(Errno::Inval, format!("data_disk: {e}")))?;
        Ok(DataDisk(Arc::new(p)))
    });
    engine.register_fn("size", |d: &mut DataDisk| d.0.size() as INT);
    engine.register_get("size", |d: &mut DataDisk| d.0.size() as INT);
    engine.register_fn("pread", |d: &mut DataDisk, count: INT, offset: INT| -> RResult<Blob> {
        let size = d.0.size();
        if count < 0 || offset < 0 || (offset as u64).checked_add(count as u64).is_none_or(|e| e > size) {
            return Err(raise(
                Errno::Inval,
                format!("data_disk.pread: {count} bytes at {offset} is outside the pattern of {size} bytes"),
            ));
        }
        if count as u64 > MAX_DATA_BLOB {
            return Err(raise(Errno::Inval, format!("data_disk.pread: {count} bytes is too large")));
        }
        super::memory::reserve(count as u64, "data_disk.pread")?;
        let mut b = vec![0u8; count as usize];
        d.0.read(&mut b, offset as u64);
        Ok(b)
    });
    engine.register_fn("pattern", pattern);
    engine.register_fn("write_blob", write_blob);
    // `fill` (and the other bulk functions that check the deadline): bulk.rs.
    engine.register_fn("is_zero", |b: &mut Blob| b.iter().all(|x| *x == 0));
    engine.register_fn("parse_size", |s: &str| -> RResult<INT> {
        crate::params::parse_size(s)
            .map(|v| v as INT)
            .map_err(|e| raise(Errno::Inval, e))
    });
    engine.register_fn("nbd_error", |e: &str, m: &str| -> RResult<()> {
        Err(nbd_error(e, m))
    });
    engine.register_fn("nbd_error", |e: &str| -> RResult<()> {
        Err(nbd_error(e, e))
    });

    let mut m = Module::new();
    m.set_var("FUA", flags::FUA as INT);
    m.set_var("MAY_TRIM", flags::MAY_TRIM as INT);
    m.set_var("FAST_ZERO", flags::FAST_ZERO as INT);
    m.set_var("REQ_ONE", flags::REQ_ONE as INT);
    m.set_var("DATA", extent_type::DATA as INT);
    m.set_var("HOLE", extent_type::HOLE as INT);
    m.set_var("ZERO", extent_type::ZERO as INT);
    engine.register_static_module("nbd", m.into());
}

/// Largest Blob `data()` builds; bigger patterns use `data_disk()`.
const MAX_DATA_BLOB: u64 = 256 << 20;

/// A lazy data-string pattern: reads are computed, never expanded.
#[derive(Clone)]
pub struct DataDisk(pub Arc<crate::datastr::Pattern>);

/// Whether `a` and `b` are the same `disk()` or `data_disk()` object.
pub fn same_object(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Some(x), Some(y)) = (a.read_lock::<Disk>(), b.read_lock::<Disk>()) {
        return Arc::ptr_eq(&x.alloc, &y.alloc) && x.size == y.size;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<DataDisk>(), b.read_lock::<DataDisk>()) {
        return Arc::ptr_eq(&x.0, &y.0);
    }
    false
}

fn data_options(allow_files: bool) -> crate::datastr::EvalOptions {
    crate::datastr::EvalOptions {
        allow_files,
        vars: Vec::new(),
        use_env: allow_files,
    }
}

/// `data(string[, size])`: the same bytes as the `data` plugin.
fn data_blob(s: &str, size: Option<u64>, allow_files: bool) -> RResult<Blob> {
    let p = crate::datastr::compile(s, &data_options(allow_files))
        .map_err(|e| raise(Errno::Inval, format!("data: {e}")))?;
    let p = match size {
        Some(n) => p.resized(n),
        None => p,
    };
    if p.size() > MAX_DATA_BLOB {
        return Err(raise(
            Errno::Inval,
            format!(
                "data: the pattern is {} bytes, more than a Blob may hold ({MAX_DATA_BLOB}); use data_disk(string) for a lazy pattern",
                p.size()
            ),
        ));
    }
    super::memory::reserve(p.size(), "data")?;
    let mut b = vec![0u8; p.size() as usize];
    p.read(&mut b, 0);
    Ok(b)
}
