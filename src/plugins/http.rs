//! The `http` plugin (also `curl`, nbdkit's name): serve a file from a web
//! server with ranged GETs over a pooled keep-alive client (ureq, blocking:
//! no tokio). Redirects are resolved once at start (unless
//! `followlocation=false`); the size comes from HEAD or a ranged GET; a
//! server that ignores ranges is refused. Read-only. curl's parameters as
//! nbdkit-curl-plugin: `protocols=`, `cainfo=`, `capath=`, `proxy=`,
//! cookies (`cookiefile=`, `cookiejar=`), `tcp-nodelay=`,
//! `tcp-keepalive=`; `file:` URLs
//! are served from the local file.
//! May use `backend`, `params`; must not import tokio or rhai.

use super::PluginDef;
use crate::backend::{Backend, CacheMode, Plugin, Result};
use crate::params::{ConfigError, Params};
use client::{Client, Options};
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod auth;
mod client;
mod cookies;
mod curlopts;
mod keepalive;

pub const DEF: PluginDef = PluginDef {
    name: "http",
    aliases: &["curl"],
    magic_key: Some("url"),
    params: &[
        (
            "url",
            "the http://, https:// or file:// URL of the disk image (required)",
        ),
        ("connections", "most HTTP connections in use at once (default 16)"),
        ("header", "an extra request header `Name: value`; repeatable"),
        ("cookie", "a Cookie header value sent with every request"),
        ("user", "user name for HTTP basic authentication"),
        (
            "password",
            "password: the value, `-` to prompt, `+FILE` to read a file, `-FD` to read a descriptor",
        ),
        ("sslverify", "verify the server's TLS certificate (default true)"),
        ("timeout", "seconds a whole request may take (default: no limit)"),
        ("user-agent", "the User-Agent header (default nbdscript/VERSION)"),
        (
            "protocols",
            "PROTO,PROTO,...: the URL schemes allowed, also after a redirect (default: any)",
        ),
        ("cainfo", "PEM file of the CA certificates that verify the server (empty: none)"),
        ("capath", "directory of PEM CA certificates that verify the server"),
        ("cookiefile", "enable cookies, starting from this Netscape cookie file (empty: none)"),
        ("cookiejar", "enable cookies and write them back to this file"),
        ("followlocation", "follow redirects (default true)"),
        ("proxy", "proxy URL; requests go through it with HTTP CONNECT"),
        ("proxy-user", "user name for the proxy"),
        ("proxy-password", "proxy password: the value, `-`, `+FILE` or `-FD`"),
        ("tcp-keepalive", "TCP keepalive on the connections (default false)"),
        ("tcp-nodelay", "disable Nagle's algorithm (default true)"),
    ],
    description: "serve a disk image from a web server with range requests (read-only)",
    callbacks: &["dump_plugin"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("http", &DEF.keys())?;
    let url = p.require("url", "http")?.to_string();
    let protocols = curlopts::parse_protocols(p.get("protocols"))?;
    curlopts::check_protocol(&protocols, &url)
        .map_err(|e| ConfigError::new(format!("http: url={e}")))?;
    if curlopts::scheme(&url) == "file" {
        return local_file(&url);
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::new(format!(
            "http: url={url}: only http://, https:// and file:// URLs are accepted"
        )));
    }
    let connections = match p.get("connections") {
        None => 16,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(format!(
                    "http: connections={v}: expected a number from 1 to 1024"
                )))
            }
        },
    };
    let timeout = match p.get("timeout") {
        None => None,
        Some(v) => match v.trim().trim_end_matches('s').parse::<u64>() {
            Ok(n) if n > 0 => Some(Duration::from_secs(n)),
            _ => {
                return Err(ConfigError::new(format!(
                    "http: timeout={v}: expected a whole number of seconds, at least 1"
                )))
            }
        },
    };
    let sslverify = p.bool("sslverify")?.unwrap_or(true);
    let mut headers: Vec<(String, String)> = Vec::new();
    for (k, v) in &p.items {
        if k == "header" {
            let (name, value) = v
                .split_once(':')
                .filter(|(n, _)| !n.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::new(format!(
                        "http: header={v}: expected `Name: value`, e.g. header='X-Token: abc'"
                    ))
                })?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if let Some(c) = p.get("cookie") {
        headers.push(("Cookie".into(), c.to_string()));
    }
    match (p.get("user"), p.get("password")) {
        (Some(u), pw) => {
            let pw = match pw {
                Some(v) => auth::read_password(v)
                    .map_err(|e| ConfigError::new(format!("http: password=: {e}")))?,
                None => String::new(),
            };
            headers.push(("Authorization".into(), auth::basic(u, &pw)));
        }
        (None, Some(_)) => return Err(ConfigError::new("http: password= needs user= as well")),
        (None, None) => {}
    }
    let ua = p
        .get("user-agent")
        .map(str::to_string)
        .unwrap_or_else(|| format!("nbdscript/{}", env!("CARGO_PKG_VERSION")));
    let opts = Options {
        connections,
        timeout,
        sslverify,
        roots: curlopts::root_certs(p.get("cainfo"), p.get("capath"))?,
        proxy: curlopts::proxy(p.get("proxy"), p.get("proxy-user"), p.get("proxy-password"))?,
        nodelay: p.bool("tcp-nodelay")?.unwrap_or(true),
        keepalive: p.bool("tcp-keepalive")?.unwrap_or(false),
        followlocation: p.bool("followlocation")?.unwrap_or(true),
        protocols,
        cookies: cookies::Jar::new(p.get("cookiefile"), p.get("cookiejar"))?,
    };
    let client = Client::new(opts, headers, &ua);
    let (url, size) = client
        .resolve(&url)
        .map_err(|e| ConfigError::new(format!("http: url={url}: {e}")))?;
    Ok(Arc::new(HttpPlugin {
        inner: Arc::new(Shared { client, url, size }),
    }))
}

/// `file:` URLs: the local file, through the file plugin (writable
/// unless `-r`, as nbdkit-curl-plugin's `file:` URLs are).
fn local_file(url: &str) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    let path =
        curlopts::file_url_path(url).map_err(|e| ConfigError::new(format!("http: url={e}")))?;
    (super::file::DEF.make)(&Params::new(vec![("file".into(), path)]))
        .map_err(|e| ConfigError::new(format!("http: url={url}: {}", e.0)))
}

struct Shared {
    client: Client,
    url: String,
    size: u64,
}

/// The process-wide plugin: the client and what was resolved at start.
pub struct HttpPlugin {
    inner: Arc<Shared>,
}

impl Plugin for HttpPlugin {
    fn name(&self) -> String {
        "http".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(HttpHandle {
            inner: self.inner.clone(),
        }))
    }
    fn dump(&self) -> Vec<(String, String)> {
        vec![
            ("url".into(), self.inner.url.clone()),
            ("size".into(), self.inner.size.to_string()),
        ]
    }
}

/// One NBD connection: shares the client and its pool with every other.
struct HttpHandle {
    inner: Arc<Shared>,
}

impl Backend for HttpHandle {
    crate::backend::read_only_source!("http");
    fn get_size(&self) -> Result<u64> {
        Ok(self.inner.size)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::None)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        crate::backend::check_read("http", buf.len() as u64, offset, self.inner.size)?;
        self.inner.client.read(&self.inner.url, buf, offset)
    }
}

#[cfg(test)]
pub mod testserver;

#[cfg(test)]
mod tests;
