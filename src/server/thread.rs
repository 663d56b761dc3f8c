//! A connection served by threads of its own, with blocking socket I/O,
//! as nbdkit serves one: no reactor round trip and no hand-off to a pool
//! per request. Where no layer waits on I/O or a timer (RAM disks, data,
//! scripts, zstd) one worker runs the requests one after another, with a
//! helper while big requests come (over any transport); the replies of
//! up to four requests already buffered are coalesced, and a read's data
//! goes out with them in one writev. Where a layer waits (file, http, s3, torrent, xz, delay),
//! workers are added while every one is busy, up to `--threads`, so
//! requests overlap as in nbdkit's parallel thread model.
//! The same loop serves every transport (socket, TLS, pipes). Uses
//! `dispatch` for requests and `protocol` for frames; no tokio here.

use super::dispatch::{self, ConnInfo};
use super::transport::Transport;
use crate::backend::Export;
use crate::protocol::consts::*;
use crate::protocol::transmission::parse_request;
use crate::protocol::ReplyMode;
use bytes::{Buf, BytesMut};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use tracing::debug;

/// Requests at least this long call for a helper in `Mode::Helper` (one
/// worker, and a second one only while big requests come and a core is
/// free; measured on 2 cores: a second worker gains 1.05-1.25x at 1 MiB
/// with one connection, but costs 5% at 4 KiB, and up to 40% with two
/// busy connections).
const HELP_MIN: u64 = 256 * 1024;

// Over TLS the same threshold. A helper for every TLS request, which paid
// while a lone worker took every buffered request, now that it takes 4
// measured 0.88-0.91x the throughput of one worker at 4 KiB randread QD16
// x1 on idle cores, 0.72x with two busy loops running, and the same at
// 64 KiB reads idle (0.83x loaded); scripts/bench, 7-15 rounds against
// nbdkit --tls.

/// Coalesce replies up to this many bytes while requests are buffered.
const BATCH: usize = 256 * 1024;
/// Most requests a worker takes from the buffer at a time: a few, so
/// replies are coalesced but the client gets the first of them while the
/// worker runs the next few (and a second worker, when there is one,
/// still gets work). Measured at 4 KiB QD16 with a helper: 4 beats 1, 2,
/// 8 and 32. With one worker, against taking all that is buffered (up to
/// 64): sparse randwrite x1 1.08x the IOPS at 4.89 against 5.12 µs per
/// request, randread 1.05x at 3.56 against 3.62, zstd compressible
/// randread 1.04x at 3.56 against 3.79 (paired runs, 10-16 rounds).
const TAKE_MAX: usize = 4;
/// Reads and writes at least this long end a batch (a read's data goes
/// out on its own; a write's payload is not held while others wait).
const BIG: u64 = 64 * 1024;

// No polling before a read: a lone worker that polled the socket for 3 µs
// before sleeping (SPIN, removed) found the next request often enough to
// keep polling on idle cores, but the polls cost more CPU than the sleeps
// they saved (memory sparse 4k randread QD16 x1, quick build, chrt -f 20
// so the runs see idle cores, 9 rounds, load 8.4: 6.37 µs per request
// polling, 5.08 without, 5.04 for e795219 before the unified loop;
// throughput 1.13x polling; x2 and 4k randwrite x1 unchanged).

/// How many workers serve one connection.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// One worker: the thread model serializes requests.
    One,
    /// One worker, and a helper while big requests come (calls that never
    /// wait: a second worker only helps when copies are long).
    Helper,
    /// Calls wait on I/O or a timer: a worker is added whenever all are
    /// busy, up to this many; each takes one request at a time.
    Pool(usize),
}

/// What the workers of one connection share.
struct Conn<'a> {
    sock: &'a Transport,
    export: &'a Export,
    ci: ConnInfo,
    /// The read side: requests are taken under this lock.
    rd: parking_lot::Mutex<ReadSide>,
    /// Held while a worker writes its replies.
    wr: parking_lot::Mutex<()>,
    mode: Mode,
    /// A helper worker is running.
    helping: AtomicBool,
    /// Pool mode: workers running, and those waiting for a request.
    workers: AtomicUsize,
    idle: AtomicUsize,
}

