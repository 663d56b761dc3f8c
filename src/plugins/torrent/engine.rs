//! The BitTorrent side of the `torrent` plugin: a tokio runtime owned by
//! the plugin, a librqbit `Session` on it, the torrent with only the served
//! file selected, and reads through librqbit's `FileStream`s (a stream
//! prioritises the pieces after its position). Backend calls are
//! synchronous: a read is spawned on the plugin's runtime and the calling
//! worker thread waits on a std channel, so no server reactor thread ever
//! blocks and no runtime is nested. Owns the download directory (a private
//! temporary one is removed on drop). May use tokio, librqbit, `backend`;
//! must not import `server` or rhai.

use crate::backend::{BackendError, Errno, Result};
use librqbit::{
    AddTorrent, AddTorrentOptions, AddTorrentResponse, ListenerMode, ListenerOptions,
    ManagedTorrent, Session, SessionOptions,
};
use parking_lot::Mutex;
use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Streams open at once. Each holds one of librqbit's blocking permits
/// (`BLOCKING` in all), and piece writes need the rest.
const STREAMS: usize = 4;
const BLOCKING: usize = STREAMS + 4;
/// How often a waiting read logs progress (debug), and after how long it
/// says so at warn level, once.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const WARN_AFTER: Duration = Duration::from_secs(30);

/// What the command line asked for, already validated.
pub struct Options {
    /// A `.torrent` file's bytes, or a magnet link.
    pub source: Source,
    /// `file=`: a path relative to the torrent's root.
    pub file: Option<String>,
    /// `cache=`: kept after exit; `None` makes a private temp dir.
    pub cache: Option<PathBuf>,
    pub peers: Vec<SocketAddr>,
    pub trackers: Vec<String>,
    pub listen: Option<SocketAddr>,
    pub dht: bool,
    pub peer_limit: Option<usize>,
    pub download_bps: Option<std::num::NonZeroU32>,
    pub upload_bps: Option<std::num::NonZeroU32>,
    pub user_agent: Option<String>,
    pub timeout: Option<Duration>,
}

pub enum Source {
    Bytes(Vec<u8>),
    Magnet(String),
}

/// One file of a torrent as `file=` names it.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub name: String,
    pub len: u64,
    pub padding: bool,
}

/// Pick the file to serve: the one named, else the largest (the first of
/// equals), padding files never. Returns its index.
pub fn choose(files: &[FileEntry], want: Option<&str>) -> std::result::Result<usize, String> {
    let list = || {
        files
            .iter()
            .filter(|f| !f.padding)
            .map(|f| format!("{} ({} bytes)", f.name, f.len))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(w) => {
            let w = w.trim_start_matches("./");
            files
                .iter()
                .position(|f| !f.padding && f.name == w)
                .ok_or_else(|| format!("file={w}: no such file in the torrent; it has: {}", list()))
        }
        None => {
            let mut best: Option<usize> = None;
            for (i, f) in files.iter().enumerate() {
                if !f.padding && best.is_none_or(|b| f.len > files[b].len) {
                    best = Some(i);
                }
            }
            best.ok_or_else(|| "the torrent lists no files".to_string())
        }
    }
}

/// The running torrent: everything a read needs.
pub struct Engine {
    rt: Option<tokio::runtime::Runtime>,
    session: Arc<Session>,
    torrent: Arc<ManagedTorrent>,
    pub file_id: usize,
    pub file_name: String,
    pub size: u64,
    pub dir: PathBuf,
    temp_dir: bool,
    timeout: Option<Duration>,
    pool: Arc<Pool>,
}

/// librqbit's `FileStream` (which it does not export by name).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncSeek + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncSeek + Unpin + Send> Stream for T {}

