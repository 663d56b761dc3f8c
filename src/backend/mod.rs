//! The backend chain: the `Plugin` and `Filter` traits, the per-connection
//! `Backend` layer they open, capabilities, extents and `BackendError`.
//! May use `protocol::Errno` only: no tokio, no sockets, no rhai.
//!
//! A [`Plugin`] is process-wide; `open` gives a per-connection [`Backend`].
//! A [`Filter`] is process-wide too; its `open` receives the already-opened
//! layer below it (`next`) and returns a `Backend` that wraps it. Every
//! `Backend` method has a default: a layer that returns its `next()` passes
//! the call through, a layer without `next` (a plugin) gets nbdkit's default.
//! The [`Stack`] opens the whole chain (the plugin wrapped in the plugin
//! layer, which emulates FUA and zero below every filter, as nbdkit), and
//! [`Export`] is what the server talks to: negotiated capabilities,
//! bounds checks and the emulation nbdkit does at the top.

pub mod budget;
mod chunks;
pub mod debug;
mod error;
mod export;
mod extents;
mod plugin_layer;
pub mod shutdown;
mod stack;

pub use crate::protocol::Errno;
pub use error::{BackendError, Result};
pub use export::{Export, ExportInfo};
pub use extents::{Extent, Extents};
pub use stack::Stack;

use std::sync::Arc;

/// Request flags as plugins see them (nbdkit's values).
pub mod flags {
    /// Force unit access: the write is durable when the call returns.
    pub const FUA: u32 = 1 << 0;
    /// `zero` may punch a hole instead of writing zeros.
    pub const MAY_TRIM: u32 = 1 << 1;
    /// `zero` must fail with ENOTSUP unless it is faster than writing.
    pub const FAST_ZERO: u32 = 1 << 2;
    /// `extents` need return only one extent.
    pub const REQ_ONE: u32 = 1 << 3;
}

/// Extent types (`base:allocation` bits).
pub mod extent_type {
    /// Allocated data.
    pub const DATA: u32 = 0;
    /// Not allocated (a hole).
    pub const HOLE: u32 = 1 << 0;
    /// Reads as zeros.
    pub const ZERO: u32 = 1 << 1;
}

/// How a layer handles FUA (nbdkit's `can_fua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuaMode {
    /// FUA is not advertised.
    None,
    /// The flag still comes down through the filters; the plugin layer
    /// takes it off and flushes after the write.
    Emulate,
    /// The flag is passed to the layer.
    Native,
}

/// How a layer handles NBD_CMD_CACHE (nbdkit's `can_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// NBD_CMD_CACHE is not advertised.
    None,
    /// The server reads and discards.
    Emulate,
    /// `cache` is called.
    Native,
}

/// Block-size constraints advertised with NBD_INFO_BLOCK_SIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// The smallest block a request should address (a power of two).
    pub minimum: u32,
    /// The block size requests are best aligned to.
    pub preferred: u32,
    /// The largest request the export takes.
    pub maximum: u32,
}

/// How calls into a layer may be scheduled by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadModel {
    /// One request at a time in the whole process.
    SerializeAllRequests,
    /// One request at a time per connection.
    SerializeRequests,
    /// Any number at once.
    Parallel,
}

/// A process-wide plugin: the bottom of the chain.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name (`memory`, `file`, a script's path, ...).
    fn name(&self) -> String;
    /// Open a per-connection view.
    fn open(&self, readonly: bool, export_name: &str) -> Result<Arc<dyn Backend>>;
    /// Export names for NBD_OPT_LIST: `(name, description)`.
    fn list_exports(&self) -> Vec<(String, String)> {
        vec![(String::new(), String::new())]
    }
    /// `key=value` lines for `--dump-plugin`.
    fn dump(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Who is at the other end of a connection, as a filter's `preconnect`
/// sees it (nbdkit's `nbdkit_peer_name` and `nbdkit_peer_pid/uid/gid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client (IPv4-mapped IPv6 addresses given as IPv4).
    Tcp(std::net::SocketAddr),
    /// A Unix socket client (`-U`, or `-s` over a socketpair), with its
    /// credentials (SO_PEERCRED) and security label (SO_PEERSEC) when the
    /// kernel gives them.
    Unix {
        pid: Option<i32>,
        uid: Option<u32>,
        gid: Option<u32>,
        security: Option<String>,
    },
    /// Not a socket (`-s` over pipes), or its address is unknown.
    Unknown,
}

