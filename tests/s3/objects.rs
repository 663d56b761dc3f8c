//! Object mode: writes landing in objects and persisting, concurrent
//! partial writes to one object, and failed requests as EIO naming the
//! request.

use super::*;

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
