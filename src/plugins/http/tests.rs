//! Unit tests of the http plugin against the in-process test server.

use super::client::{content_range, join_url};
use super::testserver::{Config, HttpServer};
use super::*;
use crate::backend::Errno;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn server(cfg: Config) -> HttpServer {
    HttpServer::start(cfg)
}

fn files(d: &[u8]) -> HashMap<String, Arc<Vec<u8>>> {
    HashMap::from([("/disk.img".to_string(), Arc::new(d.to_vec()))])
}

fn params(v: &[(&str, &str)]) -> Params {
    Params::new(
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

fn open(p: &Params) -> std::result::Result<Arc<dyn Backend>, String> {
    let plugin = make(p).map_err(|e| e.0)?;
    plugin.open(true, "").map_err(|e| e.message)
}

#[test]
fn ranged_reads_and_keepalive() {
    let d = data(300_000);
    let s = server(Config {
        files: files(&d),
        ..Default::default()
    });
    let h = open(&params(&[("url", &s.url("/disk.img"))])).unwrap();
    assert_eq!(h.get_size().unwrap(), 300_000);
    assert!(!h.can_write().unwrap());
    assert!(h.can_multi_conn().unwrap());
    for &(off, len) in &[
        (0usize, 1usize),
        (4096, 65536),
        (299_999, 1),
        (123, 200_000),
    ] {
        let mut b = vec![0u8; len];
        h.pread(&mut b, off as u64, 0).unwrap();
        assert_eq!(&b[..], &d[off..off + len], "{off}+{len}");
    }
    for i in 0..50u64 {
        let mut b = vec![0u8; 512];
        h.pread(&mut b, i * 512, 0).unwrap();
    }
    // Keep-alive: the 50 sequential reads reused a pooled connection.
    assert!(
        s.connections.load(Ordering::SeqCst) <= 2,
        "{}",
        s.connections.load(Ordering::SeqCst)
    );
    let mut b = vec![0u8; 2];
    assert_eq!(h.pread(&mut b, 299_999, 0).unwrap_err().errno, Errno::Inval);
    assert_eq!(h.pwrite(&b, 0, 0).unwrap_err().errno, Errno::Perm);
}

#[test]
fn redirect_resolved_once() {
    let d = data(10_000);
    let s = server(Config {
        files: files(&d),
        redirects: HashMap::from([
            ("/old".to_string(), "/mid".to_string()),
            ("/mid".to_string(), "disk.img".to_string()),
        ]),
        ..Default::default()
    });
    let p = make(&params(&[("url", &s.url("/old"))])).unwrap();
    let dump: HashMap<_, _> = p.dump().into_iter().collect();
    assert_eq!(dump["url"], s.url("/disk.img"));
    let h = p.open(true, "").unwrap();
    let before = s.requests.load(Ordering::SeqCst);
    let mut b = vec![0u8; 100];
    h.pread(&mut b, 50, 0).unwrap();
    assert_eq!(&b[..], &d[50..150]);
    assert_eq!(
        s.requests.load(Ordering::SeqCst) - before,
        1,
        "one request per read"
    );
}

#[test]
fn ignored_ranges_are_refused() {
    let s = server(Config {
        files: files(&data(1000)),
        ignore_ranges: true,
        ..Default::default()
    });
    let e = open(&params(&[("url", &s.url("/disk.img"))]))
        .err()
        .expect("must fail");
    assert!(e.contains("ignores byte-range"), "{e}");
}

#[test]
fn size_from_ranged_get_without_head() {
    let d = data(5000);
    let s = server(Config {
        files: files(&d),
        no_head: true,
        ..Default::default()
    });
    let h = open(&params(&[("url", &s.url("/disk.img"))])).unwrap();
    assert_eq!(h.get_size().unwrap(), 5000);
}

#[test]
fn auth_and_headers() {
    let d = data(2048);
    let s = server(Config {
        files: files(&d),
        auth: Some(auth::basic("alice", "pw")),
        header: Some(("X-Token".into(), "abc".into())),
        ..Default::default()
    });
    let url = s.url("/disk.img");
    let e = open(&params(&[("url", &url)])).err().expect("must fail");
    assert!(e.contains("401"), "{e}");
    let e = open(&params(&[
        ("url", &url),
        ("user", "alice"),
        ("password", "pw"),
    ]))
    .err()
    .expect("must fail");
    assert!(e.contains("403"), "{e}");
    let h = open(&params(&[
        ("url", &url),
        ("user", "alice"),
        ("password", "pw"),
        ("header", "X-Token: abc"),
    ]))
    .unwrap();
    let mut b = vec![0u8; 2048];
    h.pread(&mut b, 0, 0).unwrap();
    assert_eq!(b, d);
}

#[test]
fn connections_limit_parallel_reads() {
    let d = Arc::new(data(1 << 20));
    let s = server(Config {
        files: files(&d),
        ..Default::default()
    });
    let h = open(&params(&[
        ("url", &s.url("/disk.img")),
        ("connections", "2"),
    ]))
    .unwrap();
    std::thread::scope(|sc| {
        for t in 0..6u64 {
            let (h, d) = (h.clone(), d.clone());
            sc.spawn(move || {
                for i in 0..20u64 {
                    let off = ((t * 20 + i) * 7919 * 64) % ((1 << 20) - 65536);
                    let mut b = vec![0u8; 65536];
                    h.pread(&mut b, off, 0).unwrap();
                    assert_eq!(&b[..], &d[off as usize..off as usize + 65536]);
                }
            });
        }
    });
    let c = s.connections.load(Ordering::SeqCst);
    assert!(c <= 3, "connections=2 opened {c} TCP connections");
}

#[test]
fn bad_params() {
    let e = make(&params(&[("url", "ftp://x/y")])).err().unwrap();
    assert!(e.0.contains("ftp://x/y"), "{e}");
    let e = make(&params(&[
        ("url", "http://127.0.0.1:1/x"),
        ("connections", "0"),
    ]))
    .err()
    .unwrap();
    assert!(e.0.contains("connections=0"), "{e}");
    let e = make(&params(&[
        ("url", "http://127.0.0.1:1/x"),
        ("header", "nocolon"),
    ]))
    .err()
    .unwrap();
    assert!(e.0.contains("header=nocolon"), "{e}");
    assert!(make(&params(&[
        ("url", "http://127.0.0.1:1/x"),
        ("timeout", "soon")
    ]))
    .is_err());
    assert!(make(&params(&[
        ("url", "http://127.0.0.1:1/x"),
        ("password", "x")
    ]))
    .is_err());
}

#[test]
fn url_joining() {
    assert_eq!(join_url("http://h:1/a/b?q", "c"), "http://h:1/a/c");
    assert_eq!(join_url("http://h:1/a/b", "/c"), "http://h:1/c");
    assert_eq!(join_url("http://h:1", "c"), "http://h:1/c");
    assert_eq!(join_url("https://h/a", "//g/x"), "https://g/x");
    assert_eq!(join_url("http://h/a", "http://o/p"), "http://o/p");
    assert_eq!(join_url("http://h/a/b/c", "../d?x=1"), "http://h/a/d?x=1");
    assert_eq!(join_url("http://h/a b", "c d"), "http://h/c%20d");
    assert_eq!(content_range("bytes 0-0/1234"), Some((0, 0, Some(1234))));
    assert_eq!(content_range("bytes 5-9/*"), Some((5, 9, None)));
}

#[test]
fn timeout_gives_up_on_a_silent_server() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accept and hold connections without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    let url = format!("http://127.0.0.1:{port}/disk.img");
    let t = std::time::Instant::now();
    let e = make(&params(&[("url", &url), ("timeout", "1")]))
        .err()
        .expect("times out");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        e.0.to_lowercase().contains("timeout") || e.0.contains("timed out"),
        "{e}"
    );
}
