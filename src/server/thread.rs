//! A connection served by a thread of its own, with blocking socket I/O,
//! for every export where no layer waits on I/O or a timer (RAM disks,
//! data, scripts, zstd): no reactor round trip and no hand-off to a pool
//! per request. Requests run one after another, as in an nbdkit
//! connection thread; replies are coalesced while more requests are
//! already buffered, and a read's data goes out with them in one writev.
//! Uses `dispatch` for requests and `protocol` for frames; the only tokio
//! here is the async wrapper that waits for the thread or for shutdown.

use super::connection::Socket;
use super::dispatch::{self, ConnInfo};
use super::negotiate::{shutdown_requested, Negotiated};
use super::Shared;
use crate::backend::{Export, ThreadModel};
use crate::protocol::consts::*;
use crate::protocol::transmission::parse_request;
use crate::protocol::ReplyMode;
use bytes::{Buf, BufMut, BytesMut};
use std::io::{self, IoSlice, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The socket as a blocking std stream.
enum StdSocket {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl StdSocket {
    fn from(sock: Socket) -> io::Result<StdSocket> {
        let s = match sock {
            Socket::Unix(s) => StdSocket::Unix(s.into_std()?),
            Socket::Tcp(s) => StdSocket::Tcp(s.into_std()?),
        };
        match &s {
            StdSocket::Unix(u) => u.set_nonblocking(false)?,
            StdSocket::Tcp(t) => t.set_nonblocking(false)?,
        }
        Ok(s)
    }

    fn fd(&self) -> RawFd {
        match self {
            StdSocket::Unix(u) => u.as_raw_fd(),
            StdSocket::Tcp(t) => t.as_raw_fd(),
        }
    }

    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write2(data, &[])
    }

    /// Write `a` then `b`, in one writev where the socket takes it all.
    fn write2(&self, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
        while !a.is_empty() || !b.is_empty() {
            let bufs = [IoSlice::new(a), IoSlice::new(b)];
            let r = match self {
                StdSocket::Unix(u) => (&*u).write_vectored(&bufs),
                StdSocket::Tcp(t) => (&*t).write_vectored(&bufs),
            };
            let n = match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n >= a.len() {
                b = &b[n - a.len()..];
                a = &[];
            } else {
                a = &a[n..];
            }
        }
        Ok(())
    }

    /// Wake the thread from a blocking read: it sees end of file, finishes
    /// what it has and writes its replies.
    fn shutdown_read(&self) {
        let _ = match self {
            StdSocket::Unix(u) => u.shutdown(std::net::Shutdown::Read),
            StdSocket::Tcp(t) => t.shutdown(std::net::Shutdown::Read),
        };
    }

    fn shutdown_both(&self) {
        let _ = match self {
            StdSocket::Unix(u) => u.shutdown(std::net::Shutdown::Both),
            StdSocket::Tcp(t) => t.shutdown(std::net::Shutdown::Both),
        };
    }

    /// One `recv` into the spare capacity of `buf` (no zero-fill); `all`
    /// waits for the whole spare capacity. Returns the bytes read, 0 at
    /// end of file.
    fn recv_into(&self, buf: &mut BytesMut, want: usize, all: bool) -> io::Result<usize> {
        buf.reserve(want);
        let spare = buf.chunk_mut();
        let len = spare.len().min(want);
        let flags = if all { libc::MSG_WAITALL } else { 0 };
        loop {
            // SAFETY: recv writes at most `len` bytes into the spare
            // capacity `spare` points at; advance_mut below marks only the
            // bytes it wrote as initialized.
            let n = unsafe { libc::recv(self.fd(), spare.as_mut_ptr().cast(), len, flags) };
            if n >= 0 {
                // SAFETY: the kernel initialized the first n bytes.
                unsafe { buf.advance_mut(n as usize) };
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Run the transmission phase on a new thread; return when it ends. On
/// shutdown the thread's reads are ended, so it finishes in-flight
/// requests, flushes and closes.
pub async fn serve(
    sock: Socket,
    neg: Negotiated,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sock = match StdSocket::from(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!("cannot make the socket blocking: {e}");
            return;
        }
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let span = tracing::Span::current();
    let (s2, stop) = (sock.clone(), shutdown.clone());
    let spawned = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || {
            let _e = span.entered();
            let ci = ConnInfo::of(&neg);
            let export = neg.export;
            let global = (export.top().thread_model() == ThreadModel::SerializeAllRequests)
                .then_some(&*shared.global_lock);
            if let Err(e) = request_loop(&s2, &export, &ci, global) {
                warn!("connection closed: {e}");
            }
            if *stop.borrow() {
                let _ = export.flush();
            }
            export.close();
            info!("connection closed");
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        warn!("cannot start a connection thread: {e}");
        return;
    }
    tokio::select! {
        _ = &mut done_rx => {}
        _ = shutdown_requested(&mut shutdown) => {
            sock.shutdown_read();
            // A client that never reads its replies leaves the thread
            // blocked in a write: end that too, after a grace period.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut done_rx).await.is_err() {
                warn!("client is not reading its replies: closing the connection");
                sock.shutdown_both();
                let _ = done_rx.await;
            }
        }
    }
}

/// How long shutdown waits for a connection's last replies to be read.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Coalesce replies up to this many bytes while requests are buffered.
const BATCH: usize = 256 * 1024;

fn request_loop(
    sock: &StdSocket,
    export: &Export,
    ci: &ConnInfo,
    global: Option<&parking_lot::Mutex<()>>,
) -> io::Result<()> {
    let ext = ci.mode == ReplyMode::Extended;
    let mut buf = BytesMut::with_capacity(BATCH);
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut big: Vec<u8> = Vec::new();
    loop {
        let req = loop {
            match parse_request(&mut buf, ext) {
                Ok(Some(req)) => break req,
                Ok(None) => {
                    if !batch.is_empty() {
                        sock.write_all(&batch)?;
                        batch.clear();
                    }
                    if sock.recv_into(&mut buf, BATCH, false)? == 0 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.0)),
            }
        };
        if req.typ == CMD_DISC {
            debug!("client sent DISC");
            return sock.write_all(&batch);
        }
        let plen = req.payload_len(ext);
        let valid = dispatch::validate(&req, ci);
        let payload = if plen == 0 {
            None
        } else if plen > MAX_REQUEST_SIZE || valid.is_err() {
            discard(sock, &mut buf, plen)?;
            None
        } else {
            Some(read_payload(sock, &mut buf, plen as usize)?)
        };
        if let Some(rep) = dispatch::refusal(&req, valid, &payload, ci) {
            batch.extend_from_slice(&rep.head);
            continue;
        }
        let data = {
            let _g = global.map(|l| l.lock());
            dispatch::execute_into(export, &req, payload, ci, &mut batch, &mut big)
        };
        if let Some(d) = data {
            sock.write2(&batch, &d)?;
            batch.clear();
            if d.capacity() <= 4 << 20 {
                big = d;
            }
        }
        if batch.len() >= BATCH {
            sock.write_all(&batch)?;
            batch.clear();
        }
    }
}

/// Take `n` payload bytes: what is buffered, then the rest in one
/// waiting `recv` straight into the payload's own buffer.
fn read_payload(sock: &StdSocket, buf: &mut BytesMut, n: usize) -> io::Result<Vec<u8>> {
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
    Ok(v.into())
}

/// Skip `n` payload bytes without allocating them.
fn discard(sock: &StdSocket, buf: &mut BytesMut, n: u64) -> io::Result<()> {
    let have = (buf.len() as u64).min(n);
    buf.advance(have as usize);
    let mut rest = n - have;
    let mut scratch = BytesMut::with_capacity(64 * 1024);
    while rest > 0 {
        scratch.clear();
        let got = sock.recv_into(&mut scratch, rest.min(64 * 1024) as usize, false)?;
        if got == 0 {
            return Err(vanished());
        }
        rest -= got as u64;
    }
    Ok(())
}

fn vanished() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "client vanished in the middle of a write payload",
    )
}
