//! The `torrent` plugin, as nbdkit's: serve one file of a BitTorrent
//! torrent (a `.torrent` file or a magnet link) read-only, downloading it
//! with librqbit; a read waits until the pieces under it have arrived, and
//! those are fetched first. This module owns the parameters and the
//! `Plugin`/`Backend` side; `engine` owns the runtime, the session and the
//! reads. May use `backend`, `params`; must not import `server` or rhai.

use super::PluginDef;
use crate::backend::{Backend, CacheMode, Plugin, Result};
use crate::params::{parse_size, ConfigError, Params};
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod engine;

use engine::{Engine, Options, Source};

pub const DEF: PluginDef = PluginDef {
    name: "torrent",
    aliases: &[],
    magic_key: Some("torrent"),
    params: &[
        ("torrent", "a .torrent file or a magnet: link (required)"),
        (
            "file",
            "the file to serve, relative to the torrent's root (default: the largest)",
        ),
        (
            "cache",
            "directory the torrent is downloaded into, kept (default: a temp dir removed at exit)",
        ),
        ("connections-limit", "most peers connected at once"),
        (
            "download-rate-limit",
            "bits per second, e.g. 10M (default 0: unlimited)",
        ),
        (
            "upload-rate-limit",
            "bits per second, e.g. 1M (default 0: unlimited)",
        ),
        (
            "listen-interfaces",
            "IP:PORT to accept peers on (first one; default [::]:random)",
        ),
        (
            "user-agent",
            "client name and version sent to peers and trackers",
        ),
        (
            "peer",
            "extension: HOST:PORT of a peer to connect to at once; repeatable",
        ),
        ("tracker", "extension: an extra announce URL; repeatable"),
        (
            "dht",
            "extension: use the DHT and local peer discovery (default true)",
        ),
        (
            "timeout",
            "extension: seconds a read (or resolving a magnet) may wait (default: no limit)",
        ),
    ],
    description: "serve a file from a BitTorrent torrent or magnet link (read-only)",
    callbacks: &["dump_plugin"],
    make,
};

fn bad(key: &str, v: &str, what: &str) -> ConfigError {
    ConfigError::new(format!("torrent: {key}={v}: {what}"))
}

/// `10M` bits per second as bytes per second for librqbit; 0 = no limit.
fn rate(p: &Params, key: &str) -> std::result::Result<Option<NonZeroU32>, ConfigError> {
    let Some(v) = p.get(key) else {
        return Ok(None);
    };
    let bits = parse_size(v).map_err(|e| bad(key, v, &e))?;
    let bytes = u32::try_from(bits / 8).map_err(|_| bad(key, v, "too large (at most 32G)"))?;
    // librqbit moves 16 KiB blocks and cannot pace below one a second.
    if bytes > 0 && bytes < 16 << 10 {
        return Err(bad(key, v, "too small: at least 128K bits a second, or 0"));
    }
    Ok(NonZeroU32::new(bytes))
}

fn addr(key: &str, v: &str) -> std::result::Result<SocketAddr, ConfigError> {
    v.to_socket_addrs()
        .map_err(|e| bad(key, v, &format!("expected HOST:PORT ({e})")))?
        .next()
        .ok_or_else(|| bad(key, v, "the name has no address"))
}

