//! Handshake frames: the greeting, option requests and their payloads
//! (GO/INFO, meta-context queries), and option replies.
//! Pure: no tokio, no sockets. Framing is check → parse → advance.

use super::consts::*;
use bytes::{Buf, BufMut, BytesMut};
use std::fmt;

/// A malformed frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Every global handshake flag the server supports.
pub const GLOBAL_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

/// The 18-byte server greeting advertising `gflags` (the supported global
/// flags, less those `--mask-handshake` masks off).
pub fn greeting(gflags: u16) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&(gflags & GLOBAL_FLAGS).to_be_bytes());
    b
}

/// Check the client's 4-byte flags against the global flags the server
/// advertised: a client may only set what was offered (nbdkit's rule).
pub fn parse_client_flags(flags: u32, gflags: u16) -> Result<ClientFlags, ProtocolError> {
    let offered = (gflags & GLOBAL_FLAGS) as u32;
    if flags & !offered != 0 {
        return Err(perr(format!(
            "client requested unexpected flags {flags:#x} (offered {offered:#x})"
        )));
    }
    Ok(ClientFlags {
        fixed_newstyle: flags & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: flags & FLAG_C_NO_ZEROES != 0,
    })
}

/// What the client's flags asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// Options other than EXPORT_NAME may be sent.
    pub fixed_newstyle: bool,
    /// EXPORT_NAME's reply leaves out the 124 zero bytes.
    pub no_zeroes: bool,
}

/// An option request header: `(option, payload length)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

/// Parse a 16-byte option header if the buffer holds one.
pub fn parse_option_header(buf: &mut BytesMut) -> Result<Option<OptionHeader>, ProtocolError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let magic = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
    if magic != IHAVEOPT {
        return Err(perr(format!(
            "bad option magic {magic:#x} (expected IHAVEOPT)"
        )));
    }
    buf.advance(8);
    let option = buf.get_u32();
    let len = buf.get_u32();
    Ok(Some(OptionHeader { option, len }))
}

fn take_string(p: &mut &[u8], len: usize, what: &str) -> Result<String, ProtocolError> {
    if p.len() < len {
        return Err(perr(format!("{what} runs past the end of the option")));
    }
    if len > MAX_STRING {
        return Err(perr(format!("{what} is longer than {MAX_STRING} bytes")));
    }
    let s = std::str::from_utf8(&p[..len])
        .map_err(|_| perr(format!("{what} is not UTF-8")))?
        .to_string();
    if s.contains('\0') {
        return Err(perr(format!("{what} contains NUL")));
    }
    p.advance(len);
    Ok(s)
}

/// The payload of NBD_OPT_GO / NBD_OPT_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRequest {
    pub name: String,
    pub info: Vec<u16>,
}

pub fn parse_go(mut p: &[u8]) -> Result<GoRequest, ProtocolError> {
    if p.len() < 4 {
        return Err(perr("GO/INFO payload shorter than 4 bytes"));
    }
    let nlen = p.get_u32() as usize;
    let name = take_string(&mut p, nlen, "export name")?;
    if p.len() < 2 {
        return Err(perr("GO/INFO payload lacks the info request count"));
    }
    let n = p.get_u16() as usize;
    if p.len() != n * 2 {
        return Err(perr(format!(
            "GO/INFO payload has {} bytes for {n} info requests",
            p.len()
        )));
    }
    let info = (0..n).map(|_| p.get_u16()).collect();
    Ok(GoRequest { name, info })
}

/// The payload of LIST_META_CONTEXT / SET_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub name: String,
    pub queries: Vec<String>,
}

pub fn parse_meta(mut p: &[u8]) -> Result<MetaRequest, ProtocolError> {
    if p.len() < 4 {
        return Err(perr("meta context payload shorter than 4 bytes"));
    }
    let nlen = p.get_u32() as usize;
    let name = take_string(&mut p, nlen, "export name")?;
    if p.len() < 4 {
        return Err(perr("meta context payload lacks the query count"));
    }
    let nq = p.get_u32() as usize;
    let mut queries = Vec::new();
    for _ in 0..nq {
        if p.len() < 4 {
            return Err(perr("meta context query runs past the end"));
        }
        let l = p.get_u32() as usize;
        queries.push(take_string(&mut p, l, "meta context query")?);
    }
    if !p.is_empty() {
        return Err(perr("trailing bytes after meta context queries"));
    }
    Ok(MetaRequest { name, queries })
}

