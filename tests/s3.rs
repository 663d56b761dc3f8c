//! The s3 plugin through the real binary against a local S3-compatible
//! server: moto (PyPI `moto[server]`, installed by scripts/test into a
//! venv) on 127.0.0.1, with objects put and checked by boto3. Covers the
//! read-only single-object mode (bytes, size, EPERM, nbdkit's S3 plugin as a
//! reference) and object mode (writes across objects, the objects in the
//! bucket, a second process, trim/zero deleting objects, concurrent partial
//! writes to one object, extents).

use crate::common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const ACCESS: &str = "testing-key";
const SECRET: &str = "testing-secret";

/// The python that has moto and boto3: `NBDSCRIPT_MOTO_PYTHON`, else the
/// venv scripts/test makes.
fn python() -> String {
    if let Ok(p) = std::env::var("NBDSCRIPT_MOTO_PYTHON") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    format!("{home}/.cache/nbdscript/moto-venv/bin/python")
}

/// Starts moto in-process on a free port, prints the port, and exits when
/// its stdin closes (so it never outlives the test binary).
const MOTO_PY: &str = r#"
import sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
sys.stdin.read()
s.stop()
"#;

/// A moto server on 127.0.0.1; stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let py = python();
        let mut child = Command::new(&py)
            .args(["-c", MOTO_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {py} ({e}): moto is missing; run scripts/test, which installs it"
                )
            });
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!("moto did not start with {py} (got {line:?}); run scripts/test to install moto[server]")
        });
        // It listens before printing; poll the port anyway (bounded).
        let addr = format!("127.0.0.1:{port}");
        let ok = (0..200).any(|_| {
            std::net::TcpStream::connect(&addr).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        });
        assert!(ok, "moto is not accepting connections on {addr}");
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run a boto3 snippet with `s3` (a client on this server) and `data`
    /// (bytes of the file at argv[1], if given). Returns stdout.
    fn py(&self, code: &str, input: Option<&[u8]>) -> Vec<u8> {
        let script = format!(
            "import sys, boto3\n\
             s3 = boto3.client('s3', endpoint_url={ep:?}, region_name='us-east-1',\n\
                 aws_access_key_id={ACCESS:?}, aws_secret_access_key={SECRET:?})\n\
             data = sys.stdin.buffer.read()\n\
             out = sys.stdout.buffer\n{code}\n",
            ep = self.endpoint()
        );
        let mut c = Command::new(python())
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        let mut stdin = c.stdin.take().expect("stdin");
        let d = input.unwrap_or_default().to_vec();
        let w = std::thread::spawn(move || stdin.write_all(&d));
        let out = c.wait_with_output().expect("python");
        let _ = w.join();
        assert!(
            out.status.success(),
            "boto3 helper failed: {}\n{code}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn make_bucket(&self, b: &str) {
        self.py(&format!("s3.create_bucket(Bucket={b:?})"), None);
    }

    fn put(&self, b: &str, k: &str, data: &[u8]) {
        self.py(
            &format!("s3.put_object(Bucket={b:?}, Key={k:?}, Body=data)"),
            Some(data),
        );
    }

    /// Keys under `prefix`, sorted.
    fn keys(&self, b: &str, prefix: &str) -> Vec<String> {
        let out = self.py(
            &format!(
                "r = s3.list_objects_v2(Bucket={b:?}, Prefix={prefix:?})\n\
                 print('\\n'.join(sorted(o['Key'] for o in r.get('Contents', []))))"
            ),
            None,
        );
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn get(&self, b: &str, k: &str) -> Vec<u8> {
        self.py(
            &format!("out.write(s3.get_object(Bucket={b:?}, Key={k:?})['Body'].read())"),
            None,
        )
    }

    /// Plugin arguments for `s3://b/k` on this server, credentials as
    /// parameters.
    fn args(&self, url: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "s3".to_string(),
            url.to_string(),
            format!("endpoint={}", self.endpoint()),
            format!("access-key={ACCESS}"),
            format!("secret-key={SECRET}"),
            "region=us-east-1".to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Deterministic bytes, different for each seed.
fn sample(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn write_tmp(data: &[u8]) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("data.bin");
    std::fs::write(&p, data).unwrap();
    let s = p.display().to_string();
    (d, s)
}

#[test]
fn s3_single_object_is_read_only_with_the_objects_bytes() {
    let m = Moto::start();
    m.make_bucket("bkt");
    let data = sample(3 << 20, 1);
    m.put("bkt", "dir/disk.img", &data);

    let args = m.args("s3://bkt/dir/disk.img", &[]);
    let ours = nbdscript_bytes(&refs(&args)).expect("nbdscript s3");
    assert_eq!(ours.len(), data.len());
    assert!(ours == data, "s3 bytes differ from the object");

    let s = Server::start(&refs(&args));
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"export-size\": 3145728"), "{info}");
    assert!(info.contains("\"is_read_only\": true"), "{info}");
    assert!(info.contains("\"can_multi_conn\": true"), "{info}");
    let (_d, f) = write_tmp(&data);
    s.nbdsh(&format!(
        r#"
import random
data = open({f:?}, "rb").read()
r = random.Random(5)
for i in range(60):
    n = r.choice([1, 511, 4096, 65536, 1 << 20])
    off = r.randrange(0, len(data) - n)
    assert h.pread(n, off) == data[off:off+n], (off, n)
assert h.pread(7, len(data) - 7) == data[-7:]
try:
    h.pwrite(b"x" * 512, 0)
    assert False, "a write must fail"
except nbd.Error as e:
    assert e.errno == "EPERM", e
"#
    ));

    // nbdkit's S3 plugin (Debian's boto3) sees the same bytes.
    let out = Command::new("nbdkit")
        .env("PATH", sys_path())
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args(["-U", "-", "-r", "S3"])
        .arg(format!("endpoint-url={}", m.endpoint()))
        .args([
            "bucket=bkt",
            "key=dir/disk.img",
            "--run",
            "nbdcopy \"$uri\" -",
        ])
        .output()
        .expect("run nbdkit");
    assert!(
        out.status.success(),
        "nbdkit S3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == ours, "nbdkit's S3 bytes differ from ours");
}

#[test]
fn s3_credentials_and_endpoint_from_the_environment() {
    let m = Moto::start();
    m.make_bucket("envb");
    let data = sample(100_000, 2);
    m.put("envb", "k.img", &data);
    // nbdkit's bucket= key= form, the S3 alias, everything else from AWS_*.
    let out = nbdscript()
        .env("PATH", sys_path())
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", m.endpoint())
        .args([
            "S3",
            "bucket=envb",
            "key=k.img",
            "--run",
            "nbdcopy \"$uri\" -",
        ])
        .output()
        .expect("run nbdscript");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "bytes differ");
}

#[test]
fn s3_missing_object_or_bucket_is_a_usage_error_naming_the_url() {
    let m = Moto::start();
    m.make_bucket("have");
    for (url, extra) in [
        ("s3://have/nope.img", vec![]),
        ("s3://nobucket/disk.img", vec![]),
        ("s3://nobucket/disk", vec!["size=1M", "object-size=64k"]),
    ] {
        let args = m.args(url, &extra);
        let out = nbdscript()
            .env("PATH", sys_path())
            .args(refs(&args))
            .args(["--run", "true"])
            .output()
            .expect("run nbdscript");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(url), "{url}: the message must name it: {err}");
    }
}

