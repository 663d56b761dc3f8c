//! The HTTP client the plugin shares between connections: a pooled ureq
//! agent with curl's options, the limit on connections, redirects, the
//! size and range check at start, and ranged GETs.

use super::{cookies, curlopts, keepalive};
use crate::backend::{BackendError, Result};
use parking_lot::{Condvar, Mutex};
use std::io::Read;
use std::time::Duration;

const MAX_REDIRECTS: usize = 10;

/// How the client connects: curl's options.
pub(super) struct Options {
    pub(super) connections: usize,
    pub(super) timeout: Option<Duration>,
    pub(super) sslverify: bool,
    pub(super) roots: Option<ureq::tls::RootCerts>,
    pub(super) proxy: Option<ureq::Proxy>,
    pub(super) nodelay: bool,
    pub(super) keepalive: bool,
    pub(super) followlocation: bool,
    pub(super) protocols: Option<Vec<String>>,
    pub(super) cookies: Option<cookies::Jar>,
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
pub(super) struct Client {
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
pub(super) fn join_url(base: &str, loc: &str) -> String {
    match url::Url::parse(base).and_then(|b| b.join(loc)) {
        Ok(u) => u.to_string(),
        Err(_) => loc.to_string(),
    }
}

/// Parse `bytes A-B/TOTAL` into (A, B, TOTAL).
pub(super) fn content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
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
    pub(super) fn new(o: Options, headers: Vec<(String, String)>, user_agent: &str) -> Client {
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
    pub(super) fn resolve(&self, start: &str) -> std::result::Result<(String, u64), String> {
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
    pub(super) fn read(&self, url: &str, buf: &mut [u8], offset: u64) -> Result<()> {
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
