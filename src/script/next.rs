//! `Next`, the value a filter script's callbacks receive first: its
//! methods call the layer below and raise catchable errors carrying the
//! errno (`#{errno, message}`). Offsets a script passes to `next` are
//! checked against the lower layer's size. Only `src/script/` may import
//! rhai.

use super::host::extents_to_array;
use super::raise::{raise, raise_backend, RResult};
use crate::backend::{Backend, CacheMode, Errno, FuaMode};
use rhai::{Array, Blob, Dynamic, Engine, INT};
use std::sync::{Arc, OnceLock};

/// `count` bytes at `offset` from a layer, in a buffer charged to the
/// script call running on this thread, if any: a script below hands its
/// Blob over with its budget (`prefers_owned_reads`); any other layer
/// reads into a charged buffer, which may be one the server recycled.
pub(super) fn read_owned(
    b: &dyn Backend,
    count: u32,
    offset: u64,
    flags: u32,
) -> crate::backend::Result<Vec<u8>> {
    if b.prefers_owned_reads() {
        return b.pread_owned(count, offset, flags);
    }
    // Every byte is overwritten by the read.
    let mut buf = super::memory::read_buffer(count as usize);
    b.pread(&mut buf, offset, flags)?;
    Ok(buf)
}

/// The layer below a filter, as a script value. One `Arc`, so the clone
/// each call makes (`next` is an argument) is one refcount increment.
#[derive(Clone)]
pub struct Next(Arc<NextInner>);

pub struct NextInner {
    inner: Arc<dyn Backend>,
    size: OnceLock<u64>,
}

impl std::ops::Deref for Next {
    type Target = NextInner;
    fn deref(&self) -> &NextInner {
        &self.0
    }
}

impl Next {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Next(Arc::new(NextInner {
            inner,
            size: OnceLock::new(),
        }))
    }

    fn size(&self) -> RResult<u64> {
        if let Some(s) = self.size.get() {
            return Ok(*s);
        }
        let s = self.inner.get_size().map_err(raise_backend)?;
        let _ = self.size.set(s);
        Ok(s)
    }

    /// Check a request the script makes against the lower layer's size.
    fn range(&self, count: INT, offset: INT, errno: Errno, what: &str) -> RResult<(u64, u64)> {
        let size = self.size()?;
        let (Ok(c), Ok(o)) = (u64::try_from(count), u64::try_from(offset)) else {
            return Err(raise(
                Errno::Inval,
                format!("next.{what}: negative count {count} or offset {offset}"),
            ));
        };
        match o.checked_add(c) {
            Some(end) if end <= size => Ok((c, o)),
            _ => Err(raise(
                errno,
                format!("next.{what}: {c} bytes at offset {o} is beyond the end of the layer below ({size} bytes)"),
            )),
        }
    }

    fn pread(&mut self, count: INT, offset: INT, flags: INT) -> RResult<Blob> {
        let (c, o) = self.range(count, offset, Errno::Inval, "pread")?;
        let c = u32::try_from(c)
            .map_err(|_| raise(Errno::Inval, format!("next.pread: {c} bytes is too large")))?;
        read_owned(&*self.inner, c, o, flags as u32).map_err(raise_backend)
    }
    fn pwrite(&mut self, buf: Blob, offset: INT, flags: INT) -> RResult<()> {
        let (_, o) = self.range(buf.len() as INT, offset, Errno::NoSpc, "pwrite")?;
        self.inner
            .pwrite_owned(buf, o, flags as u32)
            .map_err(raise_backend)
    }
    fn trim(&mut self, count: INT, offset: INT, flags: INT) -> RResult<()> {
        let (c, o) = self.range(count, offset, Errno::Inval, "trim")?;
        self.inner.trim(c, o, flags as u32).map_err(raise_backend)
    }
    fn zero(&mut self, count: INT, offset: INT, flags: INT) -> RResult<()> {
        let (c, o) = self.range(count, offset, Errno::NoSpc, "zero")?;
        self.inner.zero(c, o, flags as u32).map_err(raise_backend)
    }
    fn cache(&mut self, count: INT, offset: INT, flags: INT) -> RResult<()> {
        let (c, o) = self.range(count, offset, Errno::Inval, "cache")?;
        self.inner.cache(c, o, flags as u32).map_err(raise_backend)
    }
    fn extents(&mut self, count: INT, offset: INT, flags: INT) -> RResult<Array> {
        let (c, o) = self.range(count, offset, Errno::Inval, "extents")?;
        if c == 0 {
            return Ok(Array::new());
        }
        let e = self
            .inner
            .extents(c, o, flags as u32)
            .map_err(raise_backend)?;
        Ok(extents_to_array(&e))
    }
}