#[test]
fn s3_object_mode_writes_land_in_objects_and_persist() {
    let m = Moto::start();
    m.make_bucket("vol");
    let os = 65536usize;
    let args = m.args("s3://vol/disk", &["size=1M", "object-size=64k"]);
    let s = Server::start(&refs(&args));
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"export-size\": 1048576"), "{info}");
    assert!(info.contains("\"is_read_only\": false"), "{info}");
    // Fresh disk: zeros, no objects.
    let out = s.nbdsh(
        r#"
assert h.pread(1 << 20, 0) == bytes(1 << 20)
h.pwrite(b"A" * 10000, 60000)                 # across objects 0 and 1
h.pwrite(bytes(range(256)) * 256, 2 * 65536)  # exactly object 2
h.pwrite(b"B" * 200000, 300000)               # objects 4..7, partial ends
h.flush()
print(h.can_trim(), h.can_zero(), h.can_flush())
"#,
    );
    assert_eq!(out.trim(), "True True True");
    // qemu-io, across the 3/4 boundary, verified by qemu-io itself.
    let q = s.qemu_opts();
    run_ok(
        "qemu-io",
        &["--image-opts", &q, "-c", "write -P 0xcd 260000 4000"],
    );
    run_ok(
        "qemu-io",
        &["-r", "--image-opts", &q, "-c", "read -P 0xcd 260000 4000"],
    );
    let mut model = vec![0u8; 1 << 20];
    model[60000..70000].fill(b'A');
    for (i, b) in model[2 * os..3 * os].iter_mut().enumerate() {
        *b = (i % 256) as u8;
    }
    model[300000..500000].fill(b'B');
    model[260000..264000].fill(0xcd);
    let got = read_all(&s.uri);
    assert!(got == model, "read back differs from what was written");
    drop(s);

    // The bucket holds exactly the touched objects, with those bytes.
    let keys = m.keys("vol", "disk/");
    let want: Vec<String> = [0, 1, 2, 3, 4, 5, 6, 7]
        .iter()
        .map(|n| format!("disk/{n:016x}"))
        .collect();
    assert_eq!(keys, want);
    for (n, k) in keys.iter().enumerate() {
        let obj = m.get("vol", k);
        assert_eq!(obj.len(), os, "{k}");
        assert!(obj == model[n * os..(n + 1) * os], "{k} holds other bytes");
    }

    // A second process sees the data; trim and zero delete whole objects.
    let s2 = Server::start(&refs(&args));
    assert!(read_all(&s2.uri) == model, "a new server sees other bytes");
    s2.nbdsh(
        r#"
h.trim(65536, 2 * 65536)            # object 2: deleted
h.trim(1000, 4 * 65536)             # part of object 4: kept
h.zero(3 * 65536, 65536 + 100)      # tail of 1 zeroed, 2 and 3 deleted, head of 4 zeroed
assert h.pread(65536, 2 * 65536) == bytes(65536)
assert h.pread(1000, 65636 - 500) == b"A" * 500 + bytes(500)
h.zero(65536, 5 * 65536, nbd.CMD_FLAG_NO_HOLE)  # object 5: zeros, kept
assert h.pread(65536, 5 * 65536) == bytes(65536)
"#,
    );
    let keys = m.keys("vol", "disk/");
    // Object 5 was zeroed with NO_HOLE: written, not deleted.
    let want: Vec<String> = [0, 1, 4, 5, 6, 7]
        .iter()
        .map(|n| format!("disk/{n:016x}"))
        .collect();
    assert_eq!(keys, want, "trim/zero of whole objects must delete them");
    model[2 * os..3 * os].fill(0);
    model[65536 + 100..4 * os + 100].fill(0);
    model[5 * os..6 * os].fill(0);
    assert!(
        m.get("vol", "disk/0000000000000005") == vec![0u8; os],
        "NO_HOLE zero"
    );
    assert!(read_all(&s2.uri) == model, "after trim/zero");
    // Extents: deleted objects are holes.
    let out = s2.nbdsh(
        r#"
ext = []
h.block_status(6 * 65536, 0, lambda ctx, off, e, err: ext.extend(e))
print(ext)
"#,
    );
    assert!(
        out.trim() == "[131072, 0, 131072, 3, 131072, 0]",
        "extents: {out}"
    );
}

