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
use crate::backend::{Backend, BackendError, CacheMode, Plugin, Result};
use crate::params::{ConfigError, Params};
use parking_lot::{Condvar, Mutex};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod auth;
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

const MAX_REDIRECTS: usize = 10;

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

/// How the client connects: curl's options.
struct Options {
    connections: usize,
    timeout: Option<Duration>,
    sslverify: bool,
    roots: Option<ureq::tls::RootCerts>,
    proxy: Option<ureq::Proxy>,
    nodelay: bool,
    keepalive: bool,
    followlocation: bool,
    protocols: Option<Vec<String>>,
    cookies: Option<cookies::Jar>,
}

/// Counts connections in use, so no more than `connections=` run at once.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn take(&self) -> SlotGuard<'_> {
        let mut f = self.free.lock();
        while *f == 0 {
            self.cv.wait(&mut f);
        }
        *f -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

/// The HTTP client shared by every connection: a pooled agent, the extra
/// headers, and the limit on connections.
struct Client {
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
    slots: Slots,
    followlocation: bool,
    protocols: Option<Vec<String>>,
    cookies: Option<cookies::Jar>,
}

type Resp = ureq::http::Response<ureq::Body>;

fn header(r: &Resp, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Resolve `loc` (a Location header) against `base` (RFC 3986, by the
/// `url` crate); a base that does not parse leaves `loc` as it is.
fn join_url(base: &str, loc: &str) -> String {
    match url::Url::parse(base).and_then(|b| b.join(loc)) {
        Ok(u) => u.to_string(),
        Err(_) => loc.to_string(),
    }
}

/// Parse `bytes A-B/TOTAL` into (A, B, TOTAL).
fn content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok(),
    ))
}