/// Does `query` select `base:allocation`? In LIST_META_CONTEXT (`list`),
/// `base:` is a wildcard for every `base:` context; in SET it is ignored.
pub fn query_matches_base_allocation(query: &str, list: bool) -> bool {
    query == BASE_ALLOCATION || (list && (query == "base:"))
}

/// Append an option reply.
pub fn option_reply(out: &mut BytesMut, option: u32, reply: u32, data: &[u8]) {
    out.reserve(20 + data.len());
    out.put_u64(OPT_REPLY_MAGIC);
    out.put_u32(option);
    out.put_u32(reply);
    out.put_u32(data.len() as u32);
    out.put_slice(data);
}

/// An error reply carrying a message.
pub fn option_error(out: &mut BytesMut, option: u32, reply: u32, msg: &str) {
    let m = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    option_reply(out, option, reply, m);
}

pub fn info_export(out: &mut BytesMut, option: u32, size: u64, flags: u16) {
    let mut d = Vec::with_capacity(12);
    d.put_u16(INFO_EXPORT);
    d.put_u64(size);
    d.put_u16(flags);
    option_reply(out, option, REP_INFO, &d);
}

pub fn info_string(out: &mut BytesMut, option: u32, info: u16, s: &str) {
    let mut d = Vec::with_capacity(2 + s.len());
    d.put_u16(info);
    d.put_slice(&s.as_bytes()[..s.len().min(MAX_STRING)]);
    option_reply(out, option, REP_INFO, &d);
}

pub fn info_block_size(out: &mut BytesMut, option: u32, min: u32, pref: u32, max: u32) {
    let mut d = Vec::with_capacity(14);
    d.put_u16(INFO_BLOCK_SIZE);
    d.put_u32(min);
    d.put_u32(pref);
    d.put_u32(max);
    option_reply(out, option, REP_INFO, &d);
}

/// The INFO_BLOCK_SIZE triple a layer's `(minimum, preferred, maximum)`
/// may be advertised as: the maximum payload is capped at the largest
/// request accepted, and `None` when the rules cannot be met (minimum a
/// power of 2 <= 64K; preferred a power of 2 >= max(minimum, 512); maximum
/// >= preferred and a multiple of minimum), so nothing is sent.
pub fn block_size_info(min: u32, pref: u32, max: u32) -> Option<(u32, u32, u32)> {
    let cap = MAX_REQUEST_SIZE as u32;
    let (pref, max) = (pref.min(cap), max.min(cap));
    let ok = min.is_power_of_two()
        && min <= 65536
        && pref.is_power_of_two()
        && pref >= min.max(512)
        && max >= pref
        && max % min == 0;
    ok.then_some((min, pref, max))
}

pub fn server_entry(out: &mut BytesMut, name: &str, desc: &str) {
    let mut d = Vec::new();
    d.put_u32(name.len() as u32);
    d.put_slice(name.as_bytes());
    d.put_slice(desc.as_bytes());
    option_reply(out, OPT_LIST, REP_SERVER, &d);
}

pub fn meta_context(out: &mut BytesMut, option: u32, id: u32, name: &str) {
    let mut d = Vec::new();
    d.put_u32(id);
    d.put_slice(name.as_bytes());
    option_reply(out, option, REP_META_CONTEXT, &d);
}