#[test]
fn s3_concurrent_partial_writes_to_one_object_lose_nothing() {
    let m = Moto::start();
    m.make_bucket("race");
    let args = m.args("s3://race/d", &["size=256k", "object-size=64k"]);
    let s = Server::start(&refs(&args));
    // 4 connections, 16 writes each, all in flight at once, all partial
    // writes to object 0: any lost read-modify-write shows up.
    s.nbdsh(
        r#"
hs = [h] + [nbd.NBD() for _ in range(3)]
for x in hs[1:]:
    x.connect_uri(h.get_uri())
cookies = []
for i in range(64):
    hx = hs[i % 4]
    buf = nbd.Buffer.from_bytearray(bytearray([i + 1]) * 1000)
    cookies.append((hx, hx.aio_pwrite(buf, i * 1024 + (i % 3) * 7)))
for hx, c in cookies:
    while not hx.aio_command_completed(c):
        hx.poll(-1)
want = bytearray(65 * 1024)
for i in range(64):
    o = i * 1024 + (i % 3) * 7
    want[o:o + 1000] = bytes([i + 1]) * 1000
got = h.pread(len(want), 0)
bad = [i for i in range(64) if got[i * 1024 + (i % 3) * 7] != i + 1]
assert got == bytes(want), "lost writes: %s" % bad
"#,
    );
    drop(s);
    let obj = m.get("race", "d/0000000000000000");
    assert_eq!(obj.len(), 65536);
    assert!(obj
        .chunks(1024)
        .enumerate()
        .all(|(i, c)| c[(i % 3) * 7] == i as u8 + 1));
}