struct ReadSide {
    buf: BytesMut,
    /// End of file, DISC, or a protocol violation: take nothing more.
    end: bool,
}

/// A request taken from the socket, with its payload or its refusal.
struct Taken {
    req: crate::protocol::Request,
    payload: Option<dispatch::Payload>,
    refused: Option<dispatch::Reply>,
}

/// Serve the connection with the workers `mode` allows (nbdkit's model:
/// each takes requests under the read lock, runs them, and writes its
/// replies under the write lock, so one worker's call overlaps another's
/// socket I/O).
pub fn request_loop(
    sock: &Transport,
    export: &Export,
    ci: &ConnInfo,
    mode: Mode,
) -> io::Result<()> {
    let conn = Conn {
        sock,
        export,
        ci: *ci,
        rd: parking_lot::Mutex::new(ReadSide {
            buf: BytesMut::with_capacity(BATCH),
            end: false,
        }),
        wr: parking_lot::Mutex::new(()),
        mode,
        helping: AtomicBool::new(false),
        workers: AtomicUsize::new(1),
        idle: AtomicUsize::new(0),
    };
    // Pool workers mostly wait, so they do not count as busy cores.
    let counted = !matches!(mode, Mode::Pool(_));
    if counted {
        ACTIVE.fetch_add(1, SeqCst);
    }
    let r = std::thread::scope(|scope| conn.worker(scope, true));
    if counted {
        ACTIVE.fetch_sub(1, SeqCst);
    }
    r
}

/// Workers running in the process, for deciding on a helper.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

fn cores() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A helper retires after this many batches without a big request.
const HELPER_IDLE: u32 = 16;