impl Client {
    fn new(o: Options, headers: Vec<(String, String)>, user_agent: &str) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(o.roots.unwrap_or(ureq::tls::RootCerts::PlatformVerifier))
            .disable_verification(!o.sslverify)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(o.timeout)
            .tls_config(tls)
            .proxy(o.proxy)
            .no_delay(o.nodelay)
            .max_idle_connections(o.connections)
            .max_idle_connections_per_host(o.connections)
            .user_agent(user_agent)
            .build();
        let agent = if o.keepalive {
            ureq::Agent::with_parts(
                config,
                keepalive::connector(),
                ureq::unversioned::resolver::DefaultResolver::default(),
            )
        } else {
            config.into()
        };
        Client {
            agent,
            headers,
            slots: Slots {
                free: Mutex::new(o.connections),
                cv: Condvar::new(),
            },
            followlocation: o.followlocation,
            protocols: o.protocols,
            cookies: o.cookies,
        }
    }

    /// Where a redirect answer leads, if it may be followed.
    fn redirect(&self, url: &str, r: &Resp, st: u16) -> std::result::Result<String, String> {
        let loc = header(r, "location")
            .ok_or_else(|| format!("{url}: redirect {st} without a Location"))?;
        let to = join_url(url, &loc);
        if !self.followlocation {
            return Err(format!(
                "{url}: the server redirects ({st}) to {to}, and followlocation=false"
            ));
        }
        curlopts::check_protocol(&self.protocols, &to)?;
        Ok(to)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> std::result::Result<Resp, String> {
        let mut req = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some((a, b)) = range {
            req = req.header("Range", format!("bytes={a}-{b}"));
        }
        if let Some(c) = self.cookies.as_ref().and_then(|j| j.header(url)) {
            req = req.header("Cookie", c);
        }
        let r = req.call().map_err(|e| format!("{method} {url}: {e}"))?;
        if let Some(j) = &self.cookies {
            j.store(
                url,
                r.headers()
                    .get_all("set-cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
        }
        Ok(r)
    }

    /// Follow redirects once, find the size, and check that the server
    /// honours byte ranges. Returns the final URL and the size.
    fn resolve(&self, start: &str) -> std::result::Result<(String, u64), String> {
        let mut url = start.to_string();
        let mut head_len = None;
        let mut redirects = 0;
        // HEAD, following redirects.
        loop {
            let r = self.send("HEAD", &url, None)?;
            let st = r.status().as_u16();
            if (300..400).contains(&st) {
                let to = self.redirect(&url, &r, st)?;
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(format!("more than {MAX_REDIRECTS} redirects"));
                }
                url = to;
                continue;
            }
            if st == 200 {
                head_len = header(&r, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
            } else if st == 401 || st == 403 || st == 404 {
                return Err(format!("HEAD {url}: the server answered {st}"));
            }
            // Other answers (405, 501, ...): try a ranged GET below.
            break;
        }
        // A ranged GET of the first byte: the range check, and the size
        // when HEAD gave none. Also follows redirects if HEAD was refused.
        loop {
            if head_len == Some(0) {
                return Ok((url, 0));
            }
            let r = self.send("GET", &url, Some((0, 0)))?;
            let st = r.status().as_u16();
            match st {
                206 => {
                    let cr = header(&r, "content-range").and_then(|v| content_range(&v));
                    let size = match (cr, head_len) {
                        (Some((0, 0, Some(t))), _) => t,
                        (Some((0, 0, None)), Some(t)) => t,
                        _ => {
                            return Err(format!(
                                "GET {url} with Range: bytes=0-0 gave no usable Content-Range \
                                 and HEAD no Content-Length: cannot tell the size"
                            ))
                        }
                    };
                    drain(r);
                    if size > i64::MAX as u64 {
                        return Err(format!("the size {size} is larger than 2^63-1"));
                    }
                    return Ok((url, size));
                }
                200 => {
                    return Err(
                        "the server ignores byte-range requests (it answered a Range request \
                         with 200 and the whole file); nbdscript needs a server that supports \
                         Range (Accept-Ranges: bytes)"
                            .to_string(),
                    )
                }
                416 => {
                    let total = header(&r, "content-range")
                        .and_then(|v| v.rsplit('/').next().and_then(|t| t.trim().parse().ok()));
                    if total == Some(0) || head_len == Some(0) {
                        return Ok((url, 0));
                    }
                    return Err(format!(
                        "GET {url}: the server answered 416 for the first byte"
                    ));
                }
                300..=399 => {
                    let to = self.redirect(&url, &r, st)?;
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(format!("more than {MAX_REDIRECTS} redirects"));
                    }
                    url = to;
                }
                _ => return Err(format!("GET {url}: the server answered {st}")),
            }
        }
    }

    /// Fill `buf` from `offset` with one ranged GET (retried once when a
    /// pooled connection turns out to be closed).
    fn read(&self, url: &str, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let _slot = self.slots.take();
        let last = offset + buf.len() as u64 - 1;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.read_once(url, buf, offset, last) {
                Ok(()) => return Ok(()),
                Err((retry, msg)) if retry && tries < 2 => {
                    tracing::debug!("http: retrying after {msg}");
                }
                Err((_, msg)) => return Err(BackendError::io(format!("http: {msg}"))),
            }
        }
    }

    /// One attempt; the error says whether a retry may help.
    fn read_once(
        &self,
        url: &str,
        buf: &mut [u8],
        offset: u64,
        last: u64,
    ) -> std::result::Result<(), (bool, String)> {
        let mut r = self
            .send("GET", url, Some((offset, last)))
            .map_err(|e| (true, e))?;
        let st = r.status().as_u16();
        if st != 206 {
            return Err((
                st >= 500,
                format!("GET {url} bytes {offset}-{last}: the server answered {st}, not 206"),
            ));
        }
        match header(&r, "content-range").and_then(|v| content_range(&v)) {
            Some((a, b, _)) if a == offset && b == last => {}
            other => {
                return Err((
                    false,
                    format!("GET {url} bytes {offset}-{last}: the server sent range {other:?}"),
                ))
            }
        }
        let mut rd = r.body_mut().as_reader();
        rd.read_exact(buf)
            .map_err(|e| (true, format!("GET {url} bytes {offset}-{last}: {e}")))?;
        // Read to the end so the connection goes back to the pool.
        let mut extra = [0u8; 1];
        match rd.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err((false, format!("GET {url}: the server sent more than asked"))),
            Err(e) => Err((true, format!("GET {url}: {e}"))),
        }
    }
}

/// Read a small body to its end so its connection can be reused.
fn drain(mut r: Resp) {
    let mut sink = Vec::new();
    let _ = r
        .body_mut()
        .as_reader()
        .take(1 << 16)
        .read_to_end(&mut sink);
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
