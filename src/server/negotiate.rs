//! The fixed-newstyle handshake over a transport: greeting, options
//! (STARTTLS turns the transport into a TLS session), and the opened
//! export that transmission starts with. Options are answered strictly in
//! order; unknown ones get ERR_UNSUP and negotiation goes on. Blocking: it
//! runs on the connection's thread.

use super::tls::{TlsMode, TlsSession};
use super::transport::Transport;
use super::Shared;
use crate::backend::{CacheMode, Export, FuaMode};
use crate::protocol::consts::*;
use crate::protocol::handshake as hs;
use crate::protocol::ReplyMode;
use bytes::BytesMut;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use tracing::{debug, info, warn};

/// The outcome of a successful handshake.
pub struct Negotiated {
    pub export: Export,
    pub mode: ReplyMode,
    pub base_allocation: bool,
    pub flags: u16,
}

/// Longest export name EXPORT_NAME may carry (the spec's limit for
/// strings); a longer one ends the session.
const MAX_NAME_LEN: u32 = 4096;

/// Option payloads larger than this close the connection instead of
/// being read and discarded.
const DISCARD_LIMIT: u32 = 16 << 20;

/// Transmission flags for an export under a reply mode.
pub fn transmission_flags(export: &Export, mode: ReplyMode) -> u16 {
    let i = export.info();
    let mut f = FLAG_HAS_FLAGS;
    if i.readonly {
        f |= FLAG_READ_ONLY;
    }
    if i.can_flush {
        f |= FLAG_SEND_FLUSH;
    }
    if i.fua != FuaMode::None {
        f |= FLAG_SEND_FUA;
    }
    if i.is_rotational {
        f |= FLAG_ROTATIONAL;
    }
    if i.can_trim {
        f |= FLAG_SEND_TRIM;
    }
    if i.send_write_zeroes {
        f |= FLAG_SEND_WRITE_ZEROES;
        if i.can_fast_zero {
            f |= FLAG_SEND_FAST_ZERO;
        }
    }
    if mode != ReplyMode::Simple {
        f |= FLAG_SEND_DF;
    }
    if i.can_multi_conn {
        f |= FLAG_CAN_MULTI_CONN;
    }
    if i.cache != CacheMode::None {
        f |= FLAG_SEND_CACHE;
    }
    f
}

fn read_payload(t: &Transport, len: u32) -> io::Result<Option<Vec<u8>>> {
    if len > MAX_OPTION_LEN {
        if len > DISCARD_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("option payload of {len} bytes is too large"),
            ));
        }
        t.discard(len as u64)?;
        return Ok(None);
    }
    let mut p = vec![0u8; len as usize];
    t.read_exact(&mut p)?;
    Ok(Some(p))
}

/// Open the export on behalf of GO/INFO/EXPORT_NAME (on the connection's
/// own thread: it may block).
fn open_export(shared: &Shared, name: &str, tls: bool) -> Result<Export, String> {
    shared
        .config
        .stack
        .open_tls(shared.config.readonly, name, tls)
        .map_err(|e| super::redact::for_client(&e.to_string()))
}

