//! One client connection: the handshake, then connection threads for a
//! socket (`thread.rs`, also `-s` when stdin is a socket), or, for `-s`
//! over pipes (stdin and stdout, two descriptors), the async request loop
//! here: one reader parses requests; replies go
//! through one writer task that owns the write half. Requests run inline
//! when the export is cheap and on the blocking pool when it may block,
//! so replies may be reordered.

use super::dispatch::{self, ConnInfo, Reply};
use super::negotiate::{negotiate, shutdown_requested, Negotiated};
use super::Shared;
use crate::backend::{Export, ThreadModel};
use crate::protocol::consts::*;
use crate::protocol::transmission::parse_request;
use crate::protocol::{ReplyMode, Request};
use bytes::{Buf, BytesMut};
use std::io::IoSlice;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// The socket's write half, shared by the reader (inline replies, written
/// directly: no hand-off) and the writer task (replies from the pool).
type SharedWriter = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Unpin + Send>>>;

/// Write a batch of inline replies, then optional zero-copy data.
async fn write_out(
    w: &SharedWriter,
    batch: &mut BytesMut,
    data: Option<&[u8]>,
) -> std::io::Result<()> {
    if batch.is_empty() && data.is_none() {
        return Ok(());
    }
    let mut g = w.lock().await;
    let (mut a, mut b): (&[u8], &[u8]) = (batch, data.unwrap_or_default());
    // One writev for the headers and the data: no copy, one syscall.
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            g.write(b).await?
        } else {
            g.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n >= a.len() {
            b = &b[n - a.len()..];
            a = &[];
        } else {
            a = &a[n..];
        }
    }
    batch.clear();
    g.flush().await
}

/// Writes on a non-blocking export shorter than this run inline; longer
/// ones go to the pool so the next request is read meanwhile.
const INLINE_MAX: u64 = 256 * 1024;

/// Requests to a blocking layer shorter than this run in block_in_place on
/// the connection's thread; longer ones overlap on the pool.
const SCRIPT_INLINE_MAX: u64 = 32 * 1024;

/// Replies smaller than this are copied into the batch of replies; larger
/// ones go out with it in one writev.
const COALESCE: usize = 64 * 1024;

/// Reply bytes (estimated from the request) one connection may have in
/// flight on the worker pool or queued for the writer. When they are used
/// up the reader stops reading requests, so a client that never reads its
/// replies cannot make the server buffer without bound. (Inline replies
/// are written by the reader itself, which is backpressure enough.)
const REPLY_BUDGET: u32 = 256 << 20;

/// The share of `REPLY_BUDGET` a request takes.
fn reply_cost(req: &Request) -> u32 {
    let data = match req.typ {
        CMD_READ => req.length.min(MAX_REQUEST_SIZE),
        CMD_BLOCK_STATUS => 64 * 1024,
        _ => 0,
    };
    (data as u32).saturating_add(64).min(REPLY_BUDGET)
}

