//! Transmission frames: request headers (compact and extended) and the
//! replies (simple, structured and extended chunks).
//! Pure: no tokio, no sockets. Framing is check → parse → advance.

use super::consts::*;
use super::handshake::ProtocolError;
use bytes::{Buf, BufMut, BytesMut};

/// One request header, as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub typ: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u64,
}

impl Request {
    /// Bytes of payload that follow this header on the wire.
    /// Compact WRITE always carries `length` bytes; with extended headers
    /// WRITE carries them too (qemu 10 omits PAYLOAD_LEN and is accepted),
    /// and other commands only with PAYLOAD_LEN.
    pub fn payload_len(&self, extended: bool) -> u64 {
        if self.typ == CMD_WRITE || (extended && self.flags & CMD_FLAG_PAYLOAD_LEN != 0) {
            self.length
        } else {
            0
        }
    }
}

/// Parse one request header if the buffer holds it; the payload is not
/// consumed. A bad magic is a protocol violation (the connection closes).
pub fn parse_request(buf: &mut BytesMut, extended: bool) -> Result<Option<Request>, ProtocolError> {
    let hlen = if extended { 32 } else { 28 };
    if buf.len() < hlen {
        return Ok(None);
    }
    // Fields read from one slice, then one advance: each `get_*` on a
    // BytesMut is an advance of its own (about 35 instructions each).
    let h = &buf[..hlen];
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let be64 = |at: usize| (be32(at) as u64) << 32 | be32(at + 4) as u64;
    let magic = be32(0);
    let want = if extended {
        EXTENDED_REQUEST_MAGIC
    } else {
        REQUEST_MAGIC
    };
    if magic != want {
        return Err(ProtocolError(format!(
            "bad request magic {magic:#010x} (expected {want:#010x})"
        )));
    }
    let req = Request {
        flags: be16(4),
        typ: be16(6),
        cookie: be64(8),
        offset: be64(16),
        length: if extended {
            be64(24)
        } else {
            be32(24) as u64
        },
    };
    buf.advance(hlen);
    Ok(Some(req))
}

/// How replies are framed on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    Simple,
    Structured,
    Extended,
}

/// Append a simple reply header.
pub fn simple_reply(out: &mut BytesMut, cookie: u64, error: u32) {
    out.put_u32(SIMPLE_REPLY_MAGIC);
    out.put_u32(error);
    out.put_u64(cookie);
}

