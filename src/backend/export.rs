//! `Export`: one opened chain as the server sees it. Caches what was
//! negotiated, checks every offset and length against the size, refuses
//! what was not advertised, and emulates what the top layer lacks as
//! nbdkit's server/backend.c does (zero by writing zeros, cache by
//! reading). FUA is passed down whenever it is advertised: a plugin
//! without native FUA gets its flush in the plugin layer, below every
//! filter (see `plugin_layer`).
//! Must not import tokio or rhai.

use super::chunks::{each_data_chunk, write_zeros};
use super::{
    budget, flags, Backend, BackendError, BlockSize, CacheMode, Errno, Extents, FuaMode, Result,
};
use std::sync::Arc;

/// What was negotiated for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    pub readonly: bool,
    pub can_flush: bool,
    pub can_trim: bool,
    /// WRITE_ZEROES is advertised (writable, and no layer hides it).
    pub send_write_zeroes: bool,
    /// The layer zeroes natively (otherwise WRITE_ZEROES is emulated).
    pub can_zero: bool,
    pub can_fast_zero: bool,
    pub can_extents: bool,
    pub fua: FuaMode,
    pub can_multi_conn: bool,
    pub cache: CacheMode,
    pub is_rotational: bool,
    pub block_size: Option<BlockSize>,
    pub description: Option<String>,
    pub blocking: bool,
    /// Some layer waits on I/O or a timer (see [`Backend::waits`]).
    pub waits: bool,
    /// The top layer makes owned read buffers (see
    /// [`Backend::prefers_owned_reads`]).
    pub owned_reads: bool,
    /// Every layer agrees that a big read's zero ranges may be answered
    /// with OFFSET_HOLE chunks from extents (see [`Backend::sparse_reads`]).
    pub sparse_reads: bool,
}

/// One connection's opened chain.
#[derive(Clone)]
pub struct Export {
    top: Arc<dyn Backend>,
    info: Arc<ExportInfo>,
}

fn check_range(size: u64, count: u64, offset: u64, errno: Errno, what: &str) -> Result<()> {
    match offset.checked_add(count) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::new(
            errno,
            format!("{what} of {count} bytes at offset {offset} is beyond the end of the export ({size} bytes)"),
        )),
    }
}

impl Export {
    /// Ask the top layer for its size and capabilities, once.
    pub fn negotiate(top: Arc<dyn Backend>, readonly: bool) -> Result<Export> {
        let size = top.get_size()?;
        if size > i64::MAX as u64 {
            return Err(BackendError::io(format!(
                "export size {size} is larger than the maximum 2^63-1"
            )));
        }
        let readonly = readonly || !top.can_write()?;
        let send_write_zeroes = !readonly && top.advertise_zero()?;
        let can_zero_native = send_write_zeroes && top.can_zero()?;
        let info = ExportInfo {
            size,
            readonly,
            can_flush: top.can_flush()?,
            can_trim: !readonly && top.can_trim()?,
            send_write_zeroes,
            can_zero: can_zero_native,
            can_fast_zero: send_write_zeroes && top.can_fast_zero()?,
            can_extents: top.can_extents()?,
            fua: if readonly {
                FuaMode::None
            } else {
                top.can_fua()?
            },
            can_multi_conn: top.can_multi_conn()?,
            cache: top.can_cache()?,
            is_rotational: top.is_rotational()?,
            block_size: top.block_size()?,
            description: top.export_description()?,
            blocking: top.is_blocking(),
            waits: top.waits(),
            owned_reads: top.prefers_owned_reads(),
            sparse_reads: top.sparse_reads(),
        };
        Ok(Export {
            top,
            info: Arc::new(info),
        })
    }

    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// True when calls should go to the worker pool.
    pub fn is_blocking(&self) -> bool {
        self.info.blocking
    }