impl<'env> Conn<'env> {
    /// Serve until the connection ends. The primary worker starts a
    /// helper when big requests come and a core is free; the helper
    /// retires when they stop or the cores are taken.
    fn worker<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        primary: bool,
    ) -> io::Result<()> {
        let r = self.serve(scope, primary);
        if let Err(e) = &r {
            if !primary {
                debug!("helper: {e}");
            }
            // Wake the other worker (blocked in recv or in a write).
            self.rd_end();
            self.sock.closer().shutdown_both();
        }
        r
    }

    /// Start a helper if a big request came, this connection has none,
    /// and a core is free.
    fn maybe_help<'scope>(&'scope self, scope: &'scope std::thread::Scope<'scope, 'env>) {
        if self.mode != Mode::Helper
            || ACTIVE.load(SeqCst) >= cores()
            || self.helping.swap(true, SeqCst)
        {
            return;
        }
        ACTIVE.fetch_add(1, SeqCst);
        let done = move || {
            self.helping.store(false, SeqCst);
            ACTIVE.fetch_sub(1, SeqCst);
        };
        self.spawn_worker(scope, done);
    }

    /// Start a secondary worker; `done` runs when it ends, or at once if
    /// the thread cannot be started.
    fn spawn_worker<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        done: impl FnOnce() + Send + Clone + 'scope,
    ) {
        let span = tracing::Span::current();
        let d = done.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn_scoped(scope, move || {
                let _e = span.entered();
                let _ = self.worker(scope, false);
                d();
            });
        if spawned.is_err() {
            done();
        }
    }

    /// Pool mode: add a worker when none is waiting for a request, so the
    /// next one is read while this one waits on its call.
    fn maybe_add<'scope>(&'scope self, scope: &'scope std::thread::Scope<'scope, 'env>) {
        let Mode::Pool(max) = self.mode else { return };
        if self.idle.load(SeqCst) > 0 {
            return;
        }
        if self.workers.fetch_add(1, SeqCst) >= max {
            self.workers.fetch_sub(1, SeqCst);
            return;
        }
        // A pool worker stays until the connection ends.
        self.spawn_worker(scope, || {});
    }

    fn rd_end(&self) {
        if let Some(mut rd) = self.rd.try_lock() {
            rd.end = true;
        }
    }

    fn serve<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        primary: bool,
    ) -> io::Result<()> {
        crate::backend::shutdown::set_client_probe(client_probe(self.sock));
        let r = self.serve_requests(scope, primary);
        crate::backend::shutdown::set_client_probe(None);
        r
    }

    fn serve_requests<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        primary: bool,
    ) -> io::Result<()> {
        let pool = matches!(self.mode, Mode::Pool(_));
        let mut batch = BytesMut::with_capacity(if pool { 4096 } else { BATCH });
        let mut big: Vec<u8> = Vec::new();
        let mut taken: Vec<Taken> = Vec::with_capacity(TAKE_MAX);
        let mut idle = 0;
        loop {
            let more = self.take(&mut taken)?;
            let busy = taken.last().is_some_and(|t| t.req.length >= HELP_MIN);
            if primary && busy && more {
                self.maybe_help(scope);
            }
            if more && !taken.is_empty() {
                self.maybe_add(scope);
            }
            idle = if busy { 0 } else { idle + 1 };
            let mut data = None;
            for t in taken.drain(..) {
                if let Some(rep) = t.refused {
                    batch.extend_from_slice(&rep.head);
                    continue;
                }
                let d = dispatch::execute_into(
                    self.export,
                    &t.req,
                    t.payload,
                    &self.ci,
                    &mut batch,
                    &mut big,
                );
                if d.is_some() {
                    data = d; // only the last request of a batch has data
                }
            }
            if !batch.is_empty() || data.is_some() {
                let _w = self.wr.lock();
                self.sock
                    .write2(&batch, data.as_deref().unwrap_or_default())?;
                batch.clear();
            }
            if let Some(d) = data {
                crate::backend::recycle(d);
            }
            if !more {
                return Ok(());
            }
            if !primary && !pool && (idle >= HELPER_IDLE || ACTIVE.load(SeqCst) > cores()) {
                return Ok(());
            }
        }
    }

    /// Take requests: at least one (waiting for it), then those already
    /// buffered with their payloads, up to a big read or write. Ok(false) once nothing more will come.
    fn take(&self, out: &mut Vec<Taken>) -> io::Result<bool> {
        self.idle.fetch_add(1, SeqCst);
        let r = self.take_locked(out);
        self.idle.fetch_sub(1, SeqCst);
        r
    }

    fn take_locked(&self, out: &mut Vec<Taken>) -> io::Result<bool> {
        let mut rd = self.rd.lock();
        let ext = self.ci.mode == ReplyMode::Extended;
        let max = match self.mode {
            Mode::Pool(_) => 1,
            _ => TAKE_MAX,
        };
        // Payloads may be slices of the buffer only while no other worker
        // reads into it (else every read would need a new buffer).
        let share = match self.mode {
            Mode::One => true,
            Mode::Helper => !self.helping.load(SeqCst),
            Mode::Pool(_) => false,
        };
        // Bytes of read replies taken: the batch stays under BATCH.
        let mut reply_bytes = 0u64;
        while out.len() < max && !rd.end && reply_bytes < BATCH as u64 {
            let req = match parse_request(&mut rd.buf, ext) {
                Ok(Some(req)) => req,
                Ok(None) if out.is_empty() => {
                    if self.sock.recv_into(&mut rd.buf, BATCH, false)? == 0 {
                        rd.end = true;
                    }
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    rd.end = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.0));
                }
            };
            if req.typ == CMD_DISC {
                debug!("client sent DISC");
                rd.end = true;
                break;
            }
            let plen = req.payload_len(ext);
            let valid = dispatch::validate(&req, &self.ci);
            if plen > MAX_REQUEST_SIZE {
                // Never read gigabytes to stay in sync: refuse and end.
                let e = crate::backend::BackendError::new(
                    crate::backend::Errno::Inval,
                    format!("write payload of {plen} bytes is over the maximum {MAX_REQUEST_SIZE}"),
                );
                out.push(Taken {
                    refused: Some(dispatch::error_reply(&req, &self.ci, &e)),
                    req,
                    payload: None,
                });
                rd.end = true;
                break;
            }
            let payload = if plen == 0 {
                None
            } else if valid.is_err() {
                discard(self.sock, &mut rd.buf, plen)?;
                None
            } else {
                Some(read_payload(self.sock, &mut rd.buf, plen as usize, share)?)
            };
            let refused = dispatch::refusal(&req, valid, &payload, &self.ci);
            let ends = refused.is_none()
                && (req.typ == CMD_READ || req.typ == CMD_WRITE)
                && req.length >= BIG;
            if req.typ == CMD_READ {
                reply_bytes += req.length;
            }
            out.push(Taken {
                req,
                payload,
                refused,
            });
            if ends {
                break;
            }
            // A following write is taken only if its payload is here.
            if !self.next_is_buffered(&rd.buf, ext) {
                break;
            }
        }
        Ok(!rd.end)
    }

    /// The next request's header and payload are all in `buf` (or its
    /// header is not: then it is not taken anyway).
    fn next_is_buffered(&self, buf: &BytesMut, ext: bool) -> bool {
        let hlen = if ext { 32 } else { 28 };
        if buf.len() < hlen {
            return true;
        }
        let flags = u16::from_be_bytes([buf[4], buf[5]]);
        let typ = u16::from_be_bytes([buf[6], buf[7]]);
        let len = if ext {
            u64::from_be_bytes(buf[24..32].try_into().unwrap_or_default())
        } else {
            u32::from_be_bytes(buf[24..28].try_into().unwrap_or_default()) as u64
        };
        let req = crate::protocol::Request {
            flags,
            typ,
            cookie: 0,
            offset: 0,
            length: len,
        };
        (buf.len() as u64) >= hlen as u64 + req.payload_len(ext)
    }
}

