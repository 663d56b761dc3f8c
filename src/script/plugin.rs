//! `ScriptPlugin` (a script as the backend `Plugin`) and `Layer`, the
//! per-connection `Backend` of a script plugin or filter: capabilities from
//! which callbacks exist (overridden by `can_*`), the thread model's locks,
//! Blobs moved in and out. Only `src/script/` may import rhai.

use super::call::{call_conv, call_raw, Args, Scopes};
use super::code::{contract, Cb, Code, Kind};
use super::load::Host;
use super::host::array_to_extents;
use super::memory;
use super::reload::{self, Watch};
use super::{ScriptOptions, ScriptSource};
use crate::backend::{
    extent_type, Backend, BackendError, BlockSize, CacheMode, Errno, Extents, FuaMode, Plugin,
    Result, ThreadModel,
};
use crate::params::{ConfigError, Params};
use rhai::{Dynamic, INT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod answers;

use answers::{to_block_size, to_bool, to_cache, to_desc, to_fua, to_size};

/// A script plugin: process-wide (its `config` state is shared by every
/// connection and survives reloads).
pub struct ScriptPlugin {
    host: Arc<Host>,
    _watch: Option<Watch>,
}

impl ScriptPlugin {
    pub fn load(
        source: &ScriptSource,
        params: &Params,
        opts: &ScriptOptions,
    ) -> std::result::Result<Self, ConfigError> {
        let host = Arc::new(Host::load(source, params, opts, Kind::Plugin)?);
        let _watch = reload::watch(&host)?;
        Ok(ScriptPlugin { host, _watch })
    }

    /// Recompile now (what the watcher does on a change).
    pub fn reload(&self) -> std::result::Result<(), String> {
        self.host.reload()
    }
}

impl Plugin for ScriptPlugin {
    fn name(&self) -> String {
        self.host.name.clone()
    }
    fn open(&self, readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(Layer::open(self.host.clone(), None, readonly)?))
    }
    fn dump(&self) -> Vec<(String, String)> {
        dump(&self.host)
    }
}

/// `--dump-plugin` lines of a loaded script (as `dump::dump_source`).
pub fn dump(host: &Host) -> Vec<(String, String)> {
    super::dump::lines(
        &host.code.load(),
        host.kind,
        &host.source,
        host.opts.watch,
        &host.about,
    )
}

/// One connection's view of a script layer.
pub struct Layer {
    host: Arc<Host>,
    handle: Dynamic,
    next: Option<Arc<dyn Backend>>,
    /// `next` as the script sees it (a `Next` value), or unit for plugins.
    next_dyn: Dynamic,
    lock: parking_lot::Mutex<()>,
    scopes: Scopes,
    closed: AtomicBool,
}