    /// Some layer waits on I/O or a timer, so a connection's requests
    /// gain from overlapping (connection threads are added while all are
    /// busy); otherwise one thread runs them one after another.
    pub fn waits(&self) -> bool {
        self.info.waits
    }

    pub fn top(&self) -> &Arc<dyn Backend> {
        &self.top
    }

    /// The FUA flag for the top layer: passed whenever FUA is advertised,
    /// native or emulated, as nbdkit does (the layer that emulates it
    /// flushes: the plugin layer, or a filter that says `Emulate`).
    fn fua_flag(&self, fua: bool) -> u32 {
        if fua && self.info.fua != FuaMode::None {
            flags::FUA
        } else {
            0
        }
    }

    fn writable(&self, what: &str) -> Result<()> {
        if self.info.readonly {
            Err(BackendError::new(
                Errno::Perm,
                format!("{what} on a read-only export"),
            ))
        } else {
            Ok(())
        }
    }

    /// NBD_CMD_READ: exactly `count` bytes.
    pub fn read(&self, count: u32, offset: u64) -> Result<Vec<u8>> {
        check_range(self.info.size, count as u64, offset, Errno::Inval, "read")?;
        let buf = self.top.pread_owned(count, offset, 0)?;
        if buf.len() != count as usize {
            return Err(BackendError::io(format!(
                "pread returned {} bytes, expected {count}",
                buf.len()
            )));
        }
        Ok(buf)
    }