/// Run the handshake. `Ok(None)` means the client ended it (ABORT or
/// disconnect) without entering transmission. `negotiating` turns false
/// before the reply that ends the handshake is sent: from then on the
/// client may send requests, so the connection limit must not evict it
/// as a connection still in its handshake.
pub fn negotiate(
    t: &mut Transport,
    shared: &Shared,
    negotiating: &AtomicBool,
) -> io::Result<Option<Negotiated>> {
    let gflags = shared.config.handshake_flags;
    t.write_all(&hs::greeting(gflags))?;
    let mut cf = [0u8; 4];
    t.read_exact(&mut cf)?;
    let cflags = u32::from_be_bytes(cf);
    let client = hs::parse_client_flags(cflags, gflags)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
    let no_zeroes = client.no_zeroes;
    let mut mode = ReplyMode::Simple;
    let mut base_allocation = false;
    // The export SET_META_CONTEXT was about: contexts hold only for it.
    let mut meta_export: Option<String> = None;
    let mut out = BytesMut::with_capacity(1024);
    let tls = shared.config.tls.as_deref();
    loop {
        let mut hdr = BytesMut::with_capacity(16);
        hdr.resize(16, 0);
        t.read_exact(&mut hdr)?;
        let h = hs::parse_option_header(&mut hdr)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short option"))?;
        debug!(option = h.option, len = h.len, "option");
        out.clear();
        let tls_reqd = tls.is_some_and(|c| c.mode == TlsMode::Require) && !t.is_tls();
        if h.option == OPT_EXPORT_NAME && (tls_reqd || h.len > MAX_NAME_LEN) {
            // EXPORT_NAME has no error reply: end the session.
            warn!(len = h.len, tls_reqd, "EXPORT_NAME refused; closing");
            return Ok(None);
        }
        let payload = read_payload(t, h.len)?;
        if !client.fixed_newstyle && h.option != OPT_EXPORT_NAME {
            // Plain newstyle: EXPORT_NAME is the only option (nbdkit
            // answers any other with ERR_INVALID).
            hs::option_error(
                &mut out,
                h.option,
                REP_ERR_INVALID,
                "only NBD_OPT_EXPORT_NAME: the client did not ask for fixed newstyle",
            );
            t.write_all(&out)?;
            continue;
        }
        if tls_reqd && h.option != OPT_STARTTLS && h.option != OPT_ABORT {
            hs::option_error(
                &mut out,
                h.option,
                REP_ERR_TLS_REQD,
                "TLS is required: send NBD_OPT_STARTTLS first",
            );
            t.write_all(&out)?;
            continue;
        }
        let p = match payload {
            Some(p) => p,
            None => {
                hs::option_error(
                    &mut out,
                    h.option,
                    REP_ERR_TOO_BIG,
                    "option payload too large",
                );
                t.write_all(&out)?;
                continue;
            }
        };
        match h.option {
            OPT_EXPORT_NAME => {
                if mode == ReplyMode::Extended {
                    // The client MUST NOT; EXPORT_NAME has no error reply.
                    warn!("EXPORT_NAME after EXTENDED_HEADERS; closing");
                    return Ok(None);
                }
                let name = String::from_utf8_lossy(&p).into_owned();
                let export = match open_export(shared, &name, t.is_tls()) {
                    Ok(e) => e,
                    Err(msg) => {
                        warn!("EXPORT_NAME {name:?}: {msg}; closing");
                        return Ok(None);
                    }
                };
                if meta_export.as_deref() != Some(name.as_str()) {
                    base_allocation = false;
                }
                let flags = transmission_flags(&export, mode);
                hs::export_name_reply(&mut out, export.size(), flags, no_zeroes);
                negotiating.store(false, SeqCst);
                if let Err(e) = t.write_all(&out) {
                    export.close(); // every open is closed (noparallel, log)
                    return Err(e);
                }
                return Ok(Some(Negotiated {
                    export,
                    mode,
                    base_allocation,
                    flags,
                }));
            }
            OPT_ABORT => {
                hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                let _ = t.write_all(&out);
                return Ok(None);
            }
            OPT_LIST => {
                if !p.is_empty() {
                    hs::option_error(&mut out, h.option, REP_ERR_INVALID, "LIST takes no data");
                } else {
                    let mut names = shared.config.stack.list_exports();
                    // `-e NAME` names the one default export; a plugin
                    // with real export names (file dir=) lists its own.
                    let default_only = names.len() == 1 && names[0].0.is_empty();
                    if default_only && !shared.config.export_name.is_empty() {
                        names = vec![(shared.config.export_name.clone(), String::new())];
                    }
                    for (n, d) in names {
                        hs::server_entry(&mut out, &n, &d);
                    }
                    hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                }
            }
            OPT_INFO | OPT_GO => {
                let go = match hs::parse_go(&p) {
                    Ok(g) => g,
                    Err(e) => {
                        hs::option_error(&mut out, h.option, REP_ERR_INVALID, &e.0);
                        t.write_all(&out)?;
                        continue;
                    }
                };
                let export = match open_export(shared, &go.name, t.is_tls()) {
                    Ok(e) => e,
                    Err(msg) => {
                        warn!("cannot open export {:?}: {msg}", go.name);
                        hs::option_error(&mut out, h.option, REP_ERR_UNKNOWN, &msg);
                        t.write_all(&out)?;
                        continue;
                    }
                };
                let flags = transmission_flags(&export, mode);
                hs::info_export(&mut out, h.option, export.size(), flags);
                let info = export.info().clone();
                for &t in &go.info {
                    match t {
                        INFO_NAME => hs::info_string(&mut out, h.option, INFO_NAME, &go.name),
                        INFO_DESCRIPTION => {
                            if let Some(d) = &info.description {
                                hs::info_string(&mut out, h.option, INFO_DESCRIPTION, d)
                            }
                        }
                        INFO_BLOCK_SIZE => {
                            if let Some(b) = info.block_size {
                                match hs::block_size_info(b.minimum, b.preferred, b.maximum) {
                                    Some((mn, pr, mx)) => {
                                        hs::info_block_size(&mut out, h.option, mn, pr, mx)
                                    }
                                    None => warn!(
                                        "block size {b:?} breaks the NBD rules; not advertised"
                                    ),
                                }
                            }
                        }
                        _ => {}
                    }
                }
                hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                if h.option == OPT_GO {
                    negotiating.store(false, SeqCst);
                }
                if let Err(e) = t.write_all(&out) {
                    export.close(); // every open is closed (noparallel, log)
                    return Err(e);
                }
                if h.option == OPT_GO {
                    if meta_export.as_deref() != Some(go.name.as_str()) {
                        base_allocation = false;
                    }
                    info!(export = %go.name, size = export.size(), ?mode, "entering transmission");
                    return Ok(Some(Negotiated {
                        export,
                        mode,
                        base_allocation,
                        flags,
                    }));
                }
                export.close();
                continue;
            }
            OPT_STRUCTURED_REPLY => {
                if !p.is_empty() {
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_INVALID,
                        "STRUCTURED_REPLY takes no data",
                    );
                } else if mode == ReplyMode::Extended {
                    // As qemu-nbd and the extension's text.
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_EXT_HEADER_REQD,
                        "extended headers are already negotiated",
                    );
                } else {
                    mode = ReplyMode::Structured;
                    hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                }
            }
            OPT_EXTENDED_HEADERS if shared.config.extended_headers => {
                if !p.is_empty() {
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_INVALID,
                        "EXTENDED_HEADERS takes no data",
                    );
                } else {
                    mode = ReplyMode::Extended;
                    hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let list = h.option == OPT_LIST_META_CONTEXT;
                if mode == ReplyMode::Simple {
                    if !list {
                        base_allocation = false;
                    }
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_INVALID,
                        "negotiate structured replies first",
                    );
                } else {
                    match hs::parse_meta(&p) {
                        Err(e) => {
                            hs::option_error(&mut out, h.option, REP_ERR_INVALID, &e.0);
                            if !list {
                                base_allocation = false;
                            }
                        }
                        Ok(m) => {
                            let sel = if list && m.queries.is_empty() {
                                true
                            } else {
                                m.queries
                                    .iter()
                                    .any(|q| hs::query_matches_base_allocation(q, list))
                            };
                            if !list {
                                base_allocation = sel;
                                meta_export = Some(m.name.clone());
                            }
                            if sel {
                                hs::meta_context(
                                    &mut out,
                                    h.option,
                                    BASE_ALLOCATION_ID,
                                    BASE_ALLOCATION,
                                );
                            }
                            hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                        }
                    }
                }
            }
            OPT_STARTTLS => {
                let cfg = match tls {
                    Some(c) if c.mode != TlsMode::Off => c,
                    _ => {
                        hs::option_error(
                            &mut out,
                            h.option,
                            REP_ERR_POLICY,
                            "TLS is not configured on this server",
                        );
                        t.write_all(&out)?;
                        continue;
                    }
                };
                if !p.is_empty() {
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_INVALID,
                        "STARTTLS takes no data",
                    );
                } else if t.is_tls() {
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_INVALID,
                        "TLS is already negotiated",
                    );
                } else if let Transport::Plain(sock) = &*t {
                    let sock = sock.clone();
                    hs::option_reply(&mut out, h.option, REP_ACK, &[]);
                    t.write_all(&out)?;
                    *t = Transport::Tls(TlsSession::accept(sock, cfg)?);
                    // Nothing negotiated in plain text carries over.
                    mode = ReplyMode::Simple;
                    base_allocation = false;
                    meta_export = None;
                    continue;
                } else {
                    hs::option_error(
                        &mut out,
                        h.option,
                        REP_ERR_POLICY,
                        "TLS is not available over pipes",
                    );
                }
            }
            other => {
                hs::option_error(&mut out, other, REP_ERR_UNSUP, "option not supported");
            }
        }
        t.write_all(&out)?;
    }
}