/// A check that the client of `sock` has hung up (POLLRDHUP), for layers
/// that sleep (see `backend::shutdown::sleep`); none for pipes.
fn client_probe(sock: &Transport) -> Option<crate::backend::shutdown::ClientProbe> {
    match sock.closer() {
        super::transport::Closer::Socket(s) => Some(std::sync::Arc::new(move || {
            let mut p = libc::pollfd {
                fd: s.fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: polls one descriptor we hold open, without waiting.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            r == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
        })),
        _ => None,
    }
}

/// Take `n` payload bytes: a slice of `buf` when they are all there and
/// `share` allows it (not copied: `buf` is reused in place once the
/// request is done), else what is buffered, then the rest in one waiting
/// `recv` straight into the payload's own buffer.
fn read_payload(
    sock: &Transport,
    buf: &mut BytesMut,
    n: usize,
    share: bool,
) -> io::Result<dispatch::Payload> {
    if share && buf.len() >= n {
        return Ok(dispatch::Payload::Shared(buf.split_to(n).freeze()));
    }
    let have = buf.len().min(n);
    let mut v = BytesMut::with_capacity(n);
    v.extend_from_slice(&buf[..have]);
    buf.advance(have);
    while v.len() < n {
        let want = n - v.len();
        if sock.recv_into(&mut v, want, true)? == 0 {
            return Err(vanished());
        }
    }
    Ok(dispatch::Payload::Owned(v.into()))
}

/// Skip `n` payload bytes without allocating them.
fn discard(sock: &Transport, buf: &mut BytesMut, n: u64) -> io::Result<()> {
    let have = (buf.len() as u64).min(n);
    buf.advance(have as usize);
    sock.discard(n - have).map_err(|_| vanished())
}

fn vanished() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "client vanished in the middle of a write payload",
    )
}
