//! The public API: write a block device in Rust and serve it over NBD.
//! A [`Plugin`] serves the bytes (the verbs `get_size`, `pread`, `pwrite`,
//! `flush`, `trim`, `zero`, `extents`, `cache`), declares what it can do
//! in one [`Capabilities`] value and how its calls behave in one
//! [`Behaviour`]; a [`Filter`] sits between the client and the plugin and
//! passes what it does not change to the layer below ([`Next`]). A
//! [`Server`] serves a plugin (with filters, native or built-in by name)
//! on a Unix socket, a TCP port, or to a captive command.
//! The traits are adapted onto the internal `Backend` (`adapter`).

mod adapter;
mod builder;
mod next;

pub use crate::backend::{
    extent_type, flags, BackendError as Error, BlockSize, CacheMode, Extent, FuaMode,
};
pub use crate::protocol::Errno;
pub use builder::{Running, Server};
pub use next::Next;

/// The result of every call: an NBD error ([`Error`]) on failure.
pub type Result<T> = std::result::Result<T, Error>;

/// What a layer can do, asked once per connection after `open`. The
/// default is a read-only export that only reads (no flush, trim, zero,
/// extents, FUA, cache, multi-conn).
///
/// ```
/// use nbdscript::Capabilities;
/// let rw = Capabilities { write: true, flush: true, ..Capabilities::default() };
/// assert!(rw.write && !rw.trim);
/// assert!(Capabilities::all().multi_conn);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes are possible (`pwrite`; otherwise the export is read-only).
    pub write: bool,
    /// `flush` does something (NBD_CMD_FLUSH is advertised).
    pub flush: bool,
    /// `trim` discards (NBD_CMD_TRIM is advertised).
    pub trim: bool,
    /// `zero` is native; otherwise WRITE_ZEROES is emulated with `pwrite`.
    pub zero: bool,
    /// `zero` honours [`flags::FAST_ZERO`] (fails with ENOTSUP when slow).
    /// Without a native `zero` fast zero is advertised whatever this says,
    /// as in nbdkit: the server fails each fast-zero request with ENOTSUP
    /// at once rather than emulating it with `pwrite`.
    pub fast_zero: bool,
    /// `extents` describes holes and zeros (NBD_CMD_BLOCK_STATUS).
    pub extents: bool,
    /// How FUA (force unit access) is handled.
    pub fua: FuaMode,
    /// Every connection sees the same data (NBD_FLAG_CAN_MULTI_CONN).
    pub multi_conn: bool,
    /// How NBD_CMD_CACHE is handled.
    pub cache: CacheMode,
    /// The device is rotational (a hint for clients' I/O schedulers).
    pub rotational: bool,
    /// Block-size constraints sent with NBD_INFO_BLOCK_SIZE.
    pub block_size: Option<BlockSize>,
    /// A description sent with NBD_INFO_DESCRIPTION.
    pub description: Option<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            write: false,
            flush: false,
            trim: false,
            zero: false,
            fast_zero: false,
            extents: false,
            fua: FuaMode::None,
            multi_conn: false,
            cache: CacheMode::None,
            rotational: false,
            block_size: None,
            description: None,
        }
    }
}

impl Capabilities {
    /// Everything natively (a RAM disk): write, flush, trim, zero and fast
    /// zero, extents, native FUA and cache, multi-conn.
    pub fn all() -> Capabilities {
        Capabilities {
            write: true,
            flush: true,
            trim: true,
            zero: true,
            fast_zero: true,
            extents: true,
            fua: FuaMode::Native,
            multi_conn: true,
            cache: CacheMode::Native,
            ..Capabilities::default()
        }
    }
}

/// How a layer's calls behave, so the server schedules them well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Calls only compute (copy memory, compress, generate): each
    /// connection runs its requests one after another on one thread (with
    /// a helper for big requests).
    #[default]
    Compute,
    /// Calls wait on something outside the CPU (a disk, the network, a
    /// timer): the server adds threads while all are busy, so one
    /// connection's requests overlap (up to [`Server::threads`]).
    WaitsOnIo,
}