/// The EXPORT_NAME answer: size, flags and (unless NO_ZEROES) 124 zeros.
pub fn export_name_reply(out: &mut BytesMut, size: u64, flags: u16, no_zeroes: bool) {
    out.put_u64(size);
    out.put_u16(flags);
    if !no_zeroes {
        out.put_bytes(0, 124);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_bytes() {
        let g = greeting(0xffff);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
        assert_eq!(&greeting(1)[16..], &[0, 1]);
        assert_eq!(&greeting(0)[16..], &[0, 0]);
    }

    #[test]
    fn client_flags() {
        assert!(!parse_client_flags(1, 3).unwrap().no_zeroes);
        assert!(parse_client_flags(3, 3).unwrap().no_zeroes);
        assert!(parse_client_flags(4, 3).is_err());
        // A flag masked off may not be requested.
        assert!(parse_client_flags(3, 1).is_err());
        let f = parse_client_flags(0, 0).unwrap();
        assert!(!f.fixed_newstyle && !f.no_zeroes);
    }

    #[test]
    fn option_header_frames() {
        let mut b = BytesMut::from(&b"IHAVEOPT\0\0\0\x07\0\0\0\x02xy"[..]);
        let h = parse_option_header(&mut b).unwrap().unwrap();
        assert_eq!(h, OptionHeader { option: 7, len: 2 });
        assert_eq!(&b[..], b"xy");
        let mut short = BytesMut::from(&b"IHAVEOPT\0\0"[..]);
        assert_eq!(parse_option_header(&mut short), Ok(None));
        let mut bad = BytesMut::from(&b"IHAVEOPX\0\0\0\x07\0\0\0\x00"[..]);
        assert!(parse_option_header(&mut bad).is_err());
    }

    #[test]
    fn go_payloads() {
        let ok = b"\0\0\0\x03abc\0\x02\0\x03\0\x01";
        assert_eq!(
            parse_go(ok),
            Ok(GoRequest {
                name: "abc".into(),
                info: vec![3, 1]
            })
        );
        // name length past the end
        assert!(parse_go(b"\0\0\0\x09abc\0\0").is_err());
        // count disagrees with the bytes
        assert!(parse_go(b"\0\0\0\0\0\x02\0\x03").is_err());
        assert!(parse_go(b"\0\0").is_err());
        // not UTF-8
        assert!(parse_go(b"\0\0\0\x01\xff\0\0").is_err());
    }

    #[test]
    fn meta_payloads() {
        let mut p = Vec::new();
        p.put_u32(0);
        p.put_u32(2);
        p.put_u32(15);
        p.put_slice(b"base:allocation");
        p.put_u32(5);
        p.put_slice(b"qemu:");
        let m = parse_meta(&p).unwrap();
        assert_eq!(m.queries, vec!["base:allocation", "qemu:"]);
        assert!(parse_meta(&p[..p.len() - 1]).is_err());
        let mut trailing = p.clone();
        trailing.push(0);
        assert!(parse_meta(&trailing).is_err());
    }

    #[test]
    fn block_size_rules() {
        let m = MAX_REQUEST_SIZE as u32;
        assert_eq!(block_size_info(1, 32768, u32::MAX), Some((1, 32768, m)));
        assert_eq!(
            block_size_info(512, 4096, 1 << 20),
            Some((512, 4096, 1 << 20))
        );
        assert_eq!(block_size_info(4096, 1 << 30, u32::MAX), Some((4096, m, m)));
        assert_eq!(block_size_info(3, 4096, 1 << 20), None); // min not 2^n
        assert_eq!(block_size_info(1 << 17, 1 << 17, 1 << 20), None); // min > 64K
        assert_eq!(block_size_info(1, 256, 1 << 20), None); // pref < 512
        assert_eq!(block_size_info(1, 6000, 1 << 20), None); // pref not 2^n
        assert_eq!(block_size_info(4096, 4096, 2048), None); // max < pref
        assert_eq!(block_size_info(4096, 4096, 10000), None); // max % min
        assert_eq!(block_size_info(0, 4096, 1 << 20), None);
    }

    #[test]
    fn replies() {
        let mut o = BytesMut::new();
        info_export(&mut o, OPT_GO, 1024, 0x1);
        assert_eq!(o.len(), 20 + 12);
        assert_eq!(&o[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&o[12..16], &REP_INFO.to_be_bytes());
        assert_eq!(&o[16..20], &12u32.to_be_bytes());
        let mut e = BytesMut::new();
        export_name_reply(&mut e, 5, 1, false);
        assert_eq!(e.len(), 134);
        let mut e2 = BytesMut::new();
        export_name_reply(&mut e2, 5, 1, true);
        assert_eq!(e2.len(), 10);
    }
}
