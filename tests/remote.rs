//! Remote and packed sources through the real binary and real clients:
//! the xz filter, the http (curl) plugin against an in-test HTTP server on
//! 127.0.0.1, and tmpdisk; each compared byte for byte with nbdkit's.

use crate::common::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

#[path = "../src/plugins/http/testserver.rs"]
pub mod httpd;

/// Deterministic, partly compressible bytes.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u32 = 99;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (i / 8192) % 2 == 0 {
                (i % 253) as u8
            } else {
                (x >> 16) as u8
            }
        })
        .collect()
}

fn xz(data: &[u8], args: &[&str]) -> Vec<u8> {
    let mut c = Command::new("xz")
        .args(["-c", "-T1"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run xz");
    let mut stdin = c.stdin.take().expect("stdin");
    let d = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&d));
    let out = c.wait_with_output().expect("xz");
    w.join().expect("writer").expect("write to xz");
    assert!(out.status.success(), "xz failed");
    out.stdout
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p.display().to_string()
}

fn serve(files: &[(&str, Vec<u8>)]) -> httpd::HttpServer {
    httpd::HttpServer::start(httpd::Config {
        files: files
            .iter()
            .map(|(n, d)| (n.to_string(), Arc::new(d.clone())))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    })
}

#[test]
fn xz_same_bytes_as_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let data = sample(3 << 20);
    let f = write(
        d.path(),
        "disk.img.xz",
        &xz(&data, &["--block-size=256KiB"]),
    );
    let ours = nbdscript_bytes(&["file", &f, "--filter=xz"]).expect("nbdscript xz");
    let theirs = nbdkit_bytes(&["--filter=xz", "file", &f]).expect("nbdkit xz");
    assert_eq!(ours.len(), data.len());
    assert!(
        ours == data,
        "nbdscript's xz bytes differ from the original"
    );
    assert!(ours == theirs, "nbdscript's xz bytes differ from nbdkit's");

    // Random reads with a small LRU, and what nbdinfo sees.
    let s = Server::start(&["file", &f, "--filter=xz", "xz-max-depth=2"]);
    let out = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(out.contains("\"export-size\": 3145728"), "{out}");
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    s.nbdsh(&format!(
        r#"
import random
data = open({path:?}, "rb").read()
import lzma
data = lzma.decompress(data)
r = random.Random(7)
for i in range(200):
    n = r.choice([1, 512, 4096, 65536, 300000])
    off = r.randrange(0, len(data) - n)
    assert h.pread(n, off) == data[off:off+n], (off, n)
try:
    h.pwrite(b"x", 0)
    assert False, "write must fail"
except nbd.Error as e:
    pass
"#,
        path = f
    ));
}

#[test]
fn xz_one_big_block_is_refused_with_advice() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "big.xz", &xz(&sample(1 << 20), &[]));
    let s = Server::start(&["file", &f, "--filter=xz", "xz-max-block=256K"]);
    let out = run("nbdinfo", &[&s.uri]);
    assert!(!out.status.success(), "the connection must be refused");
    let (_, err) = s.stop();
    assert!(err.contains("xz --block-size=16MiB"), "server log: {err}");
}

#[test]
fn http_same_bytes_as_nbdkit_curl() {
    let data = sample(2 << 20);
    let srv = serve(&[("/disk.img", data.clone())]);
    let url = srv.url("/disk.img");
    let ours = nbdscript_bytes(&["http", &url]).expect("nbdscript http");
    let alias = nbdscript_bytes(&["curl", &format!("url={url}")]).expect("nbdscript curl");
    let theirs = nbdkit_bytes(&["-r", "curl", &url]).expect("nbdkit curl");
    assert!(ours == data, "http bytes differ from the file");
    assert!(alias == data, "curl alias bytes differ");
    assert!(theirs == data, "nbdkit curl bytes differ");

    let s = Server::start(&["http", &url, "connections=4"]);
    let out = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(out.contains("\"export-size\": 2097152"), "{out}");
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains("\"can_multi_conn\": true"), "{out}");
    // Random reads checked against the data.
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "disk.img", &data);
    s.nbdsh(&format!(
        r#"
import random
data = open({f:?}, "rb").read()
r = random.Random(3)
for i in range(100):
    n = r.choice([1, 4096, 65536, 1 << 20])
    off = r.randrange(0, len(data) - n)
    assert h.pread(n, off) == data[off:off+n], (off, n)
"#
    ));
    run_ok(
        "qemu-io",
        &[
            "-r",
            "--image-opts",
            &s.qemu_opts(),
            "-c",
            "read -P 0 0 0",
            "-c",
            "readv 0 4096 4096",
        ],
    );
}