/// An accepted stream socket, not yet split: after the handshake it is
/// either split for the async request loop or handed to a thread.
pub enum Socket {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Serve one accepted socket: the handshake, then connection threads
/// (`thread.rs`).
pub async fn serve_socket(
    mut sock: Socket,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let neg = match &mut sock {
        Socket::Unix(s) => {
            let (mut r, mut w) = s.split();
            handshake(&mut r, &mut w, &shared, &mut shutdown).await
        }
        Socket::Tcp(s) => {
            let (mut r, mut w) = s.split();
            handshake(&mut r, &mut w, &shared, &mut shutdown).await
        }
    };
    let Some(neg) = neg else { return };
    super::thread::serve(sock, neg, shared, shutdown).await
}

/// Serve one connection until the client disconnects or the server shuts
/// down. Never panics on client input; errors end only this connection.
pub async fn serve<R, W>(
    mut r: R,
    mut w: W,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    if let Some(neg) = handshake(&mut r, &mut w, &shared, &mut shutdown).await {
        transmission(r, w, neg, shutdown).await
    }
}

/// The handshake; `None` when it ended without entering transmission.
async fn handshake<R, W>(
    r: &mut R,
    w: &mut W,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Negotiated>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A client idle in the handshake must not hold up shutdown.
    let negotiated = tokio::select! {
        n = negotiate(r, w, shared) => n,
        _ = shutdown_requested(shutdown) => {
            debug!("shutdown during the handshake");
            return None;
        }
    };
    match negotiated {
        Ok(n) => n,
        Err(e) => {
            debug!("handshake ended: {e}");
            None
        }
    }
}

/// The transmission phase on the async request loop.
async fn transmission<R, W>(mut r: R, w: W, neg: Negotiated, mut shutdown: watch::Receiver<bool>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let ci = ConnInfo::of(&neg);
    let export = neg.export;
    let (tx, rx) = mpsc::unbounded_channel::<Out>();
    let w: SharedWriter = Arc::new(tokio::sync::Mutex::new(Box::new(w)));
    let writer = tokio::spawn(writer_task(w.clone(), rx));
    let result = request_loop(&mut r, &export, &ci, tx, &w, &mut shutdown).await;
    if let Err(e) = result {
        warn!("connection closed: {e}");
    }
    // All senders are gone once in-flight requests finish: wait for their
    // replies to be written.
    let _ = writer.await;
    let exp = export.clone();
    let shutting_down = *shutdown.borrow();
    let _ = tokio::task::spawn_blocking(move || {
        if shutting_down {
            let _ = exp.flush();
        }
        exp.close();
    })
    .await;
    info!("connection closed");
}

/// Read into `buf`; Ok(false) on EOF or shutdown.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<bool> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(256 * 1024);
    }
    if *shutdown.borrow() {
        return Ok(false);
    }
    tokio::select! {
        n = r.read_buf(buf) => Ok(n? > 0),
        _ = shutdown.changed() => Ok(false),
    }
}

