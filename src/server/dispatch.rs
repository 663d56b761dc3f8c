//! One request: validate it against what was negotiated, run it on the
//! export and build the reply frames (one plan per READ). Synchronous: no
//! tokio here.

use super::redact::for_client;
use crate::backend::{BackendError, Errno, Export};
use crate::protocol::consts::*;
use crate::protocol::transmission as tx;
use crate::protocol::{ReplyMode, Request};
use bytes::BytesMut;
use tracing::debug;

/// What a connection negotiated.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub mode: ReplyMode,
    pub base_allocation: bool,
    pub flags: u16,
}

impl ConnInfo {
    pub fn of(neg: &super::negotiate::Negotiated) -> ConnInfo {
        ConnInfo {
            mode: neg.mode,
            base_allocation: neg.base_allocation,
            flags: neg.flags,
        }
    }
}

/// A WRITE's payload: its own buffer (a payload that was still arriving
/// is received straight into it), or a slice of the connection's receive
/// buffer when it had all arrived (no allocation, no copy).
pub enum Payload {
    Owned(Vec<u8>),
    Shared(bytes::Bytes),
}

/// The frames of a reply given without reaching the export.
pub struct Reply {
    pub head: BytesMut,
}

/// Reads at least this large may be answered with OFFSET_HOLE chunks.
const SPARSE_READ_MIN: u32 = 64 * 1024;
/// Most extents sent in one BLOCK_STATUS chunk.
const MAX_EXTENTS: usize = 1 << 20;

fn fail(errno: Errno, msg: impl Into<String>) -> BackendError {
    BackendError::new(errno, msg)
}

/// Check a request header before its payload is used. Errors become an
/// error reply; the connection goes on.
pub fn validate(req: &Request, ci: &ConnInfo) -> Result<(), BackendError> {
    let ext = ci.mode == ReplyMode::Extended;
    // As nbdkit: writes on a read-only export are EPERM whatever else is
    // wrong with them, and FUA is accepted only when advertised.
    if ci.flags & FLAG_READ_ONLY != 0 && matches!(req.typ, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM)
    {
        return Err(fail(Errno::Perm, "write request on a read-only export"));
    }
    let mut allowed = if ci.flags & FLAG_SEND_FUA != 0 {
        CMD_FLAG_FUA
    } else {
        0
    };
    match req.typ {
        CMD_READ => {
            if ci.mode != ReplyMode::Simple {
                allowed |= CMD_FLAG_DF;
            }
            if req.length == 0 {
                return Err(fail(Errno::Inval, "read of zero length"));
            }
            if req.length > MAX_REQUEST_SIZE {
                return Err(fail(
                    Errno::Inval,
                    format!(
                        "read of {} bytes is over the maximum {MAX_REQUEST_SIZE}",
                        req.length
                    ),
                ));
            }
        }
        CMD_WRITE => {
            if req.length > MAX_REQUEST_SIZE {
                return Err(fail(
                    Errno::Inval,
                    format!(
                        "write of {} bytes is over the maximum {MAX_REQUEST_SIZE}",
                        req.length
                    ),
                ));
            }
        }
        CMD_WRITE_ZEROES => {
            allowed |= CMD_FLAG_NO_HOLE;
            if ci.flags & FLAG_SEND_FAST_ZERO != 0 {
                allowed |= CMD_FLAG_FAST_ZERO;
            }
        }
        CMD_BLOCK_STATUS => {
            allowed |= CMD_FLAG_REQ_ONE;
            if !ci.base_allocation {
                return Err(fail(
                    Errno::Inval,
                    "block status without a negotiated meta context",
                ));
            }
        }
        CMD_FLUSH | CMD_DISC => {
            // The spec: offset and length MUST be 0 (nbdkit: EINVAL).
            if req.offset != 0 || req.length != 0 {
                return Err(fail(Errno::Inval, "flush with a nonzero offset or length"));
            }
        }
        CMD_TRIM | CMD_CACHE => {}
        other => return Err(fail(Errno::Inval, format!("unknown command {other}"))),
    }
    // Zero-length data commands are out of range, as in nbdkit.
    if req.length == 0 && matches!(req.typ, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM | CMD_CACHE) {
        let errno = if matches!(req.typ, CMD_WRITE | CMD_WRITE_ZEROES) {
            Errno::NoSpc
        } else {
            Errno::Inval
        };
        return Err(fail(errno, "request of zero length"));
    }
    // PAYLOAD_LEN is meaningful only on WRITE (its payload is consumed by
    // the caller either way).
    if ext && req.typ == CMD_WRITE {
        allowed |= CMD_FLAG_PAYLOAD_LEN;
    }
    if req.flags & !allowed != 0 {
        return Err(fail(
            Errno::Inval,
            format!(
                "flags {:#x} not valid for command {}",
                req.flags & !allowed,
                req.typ
            ),
        ));
    }
    if !ext && req.typ != CMD_WRITE && req.typ != CMD_READ && req.length > u32::MAX as u64 {
        return Err(fail(Errno::Inval, "length too large"));
    }
    // A command the export did not advertise is refused, as nbdkit does
    // (EINVAL, its words), never run as a no-op.
    let (needs, cmd, what) = match req.typ {
        CMD_FLUSH => (FLAG_SEND_FLUSH, "NBD_CMD_FLUSH", "flush"),
        CMD_TRIM => (FLAG_SEND_TRIM, "NBD_CMD_TRIM", "trim"),
        CMD_WRITE_ZEROES => (FLAG_SEND_WRITE_ZEROES, "NBD_CMD_WRITE_ZEROES", "write zeroes"),
        CMD_CACHE => (FLAG_SEND_CACHE, "NBD_CMD_CACHE", "cache"),
        _ => return Ok(()),
    };
    if ci.flags & needs == 0 {
        return Err(fail(
            Errno::Inval,
            format!("{cmd}: {what} operation not supported"),
        ));
    }
    Ok(())
}