    /// NBD_CMD_READ into a caller's buffer (for cheap inline layers).
    pub fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(
            self.info.size,
            buf.len() as u64,
            offset,
            Errno::Inval,
            "read",
        )?;
        self.top.pread(buf, offset, 0)
    }

    /// NBD_CMD_WRITE.
    pub fn write(&self, buf: Vec<u8>, offset: u64, fua: bool) -> Result<()> {
        self.write_allowed(buf.len(), offset)?;
        self.top.pwrite_owned(buf, offset, self.fua_flag(fua))
    }

    /// NBD_CMD_WRITE from a borrowed buffer (a layer that wants to own
    /// the bytes copies them, as it would have to anyway).
    pub fn write_slice(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.write_allowed(buf.len(), offset)?;
        self.top.pwrite(buf, offset, self.fua_flag(fua))
    }

    /// A write of `len` bytes at `offset` is allowed: the export is
    /// writable and the range is inside it (ENOSPC past the end).
    fn write_allowed(&self, len: usize, offset: u64) -> Result<()> {
        self.writable("write")?;
        check_range(self.info.size, len as u64, offset, Errno::NoSpc, "write")
    }

    /// NBD_CMD_FLUSH.
    pub fn flush(&self) -> Result<()> {
        if !self.info.can_flush {
            return Ok(());
        }
        self.top.flush(0)
    }

    /// NBD_CMD_TRIM.
    pub fn trim(&self, count: u64, offset: u64, fua: bool) -> Result<()> {
        self.writable("trim")?;
        check_range(self.info.size, count, offset, Errno::Inval, "trim")?;
        if !self.info.can_trim {
            return Ok(());
        }
        let _b = budget::Budget::start();
        self.top.trim(count, offset, self.fua_flag(fua))
    }

    /// NBD_CMD_WRITE_ZEROES. `may_trim` is the inverse of NO_HOLE.
    pub fn zero(
        &self,
        count: u64,
        offset: u64,
        fua: bool,
        may_trim: bool,
        fast: bool,
    ) -> Result<()> {
        self.writable("write zeroes")?;
        if !self.info.send_write_zeroes {
            return Err(BackendError::new(
                Errno::Inval,
                "write zeroes was not advertised (nozero filter)",
            ));
        }
        check_range(self.info.size, count, offset, Errno::NoSpc, "write zeroes")?;
        if fast && !self.info.can_fast_zero {
            return Err(BackendError::new(
                Errno::NotSup,
                "fast zero is not supported",
            ));
        }
        let _b = budget::Budget::start();
        let mut f = self.fua_flag(fua);
        if may_trim {
            f |= flags::MAY_TRIM;
        }
        if fast {
            f |= flags::FAST_ZERO;
        }
        if self.info.can_zero {
            match self.top.zero(count, offset, f) {
                Ok(()) => return Ok(()),
                Err(e) if e.errno == Errno::NotSup && !fast => {}
                Err(e) => return Err(e),
            }
        } else if fast {
            return Err(BackendError::new(
                Errno::NotSup,
                "fast zero is not supported",
            ));
        }
        self.emulate_zero(count, offset, fua)
    }

    /// WRITE_ZEROES by `pwrite` of zeros (the top layer has no zero), as
    /// nbdkit's `backend_zero`: with native FUA every write carries it,
    /// with emulated FUA the last one does (the plugin layer flushes
    /// after it), so a filter sees writes with `fua=1` and no flush.
    /// Ranges the layer reports as reading zeros are skipped (if that
    /// leaves nothing to write, a FUA request still gets its flush).
    fn emulate_zero(&self, count: u64, offset: u64, fua: bool) -> Result<()> {
        const WHAT: &str = "write zeroes (emulated with pwrite: the plugin has no zero)";
        let (each, last) = match self.info.fua {
            FuaMode::Native if fua => (flags::FUA, flags::FUA),
            FuaMode::Emulate if fua => (0, flags::FUA),
            _ => (0, 0),
        };
        let wrote = write_zeros(
            &*self.top,
            self.info.can_extents,
            WHAT,
            count,
            offset,
            each,
            last,
        )?;
        if !wrote && fua && self.info.can_flush {
            self.top.flush(0)?;
        }
        Ok(())
    }

    /// NBD_CMD_BLOCK_STATUS for `base:allocation`. Always returns at least
    /// one extent starting at `offset`; with `req_one` exactly one.
    pub fn extents(&self, count: u64, offset: u64, req_one: bool) -> Result<Extents> {
        check_range(self.info.size, count, offset, Errno::Inval, "block status")?;
        if count == 0 {
            return Err(BackendError::inval("block status of zero length"));
        }
        let _b = budget::Budget::start();
        let mut e = if self.info.can_extents {
            let got = self
                .top
                .extents(count, offset, if req_one { flags::REQ_ONE } else { 0 })?;
            // Re-clip whatever the layer returned to the request window.
            let mut e = Extents::new(offset, count);
            for x in got.as_slice() {
                e.add(x.offset, x.length, x.typ)?;
            }
            e
        } else {
            Extents::new(offset, count)
        };
        if e.is_empty() {
            if self.info.can_extents {
                return Err(BackendError::io(
                    "extents returned no extent for the request",
                ));
            }
            e.add(offset, count, super::extent_type::DATA)?;
        }
        if req_one && e.len() > 1 {
            let first = e.as_slice()[0];
            let mut one = Extents::new(offset, count);
            one.add(first.offset, first.length, first.typ)?;
            return Ok(one);
        }
        Ok(e)
    }

    /// NBD_CMD_CACHE.
    pub fn cache(&self, count: u64, offset: u64) -> Result<()> {
        check_range(self.info.size, count, offset, Errno::Inval, "cache")?;
        let _b = budget::Budget::start();
        match self.info.cache {
            CacheMode::None => Ok(()),
            CacheMode::Native => self.top.cache(count, offset, 0),
            CacheMode::Emulate => {
                // Read and discard, skipping what reads as zeros.
                each_data_chunk(
                    &*self.top,
                    self.info.can_extents,
                    "cache (emulated by reading)",
                    count,
                    offset,
                    |pos, n| self.top.pread_owned(n as u32, pos, 0).map(drop),
                )
            }
        }
    }

    /// Connection end.
    pub fn close(&self) {
        self.top.close()
    }
}

#[cfg(test)]
mod tests;