/// Idle streams, and a bound on how many exist.
struct Pool {
    idle: Mutex<Vec<Box<dyn Stream>>>,
    permits: tokio::sync::Semaphore,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

/// A private download directory under $TMPDIR.
fn temp_dir() -> std::result::Result<PathBuf, String> {
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    for i in 0..100u32 {
        let d = base.join(format!("nbdscript-torrent-{}-{i}", std::process::id()));
        if std::fs::create_dir(&d).is_ok() {
            return Ok(d);
        }
    }
    Err(format!(
        "cannot create a download directory in {}; set cache=DIR",
        base.display()
    ))
}

impl Engine {
    /// Start the runtime and session, resolve the metadata (for a magnet,
    /// from peers), choose the file and start downloading it. Must not be
    /// called from inside a tokio runtime (it is called at start-up).
    pub fn start(o: Options) -> std::result::Result<Engine, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("torrent")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
        let (dir, temp_dir) = match &o.cache {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| format!("cache={}: {e}", d.display()))?;
                (d.clone(), false)
            }
            None => (temp_dir()?, true),
        };
        let started = rt.block_on(Self::start_async(&o, dir.clone()));
        let (session, torrent, file_id, file_name, size) = match started {
            Ok(v) => v,
            Err(e) => {
                rt.shutdown_background();
                if temp_dir {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        tracing::info!(
            "torrent: serving {file_name:?} ({size} bytes), downloading into {}",
            dir.display()
        );
        Ok(Engine {
            rt: Some(rt),
            session,
            torrent,
            file_id,
            file_name,
            size,
            dir,
            temp_dir,
            timeout: o.timeout,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(STREAMS),
            }),
        })
    }

    async fn start_async(
        o: &Options,
        dir: PathBuf,
    ) -> std::result::Result<(Arc<Session>, Arc<ManagedTorrent>, usize, String, u64), String> {
        // Default: every address, a random port (as librqbit's default).
        let listen = Some(match o.listen {
            Some(a) => ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: a,
                ipv4_only: a.is_ipv4(),
                ..Default::default()
            },
            None => ListenerOptions::default(),
        });
        let sopts = SessionOptions {
            dht: if o.dht {
                Some(librqbit::DhtSessionConfig {
                    persistence: None,
                    ..Default::default()
                })
            } else {
                None
            },
            disable_local_service_discovery: !o.dht,
            persistence: None,
            fastresume: false,
            listen,
            peer_limit: o.peer_limit,
            runtime_worker_threads: Some(BLOCKING),
            ratelimits: librqbit::limits::LimitsConfig {
                upload_bps: o.upload_bps,
                download_bps: o.download_bps,
            },
            client_name_and_version: o.user_agent.clone(),
            ..Default::default()
        };
        let session = Session::new_with_opts(dir.clone(), sopts)
            .await
            .map_err(|e| format!("cannot start the BitTorrent session: {e:#}"))?;
        let add = |src: &Source| match src {
            Source::Bytes(b) => AddTorrent::from_bytes(b.clone()),
            Source::Magnet(m) => AddTorrent::from_url(m.clone()),
        };
        let base_opts = || AddTorrentOptions {
            initial_peers: (!o.peers.is_empty()).then(|| o.peers.clone()),
            trackers: (!o.trackers.is_empty()).then(|| o.trackers.clone()),
            output_folder: Some(dir.display().to_string()),
            overwrite: true,
            ..Default::default()
        };
        // First only the metadata (from peers, for a magnet), to choose
        // the file; then the torrent itself with that file selected.
        let list = Self::timed(
            o.timeout,
            "resolving the torrent's metadata",
            session.add_torrent(
                add(&o.source),
                Some(AddTorrentOptions {
                    list_only: true,
                    ..base_opts()
                }),
            ),
        )
        .await?
        .map_err(|e| format!("cannot read the torrent: {e:#}"))?;
        let AddTorrentResponse::ListOnly(list) = list else {
            return Err(err(
                "librqbit did not answer a list-only request with a list",
            ));
        };
        let files: Vec<FileEntry> = list
            .info
            .iter_file_details()
            .map(|d| FileEntry {
                name: d.filename.to_vec().join("/"),
                len: d.len,
                padding: d.attrs().padding,
            })
            .collect();
        for (i, f) in files.iter().enumerate() {
            tracing::debug!("torrent: file {i}: {} ({} bytes)", f.name, f.len);
        }
        let file_id = choose(&files, o.file.as_deref())?;
        let mut peers = o.peers.clone();
        peers.extend(list.seen_peers.iter().copied());
        let resp = session
            .add_torrent(
                AddTorrent::from_bytes(list.torrent_bytes.clone()),
                Some(AddTorrentOptions {
                    only_files: Some(vec![file_id]),
                    initial_peers: (!peers.is_empty()).then_some(peers),
                    ..base_opts()
                }),
            )
            .await
            .map_err(|e| format!("cannot start the torrent: {e:#}"))?;
        let torrent = resp
            .into_handle()
            .ok_or_else(|| err("librqbit gave no handle for the added torrent"))?;
        Ok((
            session,
            torrent,
            file_id,
            files[file_id].name.clone(),
            files[file_id].len,
        ))
    }

    /// Await `f`, logging progress, failing after `timeout` if one is set.
    async fn timed<F: std::future::Future>(
        timeout: Option<Duration>,
        what: &str,
        f: F,
    ) -> std::result::Result<F::Output, String> {
        let start = Instant::now();
        tokio::pin!(f);
        let mut warned = false;
        loop {
            let step = match timeout {
                Some(t) => PROGRESS_EVERY.min(t.saturating_sub(start.elapsed())),
                None => PROGRESS_EVERY,
            };
            match tokio::time::timeout(step, &mut f).await {
                Ok(v) => return Ok(v),
                Err(_) => {
                    let waited = start.elapsed();
                    if timeout.is_some_and(|t| waited >= t) {
                        return Err(format!("timed out after {}s {what}", waited.as_secs()));
                    }
                    if !warned && waited >= WARN_AFTER {
                        warned = true;
                        tracing::warn!(
                            "torrent: still {what} after {}s: no peer has it yet \
                             (check peer=, the trackers, or dht=)",
                            waited.as_secs()
                        );
                    } else {
                        tracing::debug!("torrent: {what}: waited {}s", waited.as_secs());
                    }
                }
            }
        }
    }

    /// Fill `buf` from `offset` in the served file, waiting for the pieces.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| BackendError::new(Errno::Shutdown, "torrent: shutting down"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        let torrent = self.torrent.clone();
        let file_id = self.file_id;
        let len = buf.len();
        let task = rt.spawn(async move {
            let r = read_task(&pool, torrent, file_id, offset, len).await;
            let _ = tx.send(r);
        });
        let start = Instant::now();
        let mut warned = false;
        loop {
            match rx.recv_timeout(PROGRESS_EVERY) {
                Ok(Ok(data)) => {
                    buf.copy_from_slice(&data);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    return Err(BackendError::io(format!(
                        "torrent: read at {offset}+{len}: {e}"
                    )))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BackendError::io(format!(
                        "torrent: read at {offset}+{len}: the download task ended"
                    )))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let waited = start.elapsed();
                    let stats = self.torrent.stats();
                    if self.timeout.is_some_and(|t| waited >= t) {
                        task.abort();
                        let msg = format!(
                            "torrent: read at {offset}+{len} timed out after {}s waiting \
                             for its pieces ({stats})",
                            waited.as_secs()
                        );
                        tracing::warn!("{msg}");
                        return Err(BackendError::io(msg));
                    }
                    if !warned && waited >= WARN_AFTER {
                        warned = true;
                        tracing::warn!(
                            "torrent: a read at {offset}+{len} has waited {}s for its pieces \
                             ({stats}); set timeout= to fail such reads",
                            waited.as_secs()
                        );
                    } else {
                        tracing::debug!(
                            "torrent: read at {offset}+{len} waiting {}s: {stats}",
                            waited.as_secs()
                        );
                    }
                }
            }
        }
    }
}