impl Layer {
    pub fn open(
        host: Arc<Host>,
        next: Option<(Arc<dyn Backend>, Dynamic)>,
        readonly: bool,
    ) -> Result<Layer> {
        let (next, next_dyn) = match next {
            Some((n, d)) => (Some(n), d),
            None => (None, Dynamic::UNIT),
        };
        let code = host.code.load();
        let handle = match code.arity(Cb::Open) {
            Some(n) => {
                let args = || {
                    let mut args = Args::new([host.state.clone(), Dynamic::from(readonly)]);
                    if host.kind == Kind::Filter && n == 3 {
                        args.push_front(next_dyn.clone());
                    }
                    args
                };
                let _g =
                    (host.model == ThreadModel::SerializeAllRequests).then(|| host.global.lock());
                let v = call_raw(&host.opts, &host.budget, &code, &host.name, Cb::Open, args)?;
                host.make_handle(v)
            }
            None => host.state.clone(),
        };
        Ok(Layer {
            host,
            handle,
            next,
            next_dyn,
            lock: parking_lot::Mutex::new(()),
            scopes: Scopes::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// The current code (a reload swaps it; a call keeps the version it
    /// started with). A guard, not an `Arc` clone: no shared refcount
    /// traffic per request.
    fn code(&self) -> arc_swap::Guard<Arc<Code>> {
        self.host.code.load()
    }

    /// Call `cb` of `code` with `[next,] h, rest...` under the thread model's lock.
    /// The arguments are `[next,] h, [buf,] rest...`: `buf` (a `pwrite`'s
    /// buffer) is handed to the script; `rest` are integers.
    fn call<const N: usize>(
        &self,
        code: &Code,
        cb: Cb,
        buf: Option<Vec<u8>>,
        rest: [Dynamic; N],
    ) -> Result<Dynamic> {
        self.call_with(code, cb, buf, rest, Ok)
    }

    /// `call`, converting the result inside the script's memory budget.
    fn call_with<const N: usize, T>(
        &self,
        code: &Code,
        cb: Cb,
        buf: Option<Vec<u8>>,
        rest: [Dynamic; N],
        conv: impl FnOnce(Dynamic) -> Result<T>,
    ) -> Result<T> {
        // Made inside the script's budget (the handle's copy and the
        // Blob's box are freed there).
        let args = || {
            let mut args = Args::new([]);
            if self.next.is_some() {
                args.push(self.next_dyn.clone());
            }
            args.push(self.handle.clone());
            if let Some(b) = buf {
                args.push_blob(b);
            }
            for d in rest {
                args.push(d);
            }
            args.in_scope_of(&self.scopes)
        };
        let _g = match self.host.model {
            ThreadModel::SerializeAllRequests => Some(self.host.global.lock()),
            ThreadModel::SerializeRequests => Some(self.lock.lock()),
            ThreadModel::Parallel => None,
        };
        call_conv(
            &self.host.opts,
            &self.host.budget,
            code,
            &self.host.name,
            cb,
            args,
            conv,
        )
    }

    /// A `can_*`-style query: the script's answer, else the next layer's
    /// (filters), else `default` (plugins).
    fn query<T>(
        &self,
        cb: Cb,
        conv: fn(Dynamic) -> std::result::Result<T, String>,
        next: impl FnOnce(&dyn Backend) -> Result<T>,
        default: impl FnOnce(&Code) -> T,
    ) -> Result<T> {
        let code = self.code();
        if code.has(cb) {
            let name = &self.host.name;
            return self.call_with(&code, cb, None, [], |v| {
                conv(v).map_err(|m| contract(&code, name, cb, m))
            });
        }
        match &self.next {
            Some(n) => next(n.as_ref()),
            None => Ok(default(&code)),
        }
    }

    fn ranged(&self, cb: Cb, count: u64, offset: u64, flags: u32) -> Option<Result<Dynamic>> {
        let code = self.code();
        code.has(cb).then(|| {
            self.call(
                &code,
                cb,
                None,
                [int(count), int(offset), Dynamic::from(flags as INT)],
            )
        })
    }
}

fn int(v: u64) -> Dynamic {
    Dynamic::from(v as INT)
}

fn unit(r: Result<Dynamic>) -> Result<()> {
    r.map(|_| ())
}

impl Drop for Layer {
    /// The handle is the script's memory: freeing it counts as its. The
    /// connection is over: repeated log lines still being counted are
    /// logged with their count.
    fn drop(&mut self) {
        let h = std::mem::take(&mut self.handle);
        let s = std::mem::take(&mut self.scopes);
        memory::scope(&self.host.budget, || drop((h, s)));
        super::report::flush();
    }
}

impl Backend for Layer {
    fn next(&self) -> Option<&dyn Backend> {
        self.next.as_deref()
    }
    fn is_blocking(&self) -> bool {
        true
    }
    /// A script only computes (it has no I/O of its own); it waits when
    /// the layer below does.
    fn waits(&self) -> bool {
        self.next.as_ref().is_some_and(|n| n.waits())
    }
    fn thread_model(&self) -> ThreadModel {
        match &self.next {
            Some(n) => self.host.model.min(n.thread_model()),
            None => self.host.model,
        }
    }
    fn get_size(&self) -> Result<u64> {
        self.query(Cb::GetSize, to_size, |n| n.get_size(), |_| 0)
    }
    fn can_write(&self) -> Result<bool> {
        self.query(
            Cb::CanWrite,
            to_bool,
            |n| n.can_write(),
            |c| c.has(Cb::Pwrite),
        )
    }
    fn can_flush(&self) -> Result<bool> {
        self.query(
            Cb::CanFlush,
            to_bool,
            |n| n.can_flush(),
            |c| c.has(Cb::Flush),
        )
    }
    fn can_trim(&self) -> Result<bool> {
        self.query(Cb::CanTrim, to_bool, |n| n.can_trim(), |c| c.has(Cb::Trim))
    }
    fn can_zero(&self) -> Result<bool> {
        self.query(Cb::CanZero, to_bool, |n| n.can_zero(), |c| c.has(Cb::Zero))
    }
    fn can_fast_zero(&self) -> Result<bool> {
        // nbdkit's default for a plugin: true when `zero` is not native.
        let native_zero = match self.next {
            None if !self.code().has(Cb::CanFastZero) => self.can_zero()?,
            _ => false,
        };
        self.query(
            Cb::CanFastZero,
            to_bool,
            |n| n.can_fast_zero(),
            |_| !native_zero,
        )
    }
    fn can_extents(&self) -> Result<bool> {
        self.query(
            Cb::CanExtents,
            to_bool,
            |n| n.can_extents(),
            |c| c.has(Cb::Extents),
        )
    }
    fn can_fua(&self) -> Result<FuaMode> {
        self.query(
            Cb::CanFua,
            to_fua,
            |n| n.can_fua(),
            |c| {
                if c.has(Cb::Flush) {
                    FuaMode::Emulate
                } else {
                    FuaMode::None
                }
            },
        )
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.query(Cb::CanMultiConn, to_bool, |n| n.can_multi_conn(), |_| false)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        self.query(
            Cb::CanCache,
            to_cache,
            |n| n.can_cache(),
            |c| {
                if c.has(Cb::Cache) {
                    CacheMode::Native
                } else {
                    CacheMode::None
                }
            },
        )
    }
    fn is_rotational(&self) -> Result<bool> {
        self.query(Cb::IsRotational, to_bool, |n| n.is_rotational(), |_| false)
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        self.query(Cb::BlockSize, to_block_size, |n| n.block_size(), |_| None)
    }
    fn export_description(&self) -> Result<Option<String>> {
        self.query(
            Cb::ExportDescription,
            to_desc,
            |n| n.export_description(),
            |_| None,
        )
    }

    fn prefers_owned_reads(&self) -> bool {
        true
    }
    fn sparse_reads(&self) -> bool {
        // A script's extents cost a call; a filter's pread must see every
        // read.
        let code = self.code();
        match &self.next {
            None => !code.has(Cb::Extents),
            Some(n) => !code.has(Cb::Extents) && !code.has(Cb::Pread) && n.sparse_reads(),
        }
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        let count = u32::try_from(buf.len()).map_err(|_| BackendError::inval("read too large"))?;
        let v = self.pread_owned(count, offset, flags)?;
        buf.copy_from_slice(&v);
        crate::backend::recycle(v);
        Ok(())
    }
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        let code = self.code();
        if !code.has(Cb::Pread) {
            return match &self.next {
                Some(n) => super::next::read_owned(&**n, count, offset, flags),
                None => Err(BackendError::io(format!(
                    "{}: the script does not define pread",
                    self.host.name
                ))),
            };
        }
        let name = &self.host.name;
        self.call_with(
            &code,
            Cb::Pread,
            None,
            [int(count as u64), int(offset), Dynamic::from(flags as INT)],
            |v| {
                let b = v.into_blob().map_err(|t| {
                    contract(
                        &code,
                        name,
                        Cb::Pread,
                        format!("returned {t}; expected a Blob of {count} bytes"),
                    )
                })?;
                if b.len() != count as usize {
                    return Err(contract(
                        &code,
                        name,
                        Cb::Pread,
                        format!(
                            "returned {} bytes for a read of {count} at offset {offset}; return exactly count bytes",
                            b.len()
                        ),
                    ));
                }
                // The Blob leaves the script (for the caller's budget, if any).
                memory::transfer(b.capacity(), memory::caller());
                Ok(b)
            },
        )
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        self.pwrite_owned(buf.to_vec(), offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        let code = self.code();
        if !code.has(Cb::Pwrite) {
            return match &self.next {
                Some(n) => n.pwrite_owned(buf, offset, flags),
                None => Err(BackendError::new(
                    Errno::Perm,
                    format!("{}: the script does not define pwrite", self.host.name),
                )),
            };
        }
        unit(self.call(
            &code,
            Cb::Pwrite,
            Some(buf),
            [int(offset), Dynamic::from(flags as INT)],
        ))
    }
    fn flush(&self, flags: u32) -> Result<()> {
        let code = self.code();
        if code.has(Cb::Flush) {
            return unit(self.call(&code, Cb::Flush, None, [Dynamic::from(flags as INT)]));
        }
        match &self.next {
            Some(n) => n.flush(flags),
            None => Ok(()),
        }
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        match (self.ranged(Cb::Trim, count, offset, flags), &self.next) {
            (Some(r), _) => unit(r),
            (None, Some(n)) => n.trim(count, offset, flags),
            (None, None) => Err(BackendError::new(
                Errno::NotSup,
                "the script does not define trim",
            )),
        }
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        match (self.ranged(Cb::Zero, count, offset, flags), &self.next) {
            (Some(r), _) => unit(r),
            (None, Some(n)) => n.zero(count, offset, flags),
            (None, None) => Err(BackendError::new(
                Errno::NotSup,
                "the script does not define zero",
            )),
        }
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let code = self.code();
        if code.has(Cb::Extents) {
            let name = &self.host.name;
            return self.call_with(
                &code,
                Cb::Extents,
                None,
                [int(count), int(offset), Dynamic::from(flags as INT)],
                |v| {
                    array_to_extents(v, count, offset)
                        .map_err(|m| contract(&code, name, Cb::Extents, m))
                },
            );
        }
        match &self.next {
            Some(n) => n.extents(count, offset, flags),
            None => {
                let mut e = Extents::new(offset, count);
                e.add(offset, count, extent_type::DATA)?;
                Ok(e)
            }
        }
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        match (self.ranged(Cb::Cache, count, offset, flags), &self.next) {
            (Some(r), _) => unit(r),
            (None, Some(n)) => n.cache(count, offset, flags),
            (None, None) => Ok(()),
        }
    }
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let code = self.code();
        if code.has(Cb::Close) {
            let _ = self.call(&code, Cb::Close, None, []);
        }
        if let Some(n) = &self.next {
            n.close()
        }
    }
}
