//! Every real client on the memory, file and null plugins: nbdinfo's
//! flags, every nbdsh command and flag, errnos that keep the
//! connection, nbdcopy, qemu-img and qemu-io.

use super::*;

#[test]
fn nbdinfo_reports_size_and_flags() {
    let s = Server::start(&["memory", "64M"]);
    let out = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(out.contains("\"export-size\": 67108864"), "{out}");
    for flag in [
        "can_trim",
        "can_zero",
        "can_fua",
        "can_flush",
        "can_multi_conn",
        "can_fast_zero",
        "can_cache",
        "can_df",
    ] {
        assert!(
            out.contains(&format!("\"{flag}\": true")),
            "{flag} in {out}"
        );
    }
    assert!(out.contains("\"is_read_only\": false"), "{out}");
    assert!(out.contains("base:allocation"), "{out}");
    let ro = Server::start(&["-r", "memory", "size=1M"]);
    let out = run_ok("nbdinfo", &["--json", &ro.uri]);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert!(out.contains("\"can_trim\": false"), "{out}");
}

#[test]
fn nbdsh_every_command_and_flag() {
    let s = Server::start(&["memory", "size=4M"]);
    let out = s.nbdsh(
        r#"
h.pwrite(b"\x55" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\x55" * 65536
h.pwrite(b"abc", 65535)
assert h.pread(4, 65534) == b"\x55abc"
h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 0) == bytes(4096)
h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(8, 4096) == bytes(8)
h.trim(65536, 1 << 20)
h.flush()
h.cache(65536, 0)
exts = []
def cb(meta, off, e, err):
    exts.extend(e)
h.block_status(4 << 20, 0, cb)
assert exts[1] == 0, exts          # first 64K+ is data
assert exts[-1] == 3, exts         # tail is hole+zero
one = []
def cb1(meta, off, e, err):
    one.extend(e)
h.block_status(4 << 20, 0, cb1, nbd.CMD_FLAG_REQ_ONE)
assert len(one) == 2, one
# structured read with DF: one data chunk
chunks = []
def rcb(buf, off, status, err):
    chunks.append((off, status, len(buf)))
h.pread_structured(4096, 65536, rcb, nbd.CMD_FLAG_DF)
assert chunks == [(65536, nbd.READ_DATA, 4096)], chunks
# a big sparse read: data then a hole chunk
chunks.clear()
buf = h.pread_structured(1 << 20, 0, rcb)
assert buf[:3] == bytes(3) and buf[65535:65538] == b"abc", buf[65530:65540]
assert any(st == nbd.READ_HOLE for (_, st, _) in chunks), chunks
print("ok", h.get_size(), h.can_multi_conn())
"#,
    );
    assert_eq!(out.trim(), "ok 4194304 True");
}

#[test]
fn errors_have_the_right_errno_and_keep_the_connection() {
    let s = Server::start(&["memory", "size=1M"]);
    let out = s.nbdsh(
        r#"
import errno
h.set_strict_mode(0)
def code(f):
    try:
        f()
    except nbd.Error as e:
        return e.errno
    return 0
print(code(lambda: h.pread(512, 1 << 20)))             # EINVAL
print(code(lambda: h.pwrite(b"x" * 512, (1 << 20) - 1)))  # ENOSPC
print(code(lambda: h.zero(512, (1 << 20))))             # ENOSPC
print(code(lambda: h.trim(512, (1 << 20))))             # EINVAL
print(code(lambda: h.pread(0, 0)))                      # EINVAL
print(code(lambda: h.pread(512, 0, 1 << 7)))            # EINVAL (unknown flag)
print(code(lambda: h.pread(512, (1 << 64) - 512)))     # EINVAL (offset near 2^64)
print(code(lambda: h.cache(512, 1 << 20)))              # EINVAL
assert h.pread(4, 0) == bytes(4)
assert h.pread(4, 0, nbd.CMD_FLAG_FUA) == bytes(4)   # FUA on a read is accepted
"#,
    );
    let codes: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        codes,
        vec!["EINVAL", "ENOSPC", "ENOSPC", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL"],
        "{out}"
    );

    let ro = Server::start(&["-r", "memory", "size=1M"]);
    let out = ro.nbdsh(
        r#"
h.set_strict_mode(0)
for f in (lambda: h.pwrite(b"x", 0), lambda: h.trim(512, 0), lambda: h.zero(512, 0)):
    try:
        f(); print(0)
    except nbd.Error as e:
        print(e.errno)
"#,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["EPERM", "EPERM", "EPERM"]
    );
}