/// A block device: the bottom layer. Only `get_size` and `pread` are
/// required; every other verb has the default a read-only device wants,
/// and is only called when [`Capabilities`] says so.
///
/// Calls come from several threads at once (the trait is `Sync`); offsets
/// and lengths have been checked against the size before they arrive.
///
/// ```
/// use nbdscript::{Plugin, Result};
///
/// /// 1 MiB of 0xAA, read-only.
/// struct Pattern;
///
/// impl Plugin for Pattern {
///     type Handle = ();
///     fn open(&self, _readonly: bool, _export_name: &str) -> Result<()> {
///         Ok(())
///     }
///     fn get_size(&self, _h: &()) -> Result<u64> {
///         Ok(1 << 20)
///     }
///     fn pread(&self, _h: &(), buf: &mut [u8], _offset: u64, _flags: u32) -> Result<()> {
///         buf.fill(0xAA);
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Send + Sync + 'static {
    /// Per-connection state made by `open` (`()` when there is none).
    type Handle: Send + Sync + 'static;

    /// The name in logs and `--dump-plugin`.
    fn name(&self) -> &str {
        "plugin"
    }
    /// How calls behave (see [`Behaviour`]).
    fn behaviour(&self) -> Behaviour {
        Behaviour::Compute
    }
    /// A client connected (asking for `export_name`; `readonly` when the
    /// server or the client wants no writes).
    fn open(&self, readonly: bool, export_name: &str) -> Result<Self::Handle>;
    /// The connection ended.
    fn close(&self, _h: &Self::Handle) {}
    /// The size in bytes.
    fn get_size(&self, h: &Self::Handle) -> Result<u64>;
    /// What this connection can do.
    fn capabilities(&self, _h: &Self::Handle) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }
    /// Fill all of `buf` with the bytes at `offset`.
    fn pread(&self, h: &Self::Handle, buf: &mut [u8], offset: u64, flags: u32) -> Result<()>;
    /// Write `buf` at `offset` ([`flags::FUA`] with native FUA).
    fn pwrite(&self, _h: &Self::Handle, _buf: &[u8], _offset: u64, _flags: u32) -> Result<()> {
        Err(Error::new(Errno::Perm, "this export is read-only"))
    }
    /// Make written data durable.
    fn flush(&self, _h: &Self::Handle, _flags: u32) -> Result<()> {
        Ok(())
    }
    /// Discard `count` bytes at `offset` (they may read as anything after).
    fn trim(&self, _h: &Self::Handle, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(Error::new(Errno::NotSup, "trim is not supported"))
    }
    /// Make `count` bytes at `offset` read as zeros ([`flags::MAY_TRIM`],
    /// [`flags::FAST_ZERO`], [`flags::FUA`]). ENOTSUP without FAST_ZERO
    /// makes the server write zeros with `pwrite` instead.
    fn zero(&self, _h: &Self::Handle, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(Error::new(Errno::NotSup, "zero is not supported"))
    }
    /// Describe `[offset, offset+count)`: ascending, contiguous extents
    /// from `offset` ([`extent_type`] bits); they may stop early but must
    /// cover at least one byte, and with [`flags::REQ_ONE`] one is enough.
    fn extents(
        &self,
        _h: &Self::Handle,
        count: u64,
        offset: u64,
        _flags: u32,
    ) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            length: count,
            typ: extent_type::DATA,
        }])
    }
    /// Prefetch `count` bytes at `offset` (with [`CacheMode::Native`]).
    fn cache(&self, _h: &Self::Handle, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

/// A layer between the client and the plugin. Every verb has a default
/// that passes the call to the layer below unchanged, so a filter
/// implements only what it changes.
///
/// ```
/// use nbdscript::{Filter, Next, Result};
///
/// /// Hides the first 512 bytes of the disk below.
/// struct SkipFirstSector;
///
/// impl Filter for SkipFirstSector {
///     type Handle = ();
///     fn open(&self, _next: &Next, _readonly: bool) -> Result<()> {
///         Ok(())
///     }
///     fn get_size(&self, next: &Next, _h: &()) -> Result<u64> {
///         Ok(next.get_size()?.saturating_sub(512))
///     }
///     fn pread(&self, next: &Next, _h: &(), buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
///         next.pread(buf, offset + 512, flags)
///     }
/// }
/// ```
pub trait Filter: Send + Sync + 'static {
    /// Per-connection state made by `open` (`()` when there is none).
    type Handle: Send + Sync + 'static;

    /// The name in logs and `--dump-plugin`.
    fn name(&self) -> &str {
        "filter"
    }
    /// How this filter's own work behaves: [`Behaviour::WaitsOnIo`] when
    /// it waits (sleeps, does I/O); otherwise the layer below decides.
    fn behaviour(&self) -> Behaviour {
        Behaviour::Compute
    }
    /// A client connected; `next` is the layer below, already open.
    fn open(&self, next: &Next, readonly: bool) -> Result<Self::Handle>;
    /// The connection ended (the layer below is closed after this).
    fn close(&self, _h: &Self::Handle) {}
    /// The size in bytes.
    fn get_size(&self, next: &Next, _h: &Self::Handle) -> Result<u64> {
        next.get_size()
    }
    /// What this connection can do.
    fn capabilities(&self, next: &Next, _h: &Self::Handle) -> Result<Capabilities> {
        next.capabilities()
    }
    /// Fill all of `buf` with the bytes at `offset`.
    fn pread(
        &self,
        next: &Next,
        _h: &Self::Handle,
        buf: &mut [u8],
        offset: u64,
        flags: u32,
    ) -> Result<()> {
        next.pread(buf, offset, flags)
    }
    /// Write `buf` at `offset`.
    fn pwrite(
        &self,
        next: &Next,
        _h: &Self::Handle,
        buf: &[u8],
        offset: u64,
        flags: u32,
    ) -> Result<()> {
        next.pwrite(buf, offset, flags)
    }
    /// Make written data durable.
    fn flush(&self, next: &Next, _h: &Self::Handle, flags: u32) -> Result<()> {
        next.flush(flags)
    }
    /// Discard `count` bytes at `offset`.
    fn trim(
        &self,
        next: &Next,
        _h: &Self::Handle,
        count: u64,
        offset: u64,
        flags: u32,
    ) -> Result<()> {
        next.trim(count, offset, flags)
    }
    /// Make `count` bytes at `offset` read as zeros.
    fn zero(
        &self,
        next: &Next,
        _h: &Self::Handle,
        count: u64,
        offset: u64,
        flags: u32,
    ) -> Result<()> {
        next.zero(count, offset, flags)
    }
    /// Describe `[offset, offset+count)` (see [`Plugin::extents`]).
    fn extents(
        &self,
        next: &Next,
        _h: &Self::Handle,
        count: u64,
        offset: u64,
        flags: u32,
    ) -> Result<Vec<Extent>> {
        next.extents(count, offset, flags)
    }
    /// Prefetch `count` bytes at `offset`.
    fn cache(
        &self,
        next: &Next,
        _h: &Self::Handle,
        count: u64,
        offset: u64,
        flags: u32,
    ) -> Result<()> {
        next.cache(count, offset, flags)
    }
}

#[cfg(test)]
mod tests;