fn options(p: &Params) -> std::result::Result<Options, ConfigError> {
    p.check_known("torrent", &DEF.keys())?;
    let t = p.require("torrent", "torrent")?;
    let source = if t.starts_with("magnet:") {
        Source::Magnet(t.to_string())
    } else {
        let b = std::fs::read(t).map_err(|e| {
            bad(
                "torrent",
                t,
                &format!("cannot read the .torrent file ({e}); give a path or a magnet: link"),
            )
        })?;
        Source::Bytes(b)
    };
    let mut peers = Vec::new();
    let mut trackers = Vec::new();
    for (k, v) in &p.items {
        match k.as_str() {
            "peer" => peers.push(addr("peer", v)?),
            "tracker" if v.starts_with("http://") || v.starts_with("udp://") => {
                trackers.push(v.clone())
            }
            "tracker" => return Err(bad("tracker", v, "expected an http:// or udp:// URL")),
            _ => {}
        }
    }
    let listen = match p.get("listen-interfaces") {
        None => None,
        Some(v) => Some(addr(
            "listen-interfaces",
            v.split(',').next().unwrap_or_default().trim(),
        )?),
    };
    let peer_limit = match p.get("connections-limit") {
        None => None,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(bad("connections-limit", v, "expected a number, at least 1")),
        },
    };
    let timeout = match p.get("timeout") {
        None => None,
        Some(v) => match v.trim().trim_end_matches('s').parse::<u64>() {
            Ok(n) if n > 0 => Some(Duration::from_secs(n)),
            _ => {
                return Err(bad(
                    "timeout",
                    v,
                    "expected a whole number of seconds, at least 1",
                ))
            }
        },
    };
    Ok(Options {
        source,
        file: p.get("file").map(str::to_string),
        cache: p.get("cache").map(PathBuf::from),
        peers,
        trackers,
        listen,
        dht: p.bool("dht")?.unwrap_or(true),
        peer_limit,
        download_bps: rate(p, "download-rate-limit")?,
        upload_bps: rate(p, "upload-rate-limit")?,
        user_agent: p.get("user-agent").map(str::to_string),
        timeout,
    })
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    let o = options(p)?;
    let engine = Engine::start(o).map_err(|e| ConfigError::new(format!("torrent: {e}")))?;
    Ok(Arc::new(TorrentPlugin {
        engine: Arc::new(engine),
    }))
}

/// The process-wide plugin: one torrent download shared by every client.
pub struct TorrentPlugin {
    engine: Arc<Engine>,
}

impl Plugin for TorrentPlugin {
    fn name(&self) -> String {
        "torrent".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(TorrentHandle {
            engine: self.engine.clone(),
        }))
    }
    fn dump(&self) -> Vec<(String, String)> {
        vec![
            ("file".into(), self.engine.file_name.clone()),
            ("file_index".into(), self.engine.file_id.to_string()),
            ("size".into(), self.engine.size.to_string()),
            ("cache".into(), self.engine.dir.display().to_string()),
        ]
    }
}

/// One NBD connection over the shared download.
struct TorrentHandle {
    engine: Arc<Engine>,
}

impl Backend for TorrentHandle {
    crate::backend::read_only_source!("torrent");
    fn get_size(&self) -> Result<u64> {
        Ok(self.engine.size)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Emulate)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        crate::backend::check_read("torrent", buf.len() as u64, offset, self.engine.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.engine.read(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(items: &[(&str, &str)]) -> Params {
        Params::new(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parameters() {
        let o = options(&p(&[
            (
                "torrent",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            ),
            ("peer", "127.0.0.1:6881"),
            ("peer", "127.0.0.1:6882"),
            ("download-rate-limit", "8M"),
            ("dht", "false"),
            ("timeout", "30"),
            ("listen-interfaces", "127.0.0.1:0,127.0.0.2:0"),
        ]))
        .unwrap();
        assert_eq!(o.peers.len(), 2);
        assert_eq!(o.download_bps.map(|n| n.get()), Some(1 << 20));
        assert!(!o.dht);
        assert_eq!(o.timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        let e = |items: &[(&str, &str)]| options(&p(items)).err().unwrap().0;
        assert!(e(&[]).contains("torrent= is required"));
        assert!(e(&[("torrent", "/nonexistent.torrent")]).contains("cannot read"));
        assert!(e(&[("torrent", "magnet:?x"), ("peer", "nope")]).contains("HOST:PORT"));
        assert!(e(&[("torrent", "magnet:?x"), ("size", "1")]).contains("unknown parameter"));
        assert!(e(&[("torrent", "magnet:?x"), ("tracker", "ftp://x")]).contains("http://"));
        assert!(e(&[("torrent", "magnet:?x"), ("upload-rate-limit", "64k")]).contains("too small"));
    }
}