#[test]
fn http_refuses_a_server_that_ignores_ranges() {
    let srv = httpd::HttpServer::start(httpd::Config {
        files: HashMap::from([("/disk.img".to_string(), Arc::new(sample(4096)))]),
        ignore_ranges: true,
        ..Default::default()
    });
    let e = Server::try_start(&["http", &srv.url("/disk.img")])
        .err()
        .expect("must refuse");
    assert!(e.contains("ignores byte-range"), "{e}");
    let e = Server::try_start(&["http", &srv.url("/missing")])
        .err()
        .expect("404");
    assert!(e.contains("404"), "{e}");
}

#[test]
fn http_then_xz_like_nbdkit() {
    let data = sample(2 << 20);
    let srv = serve(&[("/disk.img.xz", xz(&data, &["--block-size=128KiB"]))]);
    let url = srv.url("/disk.img.xz");
    let ours = nbdscript_bytes(&["http", &url, "--filter=xz"]).expect("nbdscript");
    let theirs = nbdkit_bytes(&["-r", "--filter=xz", "curl", &url]).expect("nbdkit");
    assert!(ours == data, "http+xz bytes differ from the original");
    assert!(ours == theirs, "http+xz bytes differ from nbdkit's");
}

/// Run `PROG ARGS --run CMD` with TMPDIR set; returns stdout.
fn tmpdisk_run(prog: &str, tmp: &Path, args: &[&str], cmd: &str) -> String {
    let mut c = if prog == "nbdkit" {
        let mut c = Command::new("nbdkit");
        c.arg("-U").arg("-");
        c
    } else {
        nbdscript()
    };
    let out = c
        .args(args)
        .arg("--run")
        .arg(cmd)
        .env("PATH", sys_path())
        .env("TMPDIR", tmp)
        .output()
        .expect("run server");
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const TMPDISK_CHECK: &str = r#"export uri; nbdsh -u "$uri" -c '
import os
h2 = nbd.NBD()
h2.connect_uri(os.environ["uri"])
print(h.get_size(), h.pread(2, 1080).hex(), h.can_multi_conn())
h.pwrite(b"A" * 512, 8 << 20)
assert h.pread(512, 8 << 20) == b"A" * 512
assert h2.pread(512, 8 << 20) != b"A" * 512, "two clients share a disk"
assert h2.pread(2, 1080).hex() == "53ef"
print("files", len([f for f in os.listdir(os.environ["TMPDIR"]) if f.startswith("tmpdisk")]))
'"#;

#[test]
fn tmpdisk_like_nbdkit() {
    let ours_dir = tempfile::tempdir().unwrap();
    let theirs_dir = tempfile::tempdir().unwrap();
    let ours = tmpdisk_run(
        "nbdscript",
        ours_dir.path(),
        &["tmpdisk", "32M"],
        TMPDISK_CHECK,
    );
    let theirs = tmpdisk_run(
        "nbdkit",
        theirs_dir.path(),
        &["tmpdisk", "32M"],
        TMPDISK_CHECK,
    );
    assert!(ours.starts_with("33554432 53ef False"), "{ours}");
    assert_eq!(ours, theirs);
    // Gone after disconnect.
    assert_eq!(std::fs::read_dir(ours_dir.path()).unwrap().count(), 0);

    // command= with extra variables; label= reaches mkfs.
    let out = tmpdisk_run(
        "nbdscript",
        ours_dir.path(),
        &[
            "tmpdisk",
            "size=1M",
            "word=hello",
            "command=printf %s \"$word\" > \"$disk\"; truncate -s \"$size\" \"$disk\"",
        ],
        r#"nbdsh -u "$uri" -c 'print(h.get_size(), bytes(h.pread(5, 0)))'"#,
    );
    assert_eq!(out.trim(), "1048576 b'hello'");
    let out = tmpdisk_run(
        "nbdscript",
        ours_dir.path(),
        &["tmpdisk", "16M", "label=SCRATCH"],
        r#"nbdsh -u "$uri" -c 'print(bytes(h.pread(16, 1024 + 120)))'"#,
    );
    assert!(out.contains("SCRATCH"), "{out}");
    assert_eq!(std::fs::read_dir(ours_dir.path()).unwrap().count(), 0);
}

#[test]
fn http_tar_xz_stack_like_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let data = sample(1 << 20);
    write(d.path(), "disk.img", &data);
    write(d.path(), "other.txt", b"not this one\n");
    let tar = d.path().join("disk.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(d.path())
        .arg("-cf")
        .arg(&tar)
        .args(["other.txt", "disk.img"])
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar failed");
    let tarxz = xz(&std::fs::read(&tar).unwrap(), &["--block-size=64KiB"]);
    let srv = serve(&[("/disk.tar.xz", tarxz)]);
    let url = format!("url={}", srv.url("/disk.tar.xz"));
    let args = [
        "http",
        &url,
        "--filter=tar",
        "--filter=xz",
        "tar-entry=disk.img",
    ];
    let ours = nbdscript_bytes(&args).expect("nbdscript http+tar+xz");
    assert!(ours == data, "http+tar+xz bytes differ from disk.img");
    let theirs = nbdkit_bytes(&[
        "-r",
        "--filter=tar",
        "--filter=xz",
        "curl",
        &url,
        "tar-entry=disk.img",
    ])
    .expect("nbdkit curl+tar+xz");
    assert!(ours == theirs, "differs from nbdkit's");
}

/// A ranged HTTPS server (python3's ssl) with a self-signed certificate;
/// prints its port once listening. Killed on drop.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTPS_PY: &str = r#"
import http.server, os, ssl, sys
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_HEAD(self): self.answer(False)
    def do_GET(self): self.answer(True)
    def answer(self, body):
        data = open(os.path.join(root, os.path.basename(self.path)), "rb").read()
        a, b = 0, len(data) - 1
        r = self.headers.get("Range")
        if r:
            x, y = r.split("=", 1)[1].split("-")
            a, b = int(x), min(int(y) if y else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, len(data)))
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        if body: self.wfile.write(data[a:b + 1])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(root, "cert.pem"), os.path.join(root, "key.pem"))
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn https_server(data: &[u8]) -> HttpsServer {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "disk.img", data);
    let d = dir.path().display().to_string();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            &format!("{d}/key.pem"),
            "-out",
            &format!("{d}/cert.pem"),
        ],
    );
    let mut child = Command::new("python3")
        .args(["-c", HTTPS_PY, &d])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let port = line.trim().parse().expect("https server port");
    HttpsServer { child, port, dir }
}