/// One read on the plugin's runtime: take (or open) a stream, seek, read.
async fn read_task(
    pool: &Pool,
    torrent: Arc<ManagedTorrent>,
    file_id: usize,
    offset: u64,
    len: usize,
) -> std::result::Result<Vec<u8>, String> {
    let _permit = pool
        .permits
        .acquire()
        .await
        .map_err(|_| err("the stream pool is closed"))?;
    let idle = pool.idle.lock().pop();
    let mut s: Box<dyn Stream> = match idle {
        Some(s) => s,
        None => Box::new(
            torrent
                .stream(file_id)
                .await
                .map_err(|e| format!("cannot open a stream: {e:#}"))?,
        ),
    };
    let mut data = vec![0u8; len];
    s.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| format!("seek: {e}"))?;
    s.read_exact(&mut data)
        .await
        .map_err(|e| format!("read: {e}"))?;
    pool.idle.lock().push(s);
    Ok(data)
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Streams hold the torrent; drop them before the runtime goes.
        self.pool.idle.lock().clear();
        self.session.cancellation_token().cancel();
        if let Some(rt) = self.rt.take() {
            // May run inside the server's runtime at exit: never block here.
            rt.shutdown_background();
        }
        if self.temp_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!("torrent: cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, len: u64, padding: bool) -> FileEntry {
        FileEntry {
            name: name.into(),
            len,
            padding,
        }
    }

    #[test]
    fn choose_largest_or_named() {
        let files = [
            f("README", 10, false),
            f(".pad/1", 9999, true),
            f("disk.iso", 500, false),
            f("sub/other.img", 500, false),
        ];
        assert_eq!(choose(&files, None), Ok(2));
        assert_eq!(choose(&files, Some("sub/other.img")), Ok(3));
        assert_eq!(choose(&files, Some("./README")), Ok(0));
        let e = choose(&files, Some("nope")).unwrap_err();
        assert!(
            e.contains("disk.iso (500 bytes)") && !e.contains(".pad"),
            "{e}"
        );
        assert!(choose(&[], None).is_err());
    }
}
