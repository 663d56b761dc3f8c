//! The torrent plugin end to end with no outside network: torrents made
//! with mktorrent, seeded by aria2c on 127.0.0.1 (a different BitTorrent
//! implementation from librqbit), served by the real binary with `peer=`
//! and checked with nbdinfo, nbdsh and nbdcopy against the original bytes.
//! aria2c and mktorrent are installed by scripts/test; a missing one fails
//! the test.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic bytes, different for each seed.
fn sample(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn need(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} is missing: the torrent tests need it (scripts/test installs aria2 and mktorrent)"
    );
}

/// `mktorrent -l 2^LOG2 -o OUT TARGET`, returns OUT.
fn mktorrent(target: &Path, out: &Path, log2_piece: u32) -> String {
    need("mktorrent");
    run_ok(
        "mktorrent",
        &[
            "-l",
            &log2_piece.to_string(),
            "-o",
            &out.display().to_string(),
            &target.display().to_string(),
        ],
    );
    out.display().to_string()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// An aria2c seeding one torrent from a directory on 127.0.0.1; killed
/// when dropped.
struct Seeder {
    child: Child,
    port: u16,
}

impl Seeder {
    /// Seed `torrent` whose data is under `dir`; returns once the port
    /// accepts connections (aria2c opens it after checking the data).
    fn start(torrent: &str, dir: &Path) -> Seeder {
        need("aria2c");
        let port = free_port();
        let child = Command::new("aria2c")
            .args([
                "--seed-ratio=0.0",
                "--check-integrity=true",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--disable-ipv6=true",
                "--interface=127.0.0.1",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--bt-tracker-connect-timeout=1",
                &format!("--listen-port={port}"),
                "-d",
                &dir.display().to_string(),
                torrent,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aria2c");
        let mut s = Seeder { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("aria2c exited ({st}) before it listened on {port}");
            }
            assert!(Instant::now() < deadline, "aria2c never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn peer(&self) -> String {
        format!("peer=127.0.0.1:{}", self.port)
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags every test server gets: no DHT/LSD, listen on loopback, and
/// a timeout so a broken download fails instead of hanging the suite.
const LOCAL: [&str; 3] = ["dht=false", "listen-interfaces=127.0.0.1:0", "timeout=60"];

fn args<'a>(torrent: &'a str, seeder: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["torrent", torrent, seeder];
    v.extend(LOCAL);
    v.extend(extra);
    v
}

fn sha256(data: &[u8], dir: &Path) -> String {
    let p = dir.join("hash.tmp");
    std::fs::write(&p, data).expect("write");
    let out = run_ok("sha256sum", &[&p.display().to_string()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Random reads (before anything else, so they arrive out of order),
/// a refused write, and the size and flags nbdinfo sees.
fn check_export(s: &Server, file: &Path, size: usize) {
    let out = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(out.contains(&format!("\"export-size\": {size}")), "{out}");
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains("\"can_multi_conn\": true"), "{out}");
    assert!(out.contains("\"can_fua\": false"), "{out}");
    s.nbdsh(&format!(
        r#"
import random
data = open({f:?}, "rb").read()
assert h.get_size() == len(data) == {size}
r = random.Random(11)
for i in range(60):
    n = r.choice([1, 512, 4096, 70000, 300000])
    off = r.randrange(0, len(data) - n)
    assert h.pread(n, off) == data[off:off+n], (off, n)
assert h.pread(1, len(data) - 1) == data[-1:]
try:
    h.pwrite(b"x", 0)
    assert False, "a write must fail"
except nbd.Error as e:
    pass
"#,
        f = file.display().to_string()
    ));
}

#[test]
fn torrent_single_file_from_aria2c_seeder() {
    let d = tempfile::tempdir().unwrap();
    let seed_dir = d.path().join("seed");
    std::fs::create_dir(&seed_dir).unwrap();
    let size = (3 << 20) + 12345; // not a multiple of the piece size
    let data = sample(size, 5);
    let file = seed_dir.join("disk.img");
    std::fs::write(&file, &data).unwrap();
    let t = mktorrent(&file, &d.path().join("disk.torrent"), 16);
    let seeder = Seeder::start(&t, &seed_dir);
    let peer = seeder.peer();

    let s = Server::start(&args(&t, &peer, &[]));
    check_export(&s, &file, size);
    let (st, err) = s.stop();
    assert_eq!(st, Some(0), "server log: {err}");

    // The whole file through nbdcopy in captive mode, by hash; with
    // TMPDIR private, to see the default download directory go away.
    let tmp = tempfile::tempdir().unwrap();
    let out = nbdscript()
        .env("PATH", sys_path())
        .env("TMPDIR", tmp.path())
        .args(args(&t, &peer, &[]))
        .arg("--run")
        .arg("nbdcopy \"$uri\" -")
        .output()
        .expect("run nbdscript");
    assert!(
        out.status.success(),
        "nbdscript torrent --run nbdcopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), size);
    assert_eq!(sha256(&out.stdout, d.path()), sha256(&data, d.path()));
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "download dir not removed: {left:?}");
}

#[test]
fn torrent_multi_file_and_file_param_and_cache() {
    let d = tempfile::tempdir().unwrap();
    let seed_dir = d.path().join("seed");
    let root = seed_dir.join("set");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let big = sample((2 << 20) + 777, 1);
    let small = sample((1 << 20) + 3, 2);
    std::fs::write(root.join("README"), b"read me\n").unwrap();
    std::fs::write(root.join("big.img"), &big).unwrap();
    std::fs::write(root.join("sub/small.img"), &small).unwrap();
    let t = mktorrent(&root, &d.path().join("set.torrent"), 15);
    let seeder = Seeder::start(&t, &seed_dir);
    let peer = seeder.peer();

    // Default: the largest file.
    let s = Server::start(&args(&t, &peer, &[]));
    check_export(&s, &root.join("big.img"), big.len());
    drop(s);

    // file= picks another; cache= keeps what was downloaded.
    let cache = d.path().join("cache");
    let cache_arg = format!("cache={}", cache.display());
    let s = Server::start(&args(&t, &peer, &["file=sub/small.img", &cache_arg]));
    check_export(&s, &root.join("sub/small.img"), small.len());
    assert!(read_all(&s.uri) == small, "file=sub/small.img bytes differ");
    let (st, err) = s.stop();
    assert_eq!(st, Some(0), "server log: {err}");
    let kept = walk(&cache)
        .into_iter()
        .find(|p| p.ends_with("sub/small.img"))
        .unwrap_or_else(|| panic!("cache= kept no sub/small.img: {:?}", walk(&cache)));
    assert!(
        std::fs::read(kept).unwrap() == small,
        "the cached file differs"
    );

    // An unknown file= is refused at start, naming the files there are.
    let e = Server::try_start(&args(&t, &peer, &["file=nope.img"]))
        .err()
        .expect("file=nope.img must be refused");
    assert!(e.contains("nope.img") && e.contains("sub/small.img"), "{e}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn torrent_magnet_link_metadata_from_peer() {
    let d = tempfile::tempdir().unwrap();
    let seed_dir = d.path().join("seed");
    std::fs::create_dir(&seed_dir).unwrap();
    let data = sample(1 << 20, 9);
    let file = seed_dir.join("m.img");
    std::fs::write(&file, &data).unwrap();
    let t = mktorrent(&file, &d.path().join("m.torrent"), 15);
    let show = run_ok("aria2c", &["-S", &t]);
    let magnet = show
        .lines()
        .find_map(|l| l.strip_prefix("Magnet URI: "))
        .unwrap_or_else(|| panic!("no magnet in aria2c -S: {show}"))
        .trim()
        .to_string();
    let seeder = Seeder::start(&t, &seed_dir);
    let peer = seeder.peer();
    let got = nbdscript_bytes(&args(&magnet, &peer, &[])).expect("nbdscript torrent magnet");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes through the magnet link differ");
}

#[test]
fn torrent_read_without_peers_times_out_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("lonely.img");
    std::fs::write(&file, sample(100_000, 3)).unwrap();
    let t = mktorrent(&file, &d.path().join("lonely.torrent"), 15);
    // Nobody listens on this port.
    let peer = format!("peer=127.0.0.1:{}", free_port());
    let s = Server::start(&[
        "torrent",
        &t,
        &peer,
        "dht=false",
        "listen-interfaces=127.0.0.1:0",
        "timeout=2",
    ]);
    let out = run_ok("nbdinfo", &["--size", &s.uri]);
    assert_eq!(out.trim(), "100000");
    let started = Instant::now();
    let out = s.nbdsh_output(&[], "h.pread(512, 0)");
    assert!(!out.status.success(), "a read with no peer must fail");
    let cerr = String::from_utf8_lossy(&out.stderr);
    assert!(cerr.contains("Input/output error"), "nbdsh: {cerr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (_, err) = s.stop();
    assert!(err.contains("timed out"), "server log: {err}");
}

/// A minimal HTTP tracker on 127.0.0.1: every announce is answered with
/// one peer, 127.0.0.1:`peer_port` (compact form). Counts the announces
/// from librqbit (peer id `-rQ...`).
struct Tracker {
    port: u16,
    peer_port: Arc<AtomicU16>,
    ours: Arc<AtomicUsize>,
}

impl Tracker {
    fn start() -> Tracker {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind tracker");
        let port = l.local_addr().expect("addr").port();
        let peer_port = Arc::new(AtomicU16::new(0));
        let ours = Arc::new(AtomicUsize::new(0));
        let (pp, n) = (peer_port.clone(), ours.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let line = line.lines().next().unwrap_or_default();
                if !line.starts_with("GET /announce?") {
                    let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    continue;
                }
                if line.contains("peer_id=-rQ") {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                let mut body = b"d8:intervali60e5:peers6:".to_vec();
                body.extend_from_slice(&[127, 0, 0, 1]);
                body.extend_from_slice(&pp.load(Ordering::SeqCst).to_be_bytes());
                body.push(b'e');
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(&body);
            }
        });
        Tracker {
            port,
            peer_port,
            ours,
        }
    }
}

#[test]
fn torrent_peers_from_an_http_tracker() {
    let d = tempfile::tempdir().unwrap();
    let seed_dir = d.path().join("seed");
    std::fs::create_dir(&seed_dir).unwrap();
    let data = sample((1 << 20) + 1, 4);
    let file = seed_dir.join("t.img");
    std::fs::write(&file, &data).unwrap();
    let tracker = Tracker::start();
    need("mktorrent");
    let announce = format!("http://127.0.0.1:{}/announce", tracker.port);
    let t = d.path().join("t.torrent").display().to_string();
    run_ok(
        "mktorrent",
        &[
            "-a",
            &announce,
            "-l",
            "15",
            "-o",
            &t,
            &file.display().to_string(),
        ],
    );
    let seeder = Seeder::start(&t, &seed_dir);
    tracker.peer_port.store(seeder.port, Ordering::SeqCst);
    // No peer=: the only way to the seeder is the torrent's tracker.
    let got = nbdscript_bytes(&[
        "torrent",
        &t,
        "dht=false",
        "listen-interfaces=127.0.0.1:0",
        "timeout=60",
    ])
    .expect("nbdscript torrent via its tracker");
    assert!(got == data, "bytes through the tracker's peer differ");
    assert!(
        tracker.ours.load(Ordering::SeqCst) > 0,
        "the tracker saw no announce from nbdscript"
    );
}

#[test]
fn torrent_reads_fetch_their_pieces_first() {
    // 16 MiB at 4 Mbit/s takes 32 s to download in full; reads far into
    // the file must come back long before their turn in order would.
    let d = tempfile::tempdir().unwrap();
    let seed_dir = d.path().join("seed");
    std::fs::create_dir(&seed_dir).unwrap();
    let data = sample(16 << 20, 8);
    let file = seed_dir.join("slow.img");
    std::fs::write(&file, &data).unwrap();
    let t = mktorrent(&file, &d.path().join("slow.torrent"), 16);
    let seeder = Seeder::start(&t, &seed_dir);
    let peer = seeder.peer();
    let s = Server::start(&args(&t, &peer, &["download-rate-limit=4M"]));
    let out = s.nbdsh(&format!(
        r#"
import time
data = open({f:?}, "rb").read()
start = time.time()
for off in [12 << 20, 2 << 20, 7 << 20, 14 << 20]:
    t = time.time()
    assert h.pread(65536, off) == data[off:off + 65536], off
    print("read at", off, "took", round(time.time() - t, 2))
print("total", round(time.time() - start, 2))
"#,
        f = file.display().to_string()
    ));
    let total: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in {out}"));
    assert!(
        total < 12.0,
        "reads waited {total}s: their pieces were not fetched first\n{out}"
    );
}