fn fua_name(m: FuaMode) -> &'static str {
    match m {
        FuaMode::None => "none",
        FuaMode::Emulate => "emulate",
        FuaMode::Native => "native",
    }
}

fn cache_name(m: CacheMode) -> &'static str {
    match m {
        CacheMode::None => "none",
        CacheMode::Emulate => "emulate",
        CacheMode::Native => "native",
    }
}

macro_rules! ranged {
    ($e:ident, $name:literal, $m:ident, $t:ty) => {
        $e.register_fn($name, |n: &mut Next, c: INT, o: INT| -> RResult<$t> {
            n.$m(c, o, 0)
        });
        $e.register_fn(
            $name,
            |n: &mut Next, c: INT, o: INT, f: INT| -> RResult<$t> { n.$m(c, o, f) },
        );
    };
}

macro_rules! query {
    ($e:ident, $($name:ident),*) => {
        $( $e.register_fn(stringify!($name), |n: &mut Next| -> RResult<bool> {
            n.inner.$name().map_err(raise_backend)
        }); )*
    };
}

/// Register `Next` and its methods.
pub fn register(e: &mut Engine) {
    e.register_type_with_name::<Next>("Next");
    e.register_fn("get_size", |n: &mut Next| -> RResult<INT> {
        n.size().map(|s| s as INT)
    });
    ranged!(e, "pread", pread, Blob);
    ranged!(e, "trim", trim, ());
    ranged!(e, "zero", zero, ());
    ranged!(e, "cache", cache, ());
    ranged!(e, "extents", extents, Array);
    e.register_fn("pwrite", |n: &mut Next, b: Blob, o: INT| n.pwrite(b, o, 0));
    e.register_fn("pwrite", |n: &mut Next, b: Blob, o: INT, f: INT| {
        n.pwrite(b, o, f)
    });
    e.register_fn("flush", |n: &mut Next| -> RResult<()> {
        n.inner.flush(0).map_err(raise_backend)
    });
    e.register_fn("flush", |n: &mut Next, f: INT| -> RResult<()> {
        n.inner.flush(f as u32).map_err(raise_backend)
    });
    query!(
        e,
        can_write,
        can_flush,
        can_trim,
        can_zero,
        can_fast_zero,
        can_extents,
        can_multi_conn,
        is_rotational
    );
    e.register_fn("can_fua", |n: &mut Next| -> RResult<String> {
        n.inner
            .can_fua()
            .map(|m| fua_name(m).to_string())
            .map_err(raise_backend)
    });
    e.register_fn("can_cache", |n: &mut Next| -> RResult<String> {
        n.inner
            .can_cache()
            .map(|m| cache_name(m).to_string())
            .map_err(raise_backend)
    });
    e.register_fn("block_size", |n: &mut Next| -> RResult<Dynamic> {
        Ok(match n.inner.block_size().map_err(raise_backend)? {
            Some(b) => Dynamic::from_array(vec![
                Dynamic::from(b.minimum as INT),
                Dynamic::from(b.preferred as INT),
                Dynamic::from(b.maximum as INT),
            ]),
            None => Dynamic::UNIT,
        })
    });
    e.register_fn("export_description", |n: &mut Next| -> RResult<Dynamic> {
        Ok(match n.inner.export_description().map_err(raise_backend)? {
            Some(s) => Dynamic::from(s),
            None => Dynamic::UNIT,
        })
    });
}