#[test]
fn nbdcopy_round_trip_and_map() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let back = dir.path().join("back.img");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().take(1 << 20) {
        *b = (i * 7 % 251) as u8;
    }
    data[3 << 20] = 9;
    std::fs::write(&src, &data).unwrap();
    let s = Server::start(&["memory", "size=4M"]);
    run_ok("nbdcopy", &[src.to_str().unwrap(), &s.uri]);
    run_ok("nbdcopy", &[&s.uri, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["0", "1048576", "0"], "{map}");
    assert!(rows.iter().any(|r| r[2] == "3"), "{map}");
    // every byte again, through a second path
    assert_eq!(read_all(&s.uri), data);
}

#[test]
fn qemu_img_and_qemu_io() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let s = Server::start(&["memory", "size=8M"]);
    let info = run_ok("qemu-img", &["info", "--image-opts", &s.qemu_opts()]);
    assert!(info.contains("8 MiB"), "{info}");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &s.uri,
        ],
    );
    let cmp = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &s.uri,
        ],
    );
    // sizes differ (2M file, 8M export): compare checks the tail is zero
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let map = run_ok(
        "qemu-img",
        &["map", "--output=json", "--image-opts", &s.qemu_opts()],
    );
    assert!(
        map.contains("\"start\": 0, \"length\": 2097152") && map.contains("\"data\": true"),
        "{map}"
    );
    assert!(map.contains("\"zero\": true"), "{map}");
    let io = run_ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x5a 1M 64k",
            "-c",
            "read -P 0x5a 1M 64k",
            "-c",
            "write -z 3M 1M",
            "-c",
            "read -P 0 3M 1M",
            "-c",
            "discard 4M 64k",
            "-c",
            "flush",
            "--image-opts",
            &s.qemu_opts(),
        ],
    );
    assert!(!io.contains("Pattern verification failed"), "{io}");
    assert!(
        io.contains("read 65536/65536 bytes at offset 1048576"),
        "{io}"
    );
}

#[test]
fn file_plugin_reads_writes_and_maps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    let s = Server::start(&["file", img.to_str().unwrap()]);
    s.nbdsh(
        r#"
h.pwrite(b"\x11" * 65536, 1 << 20, nbd.CMD_FLAG_FUA)
h.flush()
h.zero(65536, 0)
h.trim(65536, 1 << 20)
h.pwrite(b"end", (8 << 20) - 3)
"#,
    );
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(&bytes[(8 << 20) - 3..], b"end");
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    assert!(map.lines().next().unwrap().contains("hole,zero"), "{map}");
    drop(s);
    // read-only when asked
    let ro = Server::start(&["-r", "file", &format!("file={}", img.display())]);
    let out = run_ok("nbdinfo", &["--json", &ro.uri]);
    assert!(out.contains("\"is_read_only\": true"), "{out}");
    assert_eq!(read_all(&ro.uri), bytes);
}

#[test]
fn null_plugin_is_zeros_and_one_hole() {
    let s = Server::start(&["null", "size=1G"]);
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "1073741824", "3", "hole,zero"]
    );
    let out = s.nbdsh("h.pwrite(b'x'*512, 0); assert h.pread(512, 0) == bytes(512); print('ok')");
    assert_eq!(out.trim(), "ok");
}
