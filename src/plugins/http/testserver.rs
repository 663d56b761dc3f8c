//! A tiny HTTP/1.1 server for tests (unit tests here, integration tests via
//! `#[path]`): keep-alive, HEAD, byte ranges, a redirect, basic auth and a
//! required header, on 127.0.0.1 only. Uses std::net and threads; never
//! used by the server itself.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the server serves and how it behaves.
#[derive(Default)]
pub struct Config {
    /// Path (`/disk.img`) to content.
    pub files: HashMap<String, Arc<Vec<u8>>>,
    /// Path to the path it redirects to (302).
    pub redirects: HashMap<String, String>,
    /// Answer Range requests with 200 and the whole body.
    pub ignore_ranges: bool,
    /// Refuse HEAD with 405 (the client must use a ranged GET).
    pub no_head: bool,
    /// `Authorization` header value required (401 otherwise).
    pub auth: Option<String>,
    /// `(name, value)` header required (403 otherwise).
    pub header: Option<(String, String)>,
    /// `Cookie` header required to read a file (403 otherwise; redirects
    /// are answered without it).
    pub cookie: Option<String>,
    /// A `Set-Cookie` header sent with every redirect.
    pub set_cookie: Option<String>,
}

/// A running server; its threads live as long as the test process.
pub struct HttpServer {
    pub port: u16,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn start(cfg: Config) -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = l.local_addr().expect("local addr").port();
        let cfg = Arc::new(cfg);
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c2, r2) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                c2.fetch_add(1, Ordering::SeqCst);
                let (cfg, r) = (cfg.clone(), r2.clone());
                std::thread::spawn(move || {
                    let _ = serve(s, &cfg, &r);
                });
            }
        });
        HttpServer {
            port,
            connections,
            requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

fn serve(s: TcpStream, cfg: &Config, requests: &AtomicUsize) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(n) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
            std::io::copy(&mut (&mut r).take(n), &mut std::io::sink())?;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let head = method == "HEAD";
        let reply = |w: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
            let h = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n",
                body.len()
            );
            w.write_all(h.as_bytes())?;
            if !head {
                w.write_all(body)?;
            }
            w.flush()
        };
        if let Some(a) = &cfg.auth {
            if get("authorization").as_deref() != Some(a.as_str()) {
                reply(
                    &mut w,
                    "401 Unauthorized",
                    "WWW-Authenticate: Basic\r\n",
                    b"",
                )?;
                continue;
            }
        }
        if let Some((k, v)) = &cfg.header {
            if get(&k.to_ascii_lowercase()).as_deref() != Some(v.as_str()) {
                reply(&mut w, "403 Forbidden", "", b"")?;
                continue;
            }
        }
        if let Some(to) = cfg.redirects.get(&path) {
            let sc = cfg
                .set_cookie
                .as_ref()
                .map(|c| format!("Set-Cookie: {c}\r\n"))
                .unwrap_or_default();
            reply(&mut w, "302 Found", &format!("Location: {to}\r\n{sc}"), b"")?;
            continue;
        }
        if let Some(c) = &cfg.cookie {
            if get("cookie").as_deref() != Some(c.as_str()) {
                reply(&mut w, "403 Forbidden", "", b"")?;
                continue;
            }
        }
        let Some(data) = cfg.files.get(&path) else {
            reply(&mut w, "404 Not Found", "", b"")?;
            continue;
        };
        if head && cfg.no_head {
            reply(&mut w, "405 Method Not Allowed", "", b"")?;
            continue;
        }
        let ranges = if cfg.ignore_ranges {
            ""
        } else {
            "Accept-Ranges: bytes\r\n"
        };
        let range = get("range").filter(|_| !cfg.ignore_ranges);
        let Some(range) = range else {
            reply(&mut w, "200 OK", ranges, data)?;
            continue;
        };
        let total = data.len() as u64;
        let spec = range.trim_start_matches("bytes=");
        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
        let a: u64 = a.parse().unwrap_or(u64::MAX);
        let b: u64 = b
            .parse()
            .unwrap_or(total.saturating_sub(1))
            .min(total.saturating_sub(1));
        if a >= total || b < a {
            reply(
                &mut w,
                "416 Range Not Satisfiable",
                &format!("Content-Range: bytes */{total}\r\n"),
                b"",
            )?;
            continue;
        }
        reply(
            &mut w,
            "206 Partial Content",
            &format!("{ranges}Content-Range: bytes {a}-{b}/{total}\r\n"),
            &data[a as usize..=b as usize],
        )?;
    }
}