#[test]
fn https_with_and_without_sslverify() {
    let data = sample(300_000);
    let srv = https_server(&data);
    let url = format!("https://127.0.0.1:{}/disk.img", srv.port);
    let e = Server::try_start(&["http", &url])
        .err()
        .expect("self-signed refused");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    let ours = nbdscript_bytes(&["http", &url, "sslverify=false"]).expect("sslverify=false");
    assert!(ours == data, "https bytes differ");
    let theirs = nbdkit_bytes(&["-r", "curl", &url, "sslverify=false"]).expect("nbdkit https");
    assert!(ours == theirs, "https bytes differ from nbdkit's");
}

#[test]
fn https_cainfo_and_capath_verify_with_a_test_ca_like_nbdkit() {
    let data = sample(200_000);
    let srv = https_server(&data);
    let url = format!("https://127.0.0.1:{}/disk.img", srv.port);
    let cert = srv.dir.path().join("cert.pem");
    let cainfo = format!("cainfo={}", cert.display());
    let ours = nbdscript_bytes(&["http", &url, &cainfo]).expect("cainfo= verifies");
    assert!(ours == data, "https bytes differ");
    let theirs = nbdkit_bytes(&["-r", "curl", &url, &cainfo]).expect("nbdkit cainfo=");
    assert!(ours == theirs, "https bytes differ from nbdkit's");
    // capath=: a directory of PEM files (the key beside it is passed over).
    let capath = format!("capath={}", srv.dir.path().display());
    assert!(nbdscript_bytes(&["http", &url, &capath]).expect("capath= verifies") == data);
    // Another CA verifies nothing; cainfo= empty trusts no CA at all.
    let other = tempfile::tempdir().unwrap();
    let o = other.path().display().to_string();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=other",
            "-days",
            "1",
            "-keyout",
            &format!("{o}/k.pem"),
            "-out",
            &format!("{o}/c.pem"),
        ],
    );
    for bad in [format!("cainfo={o}/c.pem"), "cainfo=".to_string()] {
        let e = Server::try_start(&["http", &url, &bad])
            .err()
            .expect("refused");
        assert!(e.to_lowercase().contains("certificate"), "{bad}: {e}");
    }
    let e = Server::try_start(&["http", &url, &format!("cainfo={o}/k.pem")])
        .err()
        .expect("a key is no CA");
    assert!(e.contains("cainfo="), "{e}");
}