/// The reply a request gets without reaching the export, once its payload
/// (if any) has been taken: `valid` is what [`validate`] said, `payload`
/// is `None` when a WRITE's data was discarded (too large or invalid).
pub fn refusal(
    req: &Request,
    valid: Result<(), BackendError>,
    payload: &Option<Payload>,
    ci: &ConnInfo,
) -> Option<Reply> {
    if let Err(e) = valid {
        return Some(error_reply(req, ci, &e));
    }
    if req.typ == CMD_WRITE && payload.is_none() && req.length > 0 {
        let e = BackendError::new(Errno::Inval, "write payload too large");
        return Some(error_reply(req, ci, &e));
    }
    None
}

/// Build the error reply for a request.
pub fn error_reply(req: &Request, ci: &ConnInfo, e: &BackendError) -> Reply {
    let mut head = BytesMut::with_capacity(64);
    error_into(&mut head, req, ci, e);
    Reply { head }
}

/// Append the error reply for a request; the text the client sees has no
/// server-side paths.
fn error_into(out: &mut BytesMut, req: &Request, ci: &ConnInfo, e: &BackendError) {
    debug!(cookie = req.cookie, cmd = req.typ, "request failed: {e}");
    tx::error_reply(
        out,
        ci.mode,
        req.cookie,
        req.offset,
        e.errno.wire(),
        &for_client(&e.message),
    );
}

/// Run a validated request, appending its reply to `out`; a large read's
/// data is returned instead, to be written after `out` without a copy.
/// `big` is a buffer the caller hands back after writing a large read (no
/// allocation, no page faults per request).
pub fn execute_into(
    export: &Export,
    req: &Request,
    payload: Option<Payload>,
    ci: &ConnInfo,
    out: &mut BytesMut,
    big: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let r = match req.typ {
        CMD_READ => return read(export, req, ci, out, big),
        CMD_BLOCK_STATUS => {
            block_status(export, req, ci, out);
            return None;
        }
        CMD_WRITE => match payload {
            Some(Payload::Shared(b)) => export.write_slice(&b, req.offset, fua),
            Some(Payload::Owned(v)) => export.write(v, req.offset, fua),
            None => export.write(Vec::new(), req.offset, fua),
        },
        CMD_FLUSH => export.flush(),
        CMD_TRIM => export.trim(req.length, req.offset, fua),
        CMD_WRITE_ZEROES => export.zero(
            req.length,
            req.offset,
            fua,
            req.flags & CMD_FLAG_NO_HOLE == 0,
            req.flags & CMD_FLAG_FAST_ZERO != 0,
        ),
        CMD_CACHE => export.cache(req.length, req.offset),
        _ => Err(fail(Errno::Inval, "unknown command")),
    };
    match r {
        Ok(()) => tx::ok_reply(out, ci.mode, req.cookie, req.offset),
        Err(e) => error_into(out, req, ci, &e),
    }
    None
}

/// The data chunk header (or simple reply) for a read answered whole.
fn data_header(out: &mut BytesMut, req: &Request, ci: &ConnInfo) {
    match ci.mode {
        ReplyMode::Simple => tx::simple_reply(out, req.cookie, 0),
        m => tx::offset_data_header(out, m, req.cookie, req.offset, req.offset, req.length, true),
    }
}