/// A process-wide filter: wraps the layer below it.
pub trait Filter: Send + Sync + 'static {
    fn name(&self) -> String;
    /// A client connected, before the handshake (nbdkit's `preconnect`):
    /// an error closes the connection at once.
    fn preconnect(&self, peer: &Peer, readonly: bool) -> Result<()> {
        let _ = (peer, readonly);
        Ok(())
    }
    /// Open a per-connection view over `next` (already opened).
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>>;
    /// [`Filter::open`], told the export name the client asked for and
    /// whether the connection uses TLS (what nbdkit's `open` is given).
    /// The default calls `open`.
    fn open_export(
        &self,
        next: Arc<dyn Backend>,
        readonly: bool,
        export_name: &str,
        tls: bool,
    ) -> Result<Arc<dyn Backend>> {
        let _ = (export_name, tls);
        self.open(next, readonly)
    }
    /// `key=value` lines for `--dump-plugin`.
    fn dump(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

macro_rules! pass {
    ($self:ident, $call:ident ( $($arg:expr),* ), $default:expr) => {
        match $self.next() {
            Some(n) => n.$call($($arg),*),
            None => $default,
        }
    };
}

/// The capability methods of a layer that can do everything natively and
/// share its data across connections (RAM disks, null, cow): writable,
/// flush, trim, zero and fast zero, extents, native FUA and cache,
/// multi-conn. Use inside `impl Backend for ...`.
macro_rules! all_capabilities {
    () => {
        fn can_write(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_flush(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_trim(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_zero(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_fast_zero(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_extents(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_fua(&self) -> $crate::backend::Result<$crate::backend::FuaMode> {
            Ok($crate::backend::FuaMode::Native)
        }
        fn can_multi_conn(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn can_cache(&self) -> $crate::backend::Result<$crate::backend::CacheMode> {
            Ok($crate::backend::CacheMode::Native)
        }
    };
}
pub(crate) use all_capabilities;

/// The methods a read-only plugin over a remote source shares (http,
/// torrent): blocking calls, no writes (`pwrite` is EPERM naming the
/// plugin), no FUA, and multi-conn, since every connection sees the same
/// bytes. Use inside `impl Backend for ...`; `can_cache` stays the
/// plugin's own.
macro_rules! read_only_source {
    ($name:literal) => {
        fn is_blocking(&self) -> bool {
            true
        }
        fn can_write(&self) -> $crate::backend::Result<bool> {
            Ok(false)
        }
        fn can_fua(&self) -> $crate::backend::Result<$crate::backend::FuaMode> {
            Ok($crate::backend::FuaMode::None)
        }
        fn can_multi_conn(&self) -> $crate::backend::Result<bool> {
            Ok(true)
        }
        fn pwrite(&self, _buf: &[u8], _offset: u64, _flags: u32) -> $crate::backend::Result<()> {
            Err($crate::backend::BackendError::new(
                $crate::backend::Errno::Perm,
                concat!($name, ": this plugin is read-only"),
            ))
        }
    };
}
pub(crate) use read_only_source;

/// EINVAL unless `[offset, offset+count)` lies within `size` bytes: the
/// guard a plugin that serves a remote source puts before a read.
pub fn check_read(layer: &str, count: u64, offset: u64, size: u64) -> Result<()> {
    match offset.checked_add(count) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::new(
            Errno::Inval,
            format!("{layer}: read at {offset}+{count} beyond the end"),
        )),
    }
}

thread_local! {
    /// The read buffer this thread gave back last (see [`recycle`]).
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `count` bytes for a read that overwrites all of them: the
/// one this thread last recycled when it fits (no allocation, no
/// zero-fill, no fresh pages from the kernel), else a new one. It fits
/// when it holds `count` bytes and at most twice that: a buffer handed to
/// a script is charged by its length, so a small read never carries a
/// large read's memory with it (the large one is kept for the next).
pub fn read_buffer(count: usize) -> Vec<u8> {
    take_spare(count).unwrap_or_else(|| vec![0u8; count])
}

/// The buffer [`read_buffer`] would reuse, `count` bytes long, or None
/// when it would allocate: for a caller that must know which (a script
/// host charges a reused buffer to the running call, which the allocator
/// did not see made).
pub fn take_spare(count: usize) -> Option<Vec<u8>> {
    let mut v = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if v.capacity() < count {
        return None;
    }
    if v.capacity() > count.saturating_mul(2) {
        SPARE.with(|s| *s.borrow_mut() = v);
        return None;
    }
    if v.len() >= count {
        v.truncate(count);
    } else {
        v.resize(count, 0);
    }
    Some(v)
}

/// Give a read's buffer back once its data is sent, for the next
/// [`read_buffer`] on this thread. Buffers over 4 MiB are freed.
pub fn recycle(v: Vec<u8>) {
    if v.capacity() <= 4 << 20 {
        SPARE.with(|s| *s.borrow_mut() = v);
    }
}

/// One connection's view of a layer (plugin or filter). Offsets and counts
/// reaching these methods have been checked against the size by [`Export`].
pub trait Backend: Send + Sync + 'static {
    /// The layer below, for filters: methods not overridden call it.
    fn next(&self) -> Option<&dyn Backend> {
        None
    }

    /// True when calls may block or run long (files, scripts, compression):
    /// the server runs them on a worker pool instead of inline.
    fn is_blocking(&self) -> bool {
        pass!(self, is_blocking(), false)
    }
    /// True when a blocking layer's calls wait on something outside the
    /// CPU (a disk, the network, a timer): the server adds connection
    /// threads while all are busy (up to `--threads`), so one connection's
    /// requests overlap. False for layers that only compute (scripts,
    /// compression): each connection runs on one thread, one request after
    /// another (with a helper for big requests). A plugin waits when it is
    /// blocking unless it says otherwise; a filter when the layer below
    /// does.
    fn waits(&self) -> bool {
        pass!(self, waits(), self.is_blocking())
    }
    fn thread_model(&self) -> ThreadModel {
        pass!(self, thread_model(), ThreadModel::Parallel)
    }

    fn get_size(&self) -> Result<u64> {
        pass!(
            self,
            get_size(),
            Err(BackendError::new(Errno::Io, "this layer has no get_size"))
        )
    }

    fn can_write(&self) -> Result<bool> {
        pass!(self, can_write(), Ok(false))
    }
    fn can_flush(&self) -> Result<bool> {
        pass!(self, can_flush(), Ok(false))
    }
    fn can_trim(&self) -> Result<bool> {
        pass!(self, can_trim(), Ok(false))
    }
    /// False means WRITE_ZEROES is emulated with `pwrite`.
    fn can_zero(&self) -> Result<bool> {
        pass!(self, can_zero(), Ok(false))
    }
    /// False hides WRITE_ZEROES from clients altogether (nbdkit's
    /// `NBDKIT_ZERO_NONE`, the nozero filter's default): they write
    /// zeros themselves. `can_zero` then does not matter.
    fn advertise_zero(&self) -> Result<bool> {
        pass!(self, advertise_zero(), Ok(true))
    }
    /// A plugin's default is nbdkit's: fast zero is advertised when
    /// `zero` is not native (`can_zero` false), since the server then
    /// fails every fast-zero request at once with ENOTSUP instead of
    /// emulating it with `pwrite`; a native `zero` may not honour
    /// [`flags::FAST_ZERO`], so it says so itself.
    fn can_fast_zero(&self) -> Result<bool> {
        pass!(self, can_fast_zero(), Ok(!self.can_zero()?))
    }
    fn can_extents(&self) -> Result<bool> {
        pass!(self, can_extents(), Ok(false))
    }
    fn can_fua(&self) -> Result<FuaMode> {
        pass!(self, can_fua(), Ok(FuaMode::None))
    }
    fn can_multi_conn(&self) -> Result<bool> {
        pass!(self, can_multi_conn(), Ok(false))
    }
    fn can_cache(&self) -> Result<CacheMode> {
        pass!(self, can_cache(), Ok(CacheMode::None))
    }
    fn is_rotational(&self) -> Result<bool> {
        pass!(self, is_rotational(), Ok(false))
    }
    fn block_size(&self) -> Result<Option<BlockSize>> {
        pass!(self, block_size(), Ok(None))
    }
    fn export_description(&self) -> Result<Option<String>> {
        pass!(self, export_description(), Ok(None))
    }

    /// Fill all of `buf` from `offset`.
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        pass!(
            self,
            pread(buf, offset, flags),
            Err(BackendError::new(Errno::Io, "this layer has no pread"))
        )
    }

    /// True when the server may answer the zero ranges of a big read with
    /// OFFSET_HOLE chunks from this layer's extents, without calling
    /// `pread` for them. A read must be a read to every layer, so a filter
    /// says no unless it declares that skipping its `pread` over zeros
    /// changes nothing it does (no error injected, no delay, no log line,
    /// nothing cached) and the layer below agrees: such a filter overrides
    /// this with `self.next.sparse_reads()`. A plugin says yes unless its
    /// extents cost about as much as a read (a script's `extents`), since
    /// a zero range reads as zeros anyway. OFFSET_HOLE replies are
    /// optional: `false` only costs bandwidth.
    fn sparse_reads(&self) -> bool {
        self.next().is_none()
    }

    /// True when `pread_owned` makes its buffer anyway (scripts return a
    /// Blob): the server then asks for it rather than for a copy. A hint;
    /// both calls give the same bytes.
    fn prefers_owned_reads(&self) -> bool {
        pass!(self, prefers_owned_reads(), false)
    }

    /// Like `pread`, but returns an owned buffer of exactly `count` bytes.
    /// Layers that produce owned buffers (scripts) override this to avoid a
    /// copy; the server calls this one.
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        let mut buf = read_buffer(count as usize);
        self.pread(&mut buf, offset, flags)?;
        Ok(buf)
    }

    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        pass!(
            self,
            pwrite(buf, offset, flags),
            Err(BackendError::new(Errno::Perm, "this export is read-only"))
        )
    }

    /// Like `pwrite`, taking ownership of the buffer (scripts avoid a copy).
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        self.pwrite(&buf, offset, flags)
    }

    fn flush(&self, flags: u32) -> Result<()> {
        pass!(self, flush(flags), Ok(()))
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        pass!(
            self,
            trim(count, offset, flags),
            Err(BackendError::new(Errno::NotSup, "trim is not supported"))
        )
    }
    /// Write zeros. ENOTSUP (without FAST_ZERO) makes the server fall back to
    /// writing a zero buffer.
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        pass!(
            self,
            zero(count, offset, flags),
            Err(BackendError::new(Errno::NotSup, "zero is not supported"))
        )
    }
    /// Describe `[offset, offset+count)`. Extents must be ascending and
    /// contiguous from `offset`; they may stop early but must cover at
    /// least one byte.
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        pass!(self, extents(count, offset, flags), {
            let _ = flags;
            let mut e = Extents::new(offset, count);
            e.add(offset, count, extent_type::DATA)?;
            Ok(e)
        })
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        pass!(self, cache(count, offset, flags), Ok(()))
    }

    /// Called once when the connection ends; filters must pass it on.
    fn close(&self) {
        if let Some(n) = self.next() {
            n.close()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{read_buffer, recycle};

    #[test]
    fn read_buffers_are_reused_on_the_same_thread() {
        recycle(vec![7u8; 100]);
        let v = read_buffer(50);
        assert_eq!(v.len(), 50);
        assert!(v.capacity() >= 100, "the recycled buffer was not reused");
        recycle(v);
        let w = read_buffer(80); // grows within the capacity, old bytes kept
        assert_eq!(w.len(), 80);
        assert!(w.capacity() >= 100);
        let big = read_buffer(1000); // nothing recycled: a new zeroed one
        assert_eq!(big.len(), 1000);
        assert!(big.iter().all(|&b| b == 0));
        recycle(vec![0u8; 5 << 20]); // too big to keep
        assert_eq!(read_buffer(10).capacity(), 10);
    }

    #[test]
    fn a_small_read_never_gets_a_large_recycled_buffer() {
        recycle(vec![7u8; 1 << 20]);
        let small = read_buffer(4096);
        assert_eq!(small.len(), 4096);
        assert!(small.capacity() < 8192, "a 1 MiB buffer for a 4 KiB read");
        assert!(small.iter().all(|&b| b == 0));
        // The large one is still there for the next large read.
        let large = read_buffer(1 << 20);
        assert_eq!(large.len(), 1 << 20);
        assert_eq!(large[0], 7, "the recycled 1 MiB buffer was not kept");
    }
}
