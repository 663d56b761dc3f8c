//! Request validation as a table of cases: each request header, under
//! what the connection negotiated, and the errno it gets (or none).

use super::*;

/// A request header.
fn req(typ: u16, flags: u16, offset: u64, length: u64) -> Request {
    Request {
        flags,
        typ,
        cookie: 1,
        offset,
        length,
    }
}

/// What a connection negotiated: reply mode, transmission flags,
/// whether `base:allocation` was chosen.
fn conn(mode: ReplyMode, flags: u16, base_allocation: bool) -> ConnInfo {
    ConnInfo {
        mode,
        base_allocation,
        flags,
    }
}

const SIMPLE: ReplyMode = ReplyMode::Simple;
const STRUCT: ReplyMode = ReplyMode::Structured;
const EXT: ReplyMode = ReplyMode::Extended;
/// The optional commands: FLUSH, TRIM, WRITE_ZEROES, CACHE.
const CMDS: u16 = FLAG_SEND_FLUSH | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_CACHE;
/// A writable export advertising every command, FUA and FAST_ZERO.
const RW: u16 = FLAG_HAS_FLAGS | CMDS | FLAG_SEND_FUA | FLAG_SEND_FAST_ZERO;
/// A writable export advertising every command but neither flag.
const PLAIN: u16 = FLAG_HAS_FLAGS | CMDS;
/// A writable export advertising no optional command and no flag.
const BARE: u16 = FLAG_HAS_FLAGS;
const RO: u16 = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FUA | FLAG_SEND_FLUSH | FLAG_SEND_CACHE;
const MAX: u64 = MAX_REQUEST_SIZE;

