//! One client connection: handshake, then the request loop. One reader
//! parses requests; replies go through one writer task that owns the
//! socket's write half. Requests run inline when the export is cheap and on
//! the blocking pool when it may block, so replies may be reordered.

use super::dispatch::{self, ConnInfo, Reply};
use super::negotiate::{negotiate, shutdown_requested};
use super::Shared;
use crate::backend::{Errno, Export, ThreadModel};
use crate::protocol::consts::*;
use crate::protocol::transmission::parse_request;
use crate::protocol::{ReplyMode, Request};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// Requests on a non-blocking export shorter than this run inline.
const INLINE_MAX: u64 = 256 * 1024;

/// Replies smaller than this are coalesced into one write.
const COALESCE: usize = 64 * 1024;

/// Reply bytes (estimated from the request) one connection may have in
/// flight or queued for the writer. When they are used up the reader stops
/// reading requests, so a client that never reads its replies cannot make
/// the server buffer without bound.
const REPLY_BUDGET: u32 = 256 << 20;

/// A message for the writer: reply frames and the budget they hold until
/// written.
struct Out {
    rep: Reply,
    permit: Option<OwnedSemaphorePermit>,
}

/// The share of `REPLY_BUDGET` a request takes.
fn reply_cost(req: &Request) -> u32 {
    let data = match req.typ {
        CMD_READ => req.length.min(MAX_REQUEST_SIZE),
        CMD_BLOCK_STATUS => 64 * 1024,
        _ => 0,
    };
    (data as u32).saturating_add(64).min(REPLY_BUDGET)
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
    // A client idle in the handshake must not hold up shutdown.
    let negotiated = tokio::select! {
        n = negotiate(&mut r, &mut w, &shared) => n,
        _ = shutdown_requested(&mut shutdown) => {
            debug!("shutdown during the handshake");
            return;
        }
    };
    let neg = match negotiated {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            debug!("handshake ended: {e}");
            return;
        }
    };
    let ci = ConnInfo {
        mode: neg.mode,
        base_allocation: neg.base_allocation,
        flags: neg.flags,
    };
    let export = neg.export;
    let (tx, rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(writer_task(w, rx));
    let result = request_loop(&mut r, &export, &ci, &shared, tx, &mut shutdown).await;
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
    shared: &Arc<Shared>,
    tx: mpsc::UnboundedSender<Out>,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let budget = Arc::new(Semaphore::new(REPLY_BUDGET as usize));
    let ext = ci.mode == ReplyMode::Extended;
    let blocking = export.is_blocking();
    let model = export.top().thread_model();
    let conn_lock = Arc::new(parking_lot::Mutex::new(()));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    // Replies of inline requests are batched and handed to the writer once
    // per read from the socket: one wake-up and one write per batch.
    let mut batch = BytesMut::with_capacity(256 * 1024);
    let mut batch_permit: Option<OwnedSemaphorePermit> = None;
    let send_batch = |batch: &mut BytesMut, permit: &mut Option<OwnedSemaphorePermit>| {
        if !batch.is_empty() {
            let _ = tx.send(Out {
                rep: Reply {
                    head: batch.split(),
                    data: None,
                },
                permit: permit.take(),
            });
        }
    };
    loop {
        let req = loop {
            match parse_request(&mut buf, ext) {
                Ok(Some(req)) => break req,
                Ok(None) => {
                    send_batch(&mut batch, &mut batch_permit);
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
            send_batch(&mut batch, &mut batch_permit);
            return Ok(());
        }
        let cost = reply_cost(&req);
        let permit = match budget.clone().try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(_) => {
                // Hand over what is batched (it holds budget too), then
                // wait for the writer to free some.
                send_batch(&mut batch, &mut batch_permit);
                budget
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .map_err(|_| std::io::Error::other("reply budget closed"))?
            }
        };
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
        let mut keep = |permit: OwnedSemaphorePermit| match batch_permit.as_mut() {
            Some(p) => p.merge(permit),
            None => batch_permit = Some(permit),
        };
        if let Err(e) = valid {
            batch.extend_from_slice(&dispatch::error_reply(&req, ci, &e).head);
            keep(permit);
            continue;
        }
        if req.typ == CMD_WRITE && payload.is_none() && req.length > 0 {
            let e = crate::backend::BackendError::new(Errno::Inval, "write payload too large");
            batch.extend_from_slice(&dispatch::error_reply(&req, ci, &e).head);
            keep(permit);
            continue;
        }
        // Cheap calls run inline; big copies go to the pool so the next
        // request is read while this one is copied.
        if !blocking && req.length < INLINE_MAX {
            let rep = dispatch::execute(export, &req, payload, ci);
            batch.extend_from_slice(&rep.head);
            match rep.data {
                Some(d) if d.len() > COALESCE => {
                    send_batch(&mut batch, &mut batch_permit);
                    let _ = tx.send(Out {
                        rep: Reply {
                            head: BytesMut::new(),
                            data: Some(d),
                        },
                        permit: Some(permit),
                    });
                }
                Some(d) => {
                    batch.extend_from_slice(&d);
                    keep(permit);
                }
                None => keep(permit),
            }
            if batch.len() >= 256 * 1024 {
                send_batch(&mut batch, &mut batch_permit);
            }
            continue;
        }
        spawn_request(
            export.clone(),
            req,
            payload,
            *ci,
            tx.clone(),
            permit,
            model,
            &conn_lock,
            shared,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_request(
    export: Export,
    req: Request,
    payload: Option<Vec<u8>>,
    ci: ConnInfo,
    tx: mpsc::UnboundedSender<Out>,
    permit: OwnedSemaphorePermit,
    model: ThreadModel,
    conn_lock: &Arc<parking_lot::Mutex<()>>,
    shared: &Arc<Shared>,
) {
    let lock = match model {
        ThreadModel::Parallel => None,
        ThreadModel::SerializeRequests => Some(conn_lock.clone()),
        ThreadModel::SerializeAllRequests => Some(shared.global_lock.clone()),
    };
    tokio::task::spawn_blocking(move || {
        let _g = lock.as_ref().map(|l| l.lock());
        let reply = dispatch::execute(&export, &req, payload, &ci);
        let _ = tx.send(Out {
            rep: reply,
            permit: Some(permit),
        });
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

async fn writer_task<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut out = BytesMut::with_capacity(256 * 1024);
    let mut broken = false;
    // Budget of the replies in `out`, given back once they are written.
    let mut held: Vec<OwnedSemaphorePermit> = Vec::new();
    while let Some(msg) = rx.recv().await {
        if broken {
            continue;
        }
        let mut pending = Some(msg);
        while let Some(Out { rep, permit }) = pending.take() {
            held.extend(permit);
            out.extend_from_slice(&rep.head);
            if let Some(d) = rep.data {
                if d.len() <= COALESCE {
                    out.extend_from_slice(&d);
                } else {
                    if w.write_all(&out).await.is_err() || w.write_all(&d).await.is_err() {
                        broken = true;
                        break;
                    }
                    out.clear();
                }
            }
            if out.len() < 1 << 20 {
                pending = rx.try_recv().ok();
            }
        }
        if !broken && !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                broken = true;
            }
            out.clear();
        }
        if !broken && w.flush().await.is_err() {
            broken = true;
        }
        held.clear();
    }
    let _ = w.shutdown().await;
}
