//! Single-object mode: the object's bytes read-only (nbdkit's S3 plugin
//! as a reference), and a missing object or bucket as a usage error
//! naming the URL.

use super::*;

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