/// name, mode, export flags, base:allocation, command, flags, offset,
/// length => errno.
type Case = (&'static str, ReplyMode, u16, bool, u16, u16, u64, u64, Option<Errno>);
/// name, connection, request, payload => errno of the reply.
type Refusal = (&'static str, ConnInfo, Request, Option<Payload>, Option<u32>);

#[test]
fn request_validation_table() {
    use Errno::*;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // name, mode, export flags, base:allocation, command, flags, offset, length => errno
        ("read", SIMPLE, RW, false, CMD_READ, 0, 0, 512, None),
        ("read of the maximum", SIMPLE, RW, false, CMD_READ, 0, 0, MAX, None),
        ("read over the maximum", SIMPLE, RW, false, CMD_READ, 0, 0, MAX + 1, Some(Inval)),
        ("read of zero length", SIMPLE, RW, false, CMD_READ, 0, 0, 0, Some(Inval)),
        ("read with FUA advertised", SIMPLE, RW, false, CMD_READ, CMD_FLAG_FUA, 0, 512, None),
        ("read with FUA not advertised", SIMPLE, PLAIN, false, CMD_READ, CMD_FLAG_FUA, 0, 512, Some(Inval)),
        ("read DF, structured", STRUCT, RW, false, CMD_READ, CMD_FLAG_DF, 0, 512, None),
        ("read DF, extended", EXT, RW, false, CMD_READ, CMD_FLAG_DF, 0, 512, None),
        ("read DF, simple replies", SIMPLE, RW, false, CMD_READ, CMD_FLAG_DF, 0, 512, Some(Inval)),
        ("read NO_HOLE", STRUCT, RW, false, CMD_READ, CMD_FLAG_NO_HOLE, 0, 512, Some(Inval)),
        ("read PAYLOAD_LEN, extended", EXT, RW, false, CMD_READ, CMD_FLAG_PAYLOAD_LEN, 0, 512, Some(Inval)),
        ("read on a read-only export", SIMPLE, RO, false, CMD_READ, 0, 0, 512, None),
        ("read of 4 GiB, extended", EXT, RW, false, CMD_READ, 0, 0, 1 << 32, Some(Inval)),
        ("write", SIMPLE, RW, false, CMD_WRITE, 0, 0, 512, None),
        ("write FUA", SIMPLE, RW, false, CMD_WRITE, CMD_FLAG_FUA, 0, 512, None),
        ("write FUA not advertised", SIMPLE, PLAIN, false, CMD_WRITE, CMD_FLAG_FUA, 0, 512, Some(Inval)),
        ("write of the maximum", SIMPLE, RW, false, CMD_WRITE, 0, 0, MAX, None),
        ("write over the maximum", SIMPLE, RW, false, CMD_WRITE, 0, 0, MAX + 1, Some(Inval)),
        ("write of zero length", SIMPLE, RW, false, CMD_WRITE, 0, 0, 0, Some(NoSpc)),
        ("write DF", STRUCT, RW, false, CMD_WRITE, CMD_FLAG_DF, 0, 512, Some(Inval)),
        ("write PAYLOAD_LEN, extended", EXT, RW, false, CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 0, 512, None),
        ("write PAYLOAD_LEN, structured", STRUCT, RW, false, CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 0, 512, Some(Inval)),
        ("write on a read-only export", SIMPLE, RO, false, CMD_WRITE, 0, 0, 512, Some(Perm)),
        // As nbdkit: EPERM before anything else is looked at.
        ("bad write on a read-only export", SIMPLE, RO, false, CMD_WRITE, 0x8000, 0, 0, Some(Perm)),
        ("trim", SIMPLE, RW, false, CMD_TRIM, 0, 0, 512, None),
        ("trim FUA", SIMPLE, RW, false, CMD_TRIM, CMD_FLAG_FUA, 0, 512, None),
        ("trim NO_HOLE", SIMPLE, RW, false, CMD_TRIM, CMD_FLAG_NO_HOLE, 0, 512, Some(Inval)),
        ("trim of zero length", SIMPLE, RW, false, CMD_TRIM, 0, 0, 0, Some(Inval)),
        ("trim on a read-only export", SIMPLE, RO, false, CMD_TRIM, 0, 0, 512, Some(Perm)),
        ("trim of 4 GiB, compact header", SIMPLE, RW, false, CMD_TRIM, 0, 0, 1 << 32, Some(Inval)),
        ("trim of 4 GiB, extended", EXT, RW, false, CMD_TRIM, 0, 0, 1 << 32, None),
        ("zero", SIMPLE, RW, false, CMD_WRITE_ZEROES, 0, 0, 512, None),
        ("zero NO_HOLE", SIMPLE, PLAIN, false, CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 512, None),
        ("zero FUA|NO_HOLE", SIMPLE, RW, false, CMD_WRITE_ZEROES, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE, 0, 512, None),
        ("zero FAST_ZERO", SIMPLE, RW, false, CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512, None),
        ("zero FAST_ZERO not advertised", SIMPLE, PLAIN, false, CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512, Some(Inval)),
        ("zero of zero length", SIMPLE, RW, false, CMD_WRITE_ZEROES, 0, 0, 0, Some(NoSpc)),
        ("zero on a read-only export", SIMPLE, RO, false, CMD_WRITE_ZEROES, 0, 0, 512, Some(Perm)),
        ("zero of 2^62, extended", EXT, RW, false, CMD_WRITE_ZEROES, 0, 0, 1 << 62, None),
        ("zero REQ_ONE", SIMPLE, RW, false, CMD_WRITE_ZEROES, CMD_FLAG_REQ_ONE, 0, 512, Some(Inval)),
        ("flush", SIMPLE, RW, false, CMD_FLUSH, 0, 0, 0, None),
        ("flush with an offset", SIMPLE, RW, false, CMD_FLUSH, 0, 512, 0, Some(Inval)),
        ("flush with a length", SIMPLE, RW, false, CMD_FLUSH, 0, 0, 512, Some(Inval)),
        ("flush FUA", SIMPLE, RW, false, CMD_FLUSH, CMD_FLAG_FUA, 0, 0, None),
        ("flush NO_HOLE", SIMPLE, RW, false, CMD_FLUSH, CMD_FLAG_NO_HOLE, 0, 0, Some(Inval)),
        ("flush on a read-only export", SIMPLE, RO, false, CMD_FLUSH, 0, 0, 0, None),
        ("disc", SIMPLE, RW, false, CMD_DISC, 0, 0, 0, None),
        ("disc with a length", SIMPLE, RW, false, CMD_DISC, 0, 0, 1, Some(Inval)),
        ("cache", SIMPLE, RW, false, CMD_CACHE, 0, 0, 512, None),
        ("cache of zero length", SIMPLE, RW, false, CMD_CACHE, 0, 0, 0, Some(Inval)),
        ("cache on a read-only export", SIMPLE, RO, false, CMD_CACHE, 0, 0, 512, None),
        ("cache DF", STRUCT, RW, false, CMD_CACHE, CMD_FLAG_DF, 0, 512, Some(Inval)),
        ("block status", STRUCT, RW, true, CMD_BLOCK_STATUS, 0, 0, 512, None),
        ("block status REQ_ONE", STRUCT, RW, true, CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 512, None),
        ("block status of zero length", STRUCT, RW, true, CMD_BLOCK_STATUS, 0, 0, 0, None),
        ("block status, no meta context", STRUCT, RW, false, CMD_BLOCK_STATUS, 0, 0, 512, Some(Inval)),
        ("block status DF", STRUCT, RW, true, CMD_BLOCK_STATUS, CMD_FLAG_DF, 0, 512, Some(Inval)),
        ("block status on a read-only export", STRUCT, RO, true, CMD_BLOCK_STATUS, 0, 0, 512, None),
        // Commands the export did not advertise: EINVAL, as nbdkit.
        ("trim not advertised", SIMPLE, BARE, false, CMD_TRIM, 0, 0, 512, Some(Inval)),
        ("zero not advertised", SIMPLE, BARE, false, CMD_WRITE_ZEROES, 0, 0, 512, Some(Inval)),
        ("cache not advertised", SIMPLE, BARE, false, CMD_CACHE, 0, 0, 512, Some(Inval)),
        ("flush not advertised", SIMPLE, BARE, false, CMD_FLUSH, 0, 0, 0, Some(Inval)),
        ("cache not advertised, read-only", SIMPLE, RO & !FLAG_SEND_CACHE, false, CMD_CACHE, 0, 0, 512, Some(Inval)),
        ("trim not advertised, read-only", SIMPLE, RO, false, CMD_TRIM, 0, 0, 512, Some(Perm)),
        ("read, nothing advertised", SIMPLE, BARE, false, CMD_READ, 0, 0, 512, None),
        ("write, nothing advertised", SIMPLE, BARE, false, CMD_WRITE, 0, 0, 512, None),
        ("unknown command", SIMPLE, RW, false, 8, 0, 0, 512, Some(Inval)),
        ("unknown command, read-only", SIMPLE, RO, false, 0xffff, 0, 0, 0, Some(Inval)),
        ("unknown flag", SIMPLE, RW, false, CMD_READ, 1 << 6, 0, 512, Some(Inval)),
    ];
    let mut wrong = Vec::new();
    for &(name, mode, flags, base, typ, rflags, offset, length, want) in cases {
        let got = validate(&req(typ, rflags, offset, length), &conn(mode, flags, base))
            .err()
            .map(|e| e.errno);
        if got != want {
            wrong.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn refusal_table() {
    let rw = conn(SIMPLE, RW, false);
    let ro = conn(SIMPLE, RO, false);
    let data = || Some(Payload::Owned(vec![0u8; 512]));
    // name, connection, request, its payload (None: discarded) => the
    // errno of the error reply sent without reaching the export
    let cases: &[Refusal] = &[
        ("valid write", rw, req(CMD_WRITE, 0, 0, 512), data(), None),
        ("write whose payload was discarded", rw, req(CMD_WRITE, 0, 0, 512), None, Some(22)),
        ("read of zero length", rw, req(CMD_READ, 0, 0, 0), None, Some(22)),
        ("write on a read-only export", ro, req(CMD_WRITE, 0, 0, 512), data(), Some(1)),
        ("zero of zero length", rw, req(CMD_WRITE_ZEROES, 0, 0, 0), None, Some(28)),
        ("valid read", ro, req(CMD_READ, 0, 0, 512), None, None),
    ];
    for (name, ci, r, p, want) in cases {
        let got = refusal(r, validate(r, ci), p, ci).map(|reply| {
            // A simple reply: magic, error, cookie.
            assert_eq!(reply.head.len(), 16, "{name}");
            assert_eq!(reply.head[..4], SIMPLE_REPLY_MAGIC.to_be_bytes(), "{name}");
            assert_eq!(reply.head[8..16], 1u64.to_be_bytes(), "{name}: cookie");
            u32::from_be_bytes(reply.head[4..8].try_into().unwrap())
        });
        assert_eq!(got, *want, "{name}");
    }
}