#[test]
fn s3_failed_requests_give_eio_and_name_the_request() {
    let m = Moto::start();
    m.make_bucket("gone");
    let args = m.args(
        "s3://gone/d",
        &["size=128k", "object-size=64k", "timeout=5", "-v"],
    );
    let s = Server::start(&refs(&args));
    s.nbdsh(r#"h.pwrite(b"x" * 100, 65536)"#);
    drop(m); // the store goes away under a live server
    s.nbdsh(
        r#"
for f in (lambda: h.pread(100, 65536), lambda: h.pwrite(b"y" * 10, 10)):
    try:
        f()
        assert False, "must fail"
    except nbd.Error as e:
        assert e.errno == "EIO", e
"#,
    );
    let (_, log) = s.stop();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("s3://gone")).collect();
    for want in [
        "GET s3://gone/d/0000000000000001 bytes 0-99",
        "GET s3://gone/d/0000000000000000 bytes 0-65535",
    ] {
        assert!(
            ours.iter().any(|l| l.contains(want)),
            "the log must name the failed request {want:?}: {ours:#?}"
        );
    }
}

/// The AWS variables cleared, so only what a test sets is seen.
fn no_aws_env(c: &mut Command) -> &mut Command {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        c.env_remove(k);
    }
    c.env("PATH", sys_path())
}

#[test]
fn s3_keys_region_and_endpoint_from_an_aws_profile() {
    let m = Moto::start();
    m.make_bucket("profb");
    let data = sample(70_000, 3);
    m.put("profb", "p.img", &data);
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    let cred = aws.join("credentials");
    std::fs::write(
        &cred,
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[nbd]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile nbd]\nregion = us-east-1\nendpoint_url = {}\n",
            m.endpoint()
        ),
    )
    .unwrap();
    let home_s = home.path().display().to_string();
    // AWS_PROFILE picks the profile; keys, region and endpoint all come
    // from the two files.
    let out = no_aws_env(&mut nbdscript())
        .env("HOME", &home_s)
        .env("AWS_PROFILE", "nbd")
        .args(["s3", "s3://profb/p.img", "--run", "nbdcopy \"$uri\" -"])
        .output()
        .expect("run nbdscript");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "bytes differ");
    let dump = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = nbdscript();
        no_aws_env(&mut c)
            .env("HOME", &home_s)
            .envs(envs.iter().copied());
        let o = c
            .args(["--dump-plugin", "s3", "s3://profb/p.img"])
            .args(extra)
            .output()
            .expect("run nbdscript");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let d = dump(&[("AWS_PROFILE", "nbd")], &[]);
    let want = format!("credentials=profile nbd in {}", cred.display());
    assert!(d.contains(&want), "{d}");
    assert!(d.contains("size=70000"), "{d}");
    // Keys in the environment win over AWS_PROFILE, but not over profile=.
    let keys = [
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_PROFILE", "nbd"),
    ];
    let d = dump(&keys, &[]);
    assert!(d.contains("credentials=environment"), "{d}");
    let d = dump(&keys, &["profile=nbd"]);
    assert!(d.contains(&want), "{d}");
    // A profile that is not there is a usage error naming it and the files.
    let o = no_aws_env(&mut nbdscript())
        .env("HOME", &home_s)
        .env("AWS_PROFILE", "nope")
        .args(["s3", "s3://profb/p.img", "--run", "true"])
        .output()
        .expect("run nbdscript");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("\"nope\"") && e.contains(".aws/credentials"),
        "{e}"
    );
}