/// Append a structured (or extended) chunk header for `len` payload bytes.
pub fn chunk_header(
    out: &mut BytesMut,
    mode: ReplyMode,
    flags: u16,
    typ: u16,
    cookie: u64,
    offset: u64,
    len: u64,
) {
    // Built whole, then one append (each `put_*` is a reserve and a
    // length update of its own).
    let mut h = [0u8; 32];
    let magic = if mode == ReplyMode::Extended {
        EXTENDED_REPLY_MAGIC
    } else {
        STRUCTURED_REPLY_MAGIC
    };
    h[0..4].copy_from_slice(&magic.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&typ.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    let n = if mode == ReplyMode::Extended {
        h[16..24].copy_from_slice(&offset.to_be_bytes());
        h[24..32].copy_from_slice(&len.to_be_bytes());
        32
    } else {
        h[16..20].copy_from_slice(&(len as u32).to_be_bytes());
        20
    };
    out.extend_from_slice(&h[..n]);
}

/// A successful reply with no data: simple, or a NONE chunk with DONE.
pub fn ok_reply(out: &mut BytesMut, mode: ReplyMode, cookie: u64, offset: u64) {
    match mode {
        ReplyMode::Simple => simple_reply(out, cookie, 0),
        _ => chunk_header(
            out,
            mode,
            REPLY_FLAG_DONE,
            REPLY_TYPE_NONE,
            cookie,
            offset,
            0,
        ),
    }
}

/// An error reply: simple, or an ERROR chunk with DONE carrying `msg`.
pub fn error_reply(
    out: &mut BytesMut,
    mode: ReplyMode,
    cookie: u64,
    offset: u64,
    errno: u32,
    msg: &str,
) {
    match mode {
        ReplyMode::Simple => simple_reply(out, cookie, errno),
        _ => {
            let m = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
            chunk_header(
                out,
                mode,
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                cookie,
                offset,
                6 + m.len() as u64,
            );
            out.put_u32(errno);
            out.put_u16(m.len() as u16);
            out.put_slice(m);
        }
    }
}

/// Header of an OFFSET_DATA chunk carrying `len` bytes at `offset` (the
/// data itself follows). `done` marks the last chunk.
pub fn offset_data_header(
    out: &mut BytesMut,
    mode: ReplyMode,
    cookie: u64,
    req_offset: u64,
    offset: u64,
    len: u64,
    done: bool,
) {
    let f = if done { REPLY_FLAG_DONE } else { 0 };
    chunk_header(
        out,
        mode,
        f,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        req_offset,
        8 + len,
    );
    out.put_u64(offset);
}

/// An OFFSET_HOLE chunk.
pub fn offset_hole(
    out: &mut BytesMut,
    mode: ReplyMode,
    cookie: u64,
    req_offset: u64,
    offset: u64,
    len: u32,
    done: bool,
) {
    let f = if done { REPLY_FLAG_DONE } else { 0 };
    chunk_header(out, mode, f, REPLY_TYPE_OFFSET_HOLE, cookie, req_offset, 12);
    out.put_u64(offset);
    out.put_u32(len);
}

/// A BLOCK_STATUS (or BLOCK_STATUS_EXT) chunk with DONE: `(length, flags)`
/// descriptors for context `id`.
pub fn block_status(
    out: &mut BytesMut,
    mode: ReplyMode,
    cookie: u64,
    req_offset: u64,
    id: u32,
    extents: &[(u64, u32)],
) {
    if mode == ReplyMode::Extended {
        chunk_header(
            out,
            mode,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS_EXT,
            cookie,
            req_offset,
            8 + 16 * extents.len() as u64,
        );
        out.put_u32(id);
        out.put_u32(extents.len() as u32);
        for &(l, f) in extents {
            out.put_u64(l);
            out.put_u64(f as u64);
        }
    } else {
        chunk_header(
            out,
            mode,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            cookie,
            req_offset,
            4 + 8 * extents.len() as u64,
        );
        out.put_u32(id);
        for &(l, f) in extents {
            out.put_u32(l as u32);
            out.put_u32(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_bytes(magic: u32, flags: u16, typ: u16, cookie: u64, off: u64, len: u32) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(magic);
        b.put_u16(flags);
        b.put_u16(typ);
        b.put_u64(cookie);
        b.put_u64(off);
        b.put_u32(len);
        b
    }

    #[test]
    fn compact_request() {
        let mut b = req_bytes(REQUEST_MAGIC, 1, CMD_WRITE, 7, 4096, 512);
        b.put_slice(b"payload");
        let r = parse_request(&mut b, false).unwrap().unwrap();
        assert_eq!(
            r,
            Request {
                flags: 1,
                typ: CMD_WRITE,
                cookie: 7,
                offset: 4096,
                length: 512
            }
        );
        assert_eq!(r.payload_len(false), 512);
        assert_eq!(&b[..], b"payload");
    }

    #[test]
    fn partial_and_bad_requests() {
        let full = req_bytes(REQUEST_MAGIC, 0, CMD_READ, 1, 0, 1);
        for cut in 0..28 {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(parse_request(&mut b, false), Ok(None), "cut {cut}");
        }
        let mut bad = req_bytes(0xdeadbeef, 0, CMD_READ, 1, 0, 1);
        assert!(parse_request(&mut bad, false).is_err());
        // Extended magic on a compact connection is a violation.
        let mut ext = req_bytes(EXTENDED_REQUEST_MAGIC, 0, CMD_READ, 1, 0, 1);
        assert!(parse_request(&mut ext, false).is_err());
    }

    #[test]
    fn extended_request() {
        let mut b = BytesMut::new();
        b.put_u32(EXTENDED_REQUEST_MAGIC);
        b.put_u16(0);
        b.put_u16(CMD_BLOCK_STATUS);
        b.put_u64(9);
        b.put_u64(u64::MAX - 5);
        b.put_u64(1 << 40);
        let r = parse_request(&mut b, true).unwrap().unwrap();
        assert_eq!(r.length, 1 << 40);
        assert_eq!(r.offset, u64::MAX - 5);
        assert_eq!(r.payload_len(true), 0);
        let w = Request {
            flags: CMD_FLAG_PAYLOAD_LEN,
            typ: CMD_BLOCK_STATUS,
            cookie: 0,
            offset: 0,
            length: 16,
        };
        assert_eq!(w.payload_len(true), 16);
        assert_eq!(w.payload_len(false), 0);
    }

    #[test]
    fn reply_layouts() {
        let mut o = BytesMut::new();
        simple_reply(&mut o, 0x1122334455667788, 22);
        assert_eq!(
            &o[..],
            &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        let mut s = BytesMut::new();
        error_reply(&mut s, ReplyMode::Structured, 1, 0, 5, "bad");
        assert_eq!(s.len(), 20 + 6 + 3);
        assert_eq!(&s[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&s[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
        assert_eq!(&s[16..20], &9u32.to_be_bytes());
        let mut e = BytesMut::new();
        block_status(&mut e, ReplyMode::Extended, 1, 0, 1, &[(1 << 33, 3)]);
        assert_eq!(e.len(), 32 + 8 + 16);
        let mut h = BytesMut::new();
        offset_hole(&mut h, ReplyMode::Structured, 1, 0, 4096, 512, true);
        assert_eq!(h.len(), 20 + 12);
    }
}
