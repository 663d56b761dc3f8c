//! The object-store side of the `s3` plugin: a small tokio runtime owned by
//! the plugin, and the synchronous object operations the backend calls
//! (ranged GET, HEAD, PUT, DELETE, LIST) with errors already turned into
//! `BackendError`s. Object mode's read-modify-write runs here, serialised
//! per object by striped async locks.
//! May use `backend`, tokio, futures and object_store; must not import rhai
//! or anything from `server`.

use crate::backend::{BackendError, Result};
use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::future::Future;
use std::sync::Arc;

/// How many object requests one NBD request keeps in flight at once.
const PARALLEL: usize = 16;
/// Lock stripes for read-modify-write; two objects share a lock only when
/// their numbers are equal modulo this.
const STRIPES: usize = 256;

/// The plugin's own runtime. Calls come from the server's worker threads
/// (never from inside a runtime's async context, but a channel makes that
/// safe anyway): the future is spawned here and the caller waits on a
/// std channel, so no `block_on` ever nests inside another runtime.
pub struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    pub fn new() -> std::io::Result<Runtime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nbdscript-s3")
            .enable_all()
            .build()?;
        Ok(Runtime { rt: Some(rt) })
    }

    /// Run `fut` on the plugin's runtime and wait for its result.
    pub fn run<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| BackendError::io("s3: the runtime has stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(BackendError::io("s3: the request task ended early")))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The plugin may be dropped inside the server's runtime, where a
        // blocking shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Where the disk lives: the store, the bucket (for messages) and the key.
pub struct Store {
    pub store: Arc<dyn ObjectStore>,
    pub bucket: String,
    pub key: Path,
    /// `Some(n)`: the disk is objects of n bytes named `KEY/%016x`.
    pub object_size: Option<u64>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

fn io(what: String, e: object_store::Error) -> BackendError {
    BackendError::io(format!("s3: {what}: {e}"))
}

impl Store {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        bucket: String,
        key: Path,
        object_size: Option<u64>,
    ) -> Arc<Store> {
        Arc::new(Store {
            store,
            bucket,
            key,
            object_size,
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        })
    }

    /// `s3://bucket/key` for messages.
    pub fn url(&self, p: &Path) -> String {
        format!("s3://{}/{}", self.bucket, p)
    }

    /// The name of object `n` in object mode (nbdkit's `KEY/%016x`).
    pub fn object(&self, n: u64) -> Path {
        Path::from(format!("{}/{n:016x}", self.key))
    }

    /// The object size (object mode only).
    fn osize(&self) -> u64 {
        self.object_size.unwrap_or(u64::MAX)
    }

    /// HEAD the single object: its size.
    pub async fn head_size(self: Arc<Self>) -> std::result::Result<u64, object_store::Error> {
        self.store.head(&self.key).await.map(|m| m.size)
    }

    /// One LIST page under the prefix: fails when the bucket is missing.
    pub async fn check_bucket(self: Arc<Self>) -> std::result::Result<(), object_store::Error> {
        self.store
            .list_with_delimiter(Some(&self.key))
            .await
            .map(|_| ())
    }

    /// Ranged GET of `len` bytes at `off` in `p`. `Ok(None)` when the object
    /// does not exist.
    async fn get(&self, p: &Path, off: u64, len: u64) -> Result<Option<Bytes>> {
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        match self.store.get_range(p, off..off + len).await {
            Ok(b) if b.len() as u64 == len => Ok(Some(b)),
            Ok(b) => Err(BackendError::io(format!(
                "s3: GET {} bytes {off}-{}: got {} bytes (is the object shorter than expected?)",
                self.url(p),
                off + len - 1,
                b.len()
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io(
                format!("GET {} bytes {off}-{}", self.url(p), off + len - 1),
                e,
            )),
        }
    }

    /// Read `len` bytes at `offset` of the disk.
    pub async fn read(self: Arc<Self>, len: u64, offset: u64) -> Result<Vec<u8>> {
        let Some(os) = self.object_size else {
            return match self.get(&self.key, offset, len).await? {
                Some(b) => Ok(b.to_vec()),
                None => Err(BackendError::io(format!(
                    "s3: GET {}: the object has gone",
                    self.url(&self.key)
                ))),
            };
        };
        let pieces = split(offset, len, os);
        let parts: Vec<(u64, Bytes)> = futures::stream::iter(pieces.into_iter().map(|pc| {
            let me = self.clone();
            async move {
                let p = me.object(pc.object);
                let b = me
                    .get(&p, pc.start, pc.len)
                    .await?
                    .unwrap_or_else(|| Bytes::from(vec![0u8; pc.len as usize]));
                Ok::<_, BackendError>((pc.at, b))
            }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
        let mut out = vec![0u8; len as usize];
        for (at, b) in parts {
            out[at as usize..at as usize + b.len()].copy_from_slice(&b);
        }
        Ok(out)
    }

    async fn put(&self, p: &Path, data: Bytes) -> Result<()> {
        self.store
            .put(p, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| io(format!("PUT {}", self.url(p)), e))
    }

    async fn delete(&self, p: &Path) -> Result<()> {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io(format!("DELETE {}", self.url(p)), e)),
        }
    }

    /// Write `data` at `start` inside object `n`: a whole object is one
    /// PUT, a part is GET + patch + PUT under the object's lock.
    async fn write_object(&self, n: u64, start: u64, data: Bytes) -> Result<()> {
        let os = self.osize();
        let p = self.object(n);
        let _g = self.locks[(n % STRIPES as u64) as usize].lock().await;
        if start == 0 && data.len() as u64 == os {
            return self.put(&p, data).await;
        }
        let mut whole = match self.get(&p, 0, os).await? {
            Some(b) => b.to_vec(),
            None => vec![0u8; os as usize],
        };
        whole[start as usize..start as usize + data.len()].copy_from_slice(&data);
        tracing::debug!("s3: read-modify-write of {}", self.url(&p));
        self.put(&p, Bytes::from(whole)).await
    }

    /// Write `data` at `offset` of the disk (object mode).
    pub async fn write(self: Arc<Self>, data: Bytes, offset: u64) -> Result<()> {
        let pieces = split(offset, data.len() as u64, self.osize());
        futures::stream::iter(pieces.into_iter().map(|pc| {
            let me = self.clone();
            let d = data.slice(pc.at as usize..(pc.at + pc.len) as usize);
            async move { me.write_object(pc.object, pc.start, d).await }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
    }

    /// Delete the whole objects `first..last` (those that exist).
    async fn delete_objects(self: Arc<Self>, first: u64, last: u64) -> Result<()> {
        if first >= last {
            return Ok(());
        }
        let names: Vec<u64> = if last - first <= 32 {
            (first..last).collect()
        } else {
            // Only the objects that exist: one LIST instead of many DELETEs.
            self.clone().existing(first, last).await?
        };
        futures::stream::iter(names.into_iter().map(|n| {
            let me = self.clone();
            async move {
                let _g = me.locks[(n % STRIPES as u64) as usize].lock().await;
                me.delete(&me.object(n)).await
            }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
    }

    /// Trim: delete the objects wholly inside the range; partial objects
    /// are left as they are (trim is advisory).
    pub async fn trim(self: Arc<Self>, count: u64, offset: u64) -> Result<()> {
        let os = self.osize();
        let first = offset.div_ceil(os);
        let last = (offset + count) / os;
        self.delete_objects(first, last).await
    }

    /// Write zeros over `[offset, offset+count)` object by object, sharing
    /// one zero buffer (no allocation of `count` bytes).
    async fn write_zeros(self: Arc<Self>, offset: u64, count: u64) -> Result<()> {
        let zeros = Bytes::from(vec![0u8; self.osize().min(count) as usize]);
        futures::stream::iter(split(offset, count, self.osize()).into_iter().map(|pc| {
            let me = self.clone();
            let d = zeros.slice(0..pc.len as usize);
            async move { me.write_object(pc.object, pc.start, d).await }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
    }

    /// Zero. With `punch` (the client allows holes) whole objects are
    /// deleted and the partial ends get zeros; without, every object in the
    /// range is written (NBD's NO_HOLE: it stays allocated).
    pub async fn zero(self: Arc<Self>, count: u64, offset: u64, punch: bool) -> Result<()> {
        let os = self.osize();
        let end = offset + count;
        let first = offset.div_ceil(os);
        let last = end / os;
        if !punch || first >= last {
            return self.write_zeros(offset, count).await;
        }
        let head = first * os - offset;
        if head > 0 {
            self.clone().write_zeros(offset, head).await?;
        }
        let tail = end - last * os;
        if tail > 0 {
            self.clone().write_zeros(last * os, tail).await?;
        }
        self.delete_objects(first, last).await
    }

    /// Which of the objects `first..last` exist (for extents).
    pub async fn existing(self: Arc<Self>, first: u64, last: u64) -> Result<Vec<u64>> {
        let stream = match first {
            0 => self.store.list(Some(&self.key)),
            f => self
                .store
                .list_with_offset(Some(&self.key), &self.object(f - 1)),
        };
        // Stop at the first name past the range when the store lists in
        // order (S3 does); the filter keeps it right when it does not.
        let last_name = format!("{:016x}", last);
        let metas: Vec<_> = stream
            .try_take_while(|m| {
                let past = m
                    .location
                    .filename()
                    .is_some_and(|f| f >= last_name.as_str());
                futures::future::ready(Ok(!past))
            })
            .try_collect()
            .await
            .map_err(|e| io(format!("LIST {}/", self.url(&self.key)), e))?;
        let mut v: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename())
            .filter(|f| f.len() == 16)
            .filter_map(|f| u64::from_str_radix(f, 16).ok())
            .filter(|n| (first..last).contains(n))
            .collect();
        v.sort_unstable();
        Ok(v)
    }
}

/// A piece of a disk range inside one object.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    /// The object number.
    pub object: u64,
    /// Offset inside the object.
    pub start: u64,
    /// Bytes in this object.
    pub len: u64,
    /// Offset of this piece in the caller's buffer.
    pub at: u64,
}

/// Split `[offset, offset+len)` at object boundaries.
pub fn split(offset: u64, len: u64, object_size: u64) -> Vec<Piece> {
    let mut v = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let object = pos / object_size;
        let start = pos % object_size;
        let n = (object_size - start).min(end - pos);
        v.push(Piece {
            object,
            start,
            len: n,
            at: pos - offset,
        });
        pos += n;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_boundaries() {
        assert_eq!(split(0, 0, 4), vec![]);
        assert_eq!(
            split(3, 6, 4),
            vec![
                Piece {
                    object: 0,
                    start: 3,
                    len: 1,
                    at: 0
                },
                Piece {
                    object: 1,
                    start: 0,
                    len: 4,
                    at: 1
                },
                Piece {
                    object: 2,
                    start: 0,
                    len: 1,
                    at: 5
                },
            ]
        );
        assert_eq!(
            split(8, 4, 4),
            vec![Piece {
                object: 2,
                start: 0,
                len: 4,
                at: 0
            }]
        );
    }
}