async fn request_loop<R: AsyncRead + Unpin>(
    r: &mut R,
    export: &Export,
    ci: &ConnInfo,
    tx: mpsc::UnboundedSender<Out>,
    w: &SharedWriter,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let ext = ci.mode == ReplyMode::Extended;
    let blocking = export.is_blocking();
    let waits = export.waits();
    let model = export.top().thread_model();
    let conn_lock = Arc::new(parking_lot::Mutex::new(()));
    let budget = Arc::new(Semaphore::new(REPLY_BUDGET as usize));
    let mut big: Vec<u8> = Vec::new();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    // Replies of inline requests are batched and written once per read
    // from the socket: one write per batch, no hand-off to another task.
    let mut batch = BytesMut::with_capacity(256 * 1024);
    loop {
        let req = loop {
            match parse_request(&mut buf, ext) {
                Ok(Some(req)) => break req,
                Ok(None) => {
                    write_out(w, &mut batch, None).await?;
                    if !fill(r, &mut buf, shutdown).await? {
                        return Ok(());
                    }
                }
                Err(e) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.0));
                }
            }
        };
        if req.typ == CMD_DISC {
            debug!("client sent DISC");
            write_out(w, &mut batch, None).await?;
            return Ok(());
        }
        let plen = req.payload_len(ext);
        let valid = dispatch::validate(&req, ci);
        let payload = if plen > 0 {
            if plen > MAX_REQUEST_SIZE || valid.is_err() {
                discard(r, &mut buf, plen).await?;
                None
            } else {
                Some(read_payload(r, &mut buf, plen as usize).await?)
            }
        } else {
            None
        };
        if let Some(rep) = dispatch::refusal(&req, valid, &payload, ci) {
            batch.extend_from_slice(&rep.head);
            continue;
        }
        // Cheap calls run inline; big writes go to the pool so the next
        // request is read while this one is copied. Reads stay inline
        // whatever their size: the socket paces them and memory stays
        // bounded (measured: faster than the pool at 1 MiB).
        if !blocking && (req.typ != CMD_WRITE || req.length < INLINE_MAX) {
            if let Some(d) = dispatch::execute_into(export, &req, payload, ci, &mut batch, &mut big)
            {
                if d.len() <= COALESCE {
                    batch.extend_from_slice(&d);
                } else {
                    // Big reads go out at once: memory stays bounded by
                    // what the socket accepts.
                    write_out(w, &mut batch, Some(&d)).await?;
                }
                // Keep the buffer for the next big read, unless it is huge.
                if d.capacity() <= 4 << 20 {
                    big = d;
                }
            }
            if batch.len() >= 256 * 1024 {
                write_out(w, &mut batch, None).await?;
            }
            continue;
        }
        // Small requests to a blocking layer that only computes (scripts)
        // run on this thread too, inside block_in_place: tokio moves the
        // other tasks away, and the request skips a hand-off to the pool
        // (measured: 4 KiB script calls 1.4x faster). Big ones, and every
        // request to a stack that waits, go to the pool, where they overlap.
        if blocking && !waits && req.length < SCRIPT_INLINE_MAX {
            let lock = match model {
                ThreadModel::Parallel => None,
                ThreadModel::SerializeRequests => Some(&conn_lock),
                ThreadModel::SerializeAllRequests => None,
            };
            let d = tokio::task::block_in_place(|| {
                let _g = lock.map(|l| l.lock());
                dispatch::execute_into(export, &req, payload, ci, &mut batch, &mut big)
            });
            if let Some(d) = d {
                write_out(w, &mut batch, Some(&d)).await?;
            }
            if batch.len() >= 256 * 1024 {
                write_out(w, &mut batch, None).await?;
            }
            continue;
        }
        let permit = budget
            .clone()
            .acquire_many_owned(reply_cost(&req))
            .await
            .map_err(|_| std::io::Error::other("reply budget closed"))?;
        spawn_request(
            export.clone(),
            req,
            payload,
            *ci,
            (tx.clone(), permit),
            model,
            &conn_lock,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_request(
    export: Export,
    req: Request,
    payload: Option<Vec<u8>>,
    ci: ConnInfo,
    (tx, permit): (mpsc::UnboundedSender<Out>, OwnedSemaphorePermit),
    model: ThreadModel,
    conn_lock: &Arc<parking_lot::Mutex<()>>,
) {
    let lock = match model {
        ThreadModel::Parallel => None,
        ThreadModel::SerializeRequests => Some(conn_lock.clone()),
        ThreadModel::SerializeAllRequests => None,
    };
    tokio::task::spawn_blocking(move || {
        let _g = lock.as_ref().map(|l| l.lock());
        let rep = dispatch::execute(&export, &req, payload, &ci);
        let _ = tx.send(Out { rep, permit });
    });
}

/// Take `n` payload bytes: what is buffered, then the rest read directly.
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    let have = buf.len().min(n);
    let mut v = Vec::with_capacity(n);
    v.extend_from_slice(&buf[..have]);
    buf.advance(have);
    if have < n {
        // Read straight into the spare capacity: no zero-fill, no copy.
        let rest = (n - have) as u64;
        let got = r.take(rest).read_to_end(&mut v).await?;
        if (got as u64) < rest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client vanished in the middle of a write payload",
            ));
        }
    }
    Ok(v)
}

/// Skip `n` payload bytes without allocating them.
async fn discard<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    n: u64,
) -> std::io::Result<()> {
    let have = (buf.len() as u64).min(n);
    buf.advance(have as usize);
    let rest = n - have;
    if rest > 0 {
        let copied = tokio::io::copy(&mut r.take(rest), &mut tokio::io::sink()).await?;
        if copied < rest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client vanished in the middle of a payload",
            ));
        }
    }
    Ok(())
}

/// A reply from the worker pool and the budget it holds until written.
struct Out {
    rep: Reply,
    permit: OwnedSemaphorePermit,
}

async fn writer_task(w: SharedWriter, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut out = BytesMut::with_capacity(256 * 1024);
    let mut broken = false;
    while let Some(rep) = rx.recv().await {
        if broken {
            continue;
        }
        let mut pending = Some(rep);
        let mut big: Option<Vec<u8>> = None;
        let mut permits = Vec::new();
        while let Some(Out { rep, permit }) = pending.take() {
            permits.push(permit);
            out.extend_from_slice(&rep.head);
            if let Some(d) = rep.data {
                if d.len() <= COALESCE {
                    out.extend_from_slice(&d);
                } else {
                    big = Some(d);
                    break;
                }
            }
            if out.len() < 1 << 20 {
                pending = rx.try_recv().ok();
            }
        }
        if write_out(&w, &mut out, big.as_deref()).await.is_err() {
            broken = true;
        }
        drop(permits);
    }
    let _ = w.lock().await.shutdown().await;
}