/// The one read plan: holes as OFFSET_HOLE chunks when the client allows
/// it and the range has any; else small reads straight into `out` (or,
/// from a layer with buffers of its own, its buffer appended and
/// recycled); large ones into an owned buffer (the plugin's own, or
/// `big`) returned to be written without a copy.
fn read(
    export: &Export,
    req: &Request,
    ci: &ConnInfo,
    out: &mut BytesMut,
    big: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let info = export.info();
    let large = req.length >= SPARSE_READ_MIN as u64;
    if large
        && ci.mode != ReplyMode::Simple
        && req.flags & CMD_FLAG_DF == 0
        && info.sparse_reads
        && info.can_extents
        && sparse_read(export, req, ci, out)
    {
        return None;
    }
    if !large && info.owned_reads {
        // The layer hands over its own buffer: append it (no zero-fill of
        // `out` first) and give it back for the next read on this thread.
        match export.read(req.length as u32, req.offset) {
            Ok(v) => {
                data_header(out, req, ci);
                out.extend_from_slice(&v);
                crate::backend::recycle(v);
            }
            Err(e) => error_into(out, req, ci, &e),
        }
        return None;
    }
    if !large {
        let start = out.len();
        data_header(out, req, ci);
        let data_at = out.len();
        out.resize(data_at + req.length as usize, 0);
        if let Err(e) = export.read_into(&mut out[data_at..], req.offset) {
            out.truncate(start);
            error_into(out, req, ci, &e);
        }
        return None;
    }
    let count = req.length as usize;
    let r = if info.owned_reads {
        export.read(req.length as u32, req.offset)
    } else {
        let mut v = if big.capacity() >= count {
            let mut v = std::mem::take(big);
            if v.len() >= count {
                v.truncate(count); // every byte is overwritten by the read
            } else {
                v.resize(count, 0);
            }
            v
        } else {
            crate::backend::read_buffer(count)
        };
        match export.read_into(&mut v, req.offset) {
            Ok(()) => Ok(v),
            Err(e) => {
                *big = v;
                Err(e)
            }
        }
    };
    match r {
        Ok(v) => {
            data_header(out, req, ci);
            Some(v)
        }
        Err(e) => {
            error_into(out, req, ci, &e);
            None
        }
    }
}

/// A read answered with OFFSET_HOLE chunks for zero ranges, appended to
/// `out`. False when the range is all data (the caller reads it whole) or
/// extents failed.
fn sparse_read(export: &Export, req: &Request, ci: &ConnInfo, out: &mut BytesMut) -> bool {
    let Ok(ext) = export.extents(req.length, req.offset, false) else {
        return false;
    };
    let list = ext.as_slice();
    let zero = crate::backend::extent_type::ZERO;
    if list.iter().all(|e| e.typ & zero == 0) {
        return false;
    }
    let end = req.offset + req.length;
    // Make the extents cover the whole request (the last may stop early).
    let mut parts: Vec<(u64, u64, bool)> = list
        .iter()
        .map(|e| (e.offset, e.length, e.typ & zero != 0))
        .collect();
    let covered = list
        .last()
        .map(|e| e.offset + e.length)
        .unwrap_or(req.offset);
    if covered < end {
        parts.push((covered, end - covered, false));
    }
    let start = out.len();
    let head = out;
    let n = parts.len();
    for (i, (off, len, is_zero)) in parts.into_iter().enumerate() {
        let done = i + 1 == n;
        if is_zero {
            tx::offset_hole(head, ci.mode, req.cookie, req.offset, off, len as u32, done);
        } else {
            match export.read(len as u32, off) {
                Ok(d) => {
                    tx::offset_data_header(head, ci.mode, req.cookie, req.offset, off, len, done);
                    head.extend_from_slice(&d);
                }
                Err(e) => {
                    // Chunks already built are dropped: one error reply.
                    head.truncate(start);
                    error_into(head, req, ci, &e);
                    return true;
                }
            }
        }
    }
    true
}

fn block_status(export: &Export, req: &Request, ci: &ConnInfo, out: &mut BytesMut) {
    let req_one = req.flags & CMD_FLAG_REQ_ONE != 0;
    match export.extents(req.length, req.offset, req_one) {
        Ok(e) => {
            let cap = if ci.mode == ReplyMode::Extended {
                u64::MAX
            } else {
                u32::MAX as u64 & !511
            };
            let list: Vec<(u64, u32)> = e
                .as_slice()
                .iter()
                .take(MAX_EXTENTS)
                .map(|x| (x.length.min(cap), x.typ))
                .collect();
            tx::block_status(
                out,
                ci.mode,
                req.cookie,
                req.offset,
                BASE_ALLOCATION_ID,
                &list,
            );
        }
        Err(e) => error_into(out, req, ci, &e),
    }
}

#[cfg(test)]
mod tests;
