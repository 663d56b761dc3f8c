//! The s3 plugin through the real binary against a local S3-compatible
//! server: moto (PyPI `moto[server]`, installed by scripts/test into a
//! venv) on 127.0.0.1, with objects put and checked by boto3. Covers the
//! read-only single-object mode (bytes, size, EPERM, nbdkit's S3 plugin as a
//! reference) and object mode (writes across objects, the objects in the
//! bucket, a second process, trim/zero deleting objects, concurrent partial
//! writes to one object, extents). This module owns the moto server the
//! submodules (single, credentials, objects) start.

use crate::common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

mod credentials;
mod objects;
mod single;

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
