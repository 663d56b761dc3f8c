//! One request: validate it against what was negotiated, run it on the
//! export (inline or on a worker thread, the caller decides) and build the
//! reply frames. Synchronous: no tokio here.

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

/// Reply frames: `head`, then `data` (a read buffer sent without copying).
pub struct Reply {
    pub head: BytesMut,
    pub data: Option<Vec<u8>>,
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
    Ok(())
}

/// The reply a request gets without reaching the export, once its payload
/// (if any) has been taken: `valid` is what [`validate`] said, `payload`
/// is `None` when a WRITE's data was discarded (too large or invalid).
pub fn refusal(
    req: &Request,
    valid: Result<(), BackendError>,
    payload: &Option<Vec<u8>>,
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
    debug!(cookie = req.cookie, cmd = req.typ, "request failed: {e}");
    let mut head = BytesMut::with_capacity(64);
    tx::error_reply(
        &mut head,
        ci.mode,
        req.cookie,
        req.offset,
        e.errno.wire(),
        &e.message,
    );
    Reply { head, data: None }
}

fn ok_reply(req: &Request, ci: &ConnInfo) -> Reply {
    let mut head = BytesMut::with_capacity(32);
    tx::ok_reply(&mut head, ci.mode, req.cookie, req.offset);
    Reply { head, data: None }
}

/// Run a validated request. `payload` is the WRITE data.
pub fn execute(export: &Export, req: &Request, payload: Option<Vec<u8>>, ci: &ConnInfo) -> Reply {
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let r = match req.typ {
        CMD_READ => return read(export, req, ci),
        CMD_WRITE => export.write(payload.unwrap_or_default(), req.offset, fua),
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
        CMD_BLOCK_STATUS => return block_status(export, req, ci),
        _ => Err(fail(Errno::Inval, "unknown command")),
    };
    match r {
        Ok(()) => ok_reply(req, ci),
        Err(e) => error_reply(req, ci, &e),
    }
}

/// Run a validated request, appending the reply to `out`; a large read's
/// data is returned instead, to be written without a copy. Small reads go
/// straight into `out`: no buffer of their own, no copy. Large reads use
/// `big`, a buffer the caller hands back after writing it (no allocation,
/// no page faults per request).
pub fn execute_into(
    export: &Export,
    req: &Request,
    payload: Option<Vec<u8>>,
    ci: &ConnInfo,
    out: &mut BytesMut,
    big: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    if req.typ == CMD_READ && req.length >= SPARSE_READ_MIN as u64 {
        let df = req.flags & CMD_FLAG_DF != 0;
        if ci.mode != ReplyMode::Simple
            && !df
            && export.info().sparse_reads
            && export.info().can_extents
        {
            if let Some(r) = sparse_read(export, req, ci) {
                out.extend_from_slice(&r.head);
                return None;
            }
        }
        if export.info().owned_reads {
            let rep = plain_read(export, req, ci);
            out.extend_from_slice(&rep.head);
            return rep.data;
        }
        let count = req.length as usize;
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
        return match export.read_into(&mut v, req.offset) {
            Ok(()) => {
                match ci.mode {
                    ReplyMode::Simple => tx::simple_reply(out, req.cookie, 0),
                    m => tx::offset_data_header(
                        out, m, req.cookie, req.offset, req.offset, req.length, true,
                    ),
                }
                Some(v)
            }
            Err(e) => {
                *big = v;
                out.extend_from_slice(&error_reply(req, ci, &e).head);
                None
            }
        };
    }
    if req.typ == CMD_READ && req.length < SPARSE_READ_MIN as u64 {
        let start = out.len();
        match ci.mode {
            ReplyMode::Simple => tx::simple_reply(out, req.cookie, 0),
            m => {
                tx::offset_data_header(out, m, req.cookie, req.offset, req.offset, req.length, true)
            }
        }
        let data_at = out.len();
        out.resize(data_at + req.length as usize, 0);
        if let Err(e) = export.read_into(&mut out[data_at..], req.offset) {
            out.truncate(start);
            out.extend_from_slice(&error_reply(req, ci, &e).head);
        }
        return None;
    }
    let rep = execute(export, req, payload, ci);
    out.extend_from_slice(&rep.head);
    rep.data
}

fn read(export: &Export, req: &Request, ci: &ConnInfo) -> Reply {
    let count = req.length as u32;
    let df = req.flags & CMD_FLAG_DF != 0;
    if ci.mode != ReplyMode::Simple
        && !df
        && count >= SPARSE_READ_MIN
        && export.info().sparse_reads
        && export.info().can_extents
    {
        if let Some(r) = sparse_read(export, req, ci) {
            return r;
        }
    }
    plain_read(export, req, ci)
}

/// A read answered with one data chunk, from an owned buffer.
fn plain_read(export: &Export, req: &Request, ci: &ConnInfo) -> Reply {
    let count = req.length as u32;
    match export.read(count, req.offset) {
        Ok(data) => {
            let mut head = BytesMut::with_capacity(40);
            match ci.mode {
                ReplyMode::Simple => tx::simple_reply(&mut head, req.cookie, 0),
                m => tx::offset_data_header(
                    &mut head,
                    m,
                    req.cookie,
                    req.offset,
                    req.offset,
                    count as u64,
                    true,
                ),
            }
            Reply {
                head,
                data: Some(data),
            }
        }
        Err(e) => error_reply(req, ci, &e),
    }
}

/// A read answered with OFFSET_HOLE chunks for zero ranges. `None` when
/// the range is all data (the caller does a plain read) or extents failed.
fn sparse_read(export: &Export, req: &Request, ci: &ConnInfo) -> Option<Reply> {
    let ext = export.extents(req.length, req.offset, false).ok()?;
    let list = ext.as_slice();
    let zero = crate::backend::extent_type::ZERO;
    if list.iter().all(|e| e.typ & zero == 0) {
        return None;
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
    let mut head = BytesMut::with_capacity(64 + req.length as usize / 2);
    let n = parts.len();
    for (i, (off, len, is_zero)) in parts.into_iter().enumerate() {
        let done = i + 1 == n;
        if is_zero {
            tx::offset_hole(
                &mut head, ci.mode, req.cookie, req.offset, off, len as u32, done,
            );
        } else {
            match export.read(len as u32, off) {
                Ok(d) => {
                    tx::offset_data_header(
                        &mut head, ci.mode, req.cookie, req.offset, off, len, done,
                    );
                    head.extend_from_slice(&d);
                }
                Err(e) => {
                    tx::error_reply(
                        &mut head,
                        ci.mode,
                        req.cookie,
                        req.offset,
                        e.errno.wire(),
                        &e.message,
                    );
                    return Some(Reply { head, data: None });
                }
            }
        }
    }
    Some(Reply { head, data: None })
}

fn block_status(export: &Export, req: &Request, ci: &ConnInfo) -> Reply {
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
            let mut head = BytesMut::with_capacity(32 + list.len() * 16);
            tx::block_status(
                &mut head,
                ci.mode,
                req.cookie,
                req.offset,
                BASE_ALLOCATION_ID,
                &list,
            );
            Reply { head, data: None }
        }
        Err(e) => error_reply(req, ci, &e),
    }
}
