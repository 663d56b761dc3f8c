//! The allocators behind `memory allocator=sparse|malloc|zstd` with real
//! clients: nbdsh writes patterns across page boundaries, qemu-io verifies,
//! `nbdinfo --map` shows holes where nothing was written, and the same
//! writes against nbdkit's memory plugin give the same bytes.

use crate::common::*;
use std::process::Command;

const ALLOCATORS: [&str; 3] = ["sparse", "malloc", "zstd"];

/// Writes touching page boundaries, whole pages, zeroes and trims inside
/// the first 24 MiB of a 64 MiB disk; prints a digest of the whole disk.
const WRITES: &str = r#"
import hashlib
def pat(n, seed):
    return bytes(((i * 7 + seed) * 13 + (i >> 8)) & 255 for i in range(n))
h.pwrite(pat(4096, 1), 0)
h.pwrite(pat(200, 2), 32768 - 100)
h.pwrite(pat(65536, 3), 10 << 20)
h.pwrite(b"\x00" * 32768, 10 << 20)          # a whole page of zeros
h.pwrite(pat(3 * 32768 + 5, 4), (16 << 20) - 7)
h.zero(40000, (16 << 20) + 1000)
h.trim(32768, (16 << 20) + 65536)
h.pwrite(b"\xff", (24 << 20) - 1)
h.flush()
assert h.pread(200, 32768 - 100) == pat(200, 2)
assert h.pread(32768, 10 << 20) == bytes(32768)
assert h.pread(32768, (10 << 20) + 32768) == pat(65536, 3)[32768:]
assert h.pread(40000, (16 << 20) + 1000) == bytes(40000)
d = hashlib.sha256()
for off in range(0, h.get_size(), 1 << 20):
    d.update(h.pread(1 << 20, off))
print(d.hexdigest())
"#;

/// The nbdinfo --map lines as (offset, length, type).
fn map(uri: &str) -> Vec<(u64, u64, u32)> {
    run_ok("nbdinfo", &["--map", uri])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The type of the extent covering `off`.
fn type_at(m: &[(u64, u64, u32)], off: u64) -> u32 {
    m.iter()
        .find(|(o, l, _)| *o <= off && off < o + l)
        .map(|e| e.2)
        .unwrap_or_else(|| panic!("no extent at {off}: {m:?}"))
}

/// nbdsh output of `script` against nbdkit's memory plugin.
fn nbdkit_nbdsh(args: &[&str], script: &str) -> String {
    let out = Command::new("nbdkit")
        .env("PATH", sys_path())
        .arg("-U")
        .arg("-")
        .args(args)
        .arg("--run")
        .arg("nbdsh -u \"$uri\" -c \"$SCRIPT\"")
        .env("SCRIPT", script)
        .output()
        .expect("run nbdkit");
    assert!(
        out.status.success(),
        "nbdkit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_allocator_matches_nbdkit_and_reports_holes() {
    for a in ALLOCATORS {
        let spec = format!("allocator={a}");
        let s = Server::start(&["memory", "size=64M", &spec]);
        let ours = s.nbdsh(WRITES);
        let theirs = nbdkit_nbdsh(&["memory", "size=64M", &spec], WRITES);
        assert_eq!(
            ours.trim(),
            theirs.trim(),
            "{a}: contents differ from nbdkit"
        );
        assert_eq!(ours.trim().len(), 64, "{a}: no digest: {ours}");

        let m = map(&s.uri);
        // Extents cover the disk exactly, in order.
        let mut pos = 0;
        for (o, l, _) in &m {
            assert_eq!(*o, pos, "{a}: {m:?}");
            pos += l;
        }
        assert_eq!(pos, 64 << 20, "{a}: {m:?}");
        // Data where we wrote, holes where nothing was ever written.
        for off in [0, 32768 - 100, 32768, (10 << 20) + 32768, (16 << 20) - 7] {
            assert_eq!(type_at(&m, off), 0, "{a}: data at {off}: {m:?}");
        }
        for off in [1 << 20, 5 << 20, 30 << 20, (64 << 20) - 1] {
            assert_eq!(type_at(&m, off), 3, "{a}: hole at {off}: {m:?}");
        }
        // The whole page of zeros, and the trimmed page, are holes again.
        assert_eq!(type_at(&m, 10 << 20), 3, "{a}: zero page: {m:?}");
        assert_eq!(
            type_at(&m, (16 << 20) + 65536),
            3,
            "{a}: trimmed page: {m:?}"
        );
    }
}

#[test]
fn qemu_io_patterns_on_each_allocator() {
    for a in ALLOCATORS {
        let s = Server::start(&["memory", "size=16M", &format!("allocator={a}")]);
        let opts = s.qemu_opts();
        let out = run_ok(
            "qemu-io",
            &[
                "--image-opts",
                &opts,
                "-c",
                "write -P 0xab 1000 70000",
                "-c",
                "write -P 0x5c 8M 1M",
                "-c",
                "write -z 8392704 4096",
                "-c",
                "read -P 0xab 1000 70000",
                "-c",
                "read -P 0x5c 8M 4096",
                "-c",
                "read -P 0 8392704 4096",
                "-c",
                "read -P 0x5c 8396800 1040384",
                "-c",
                "read -P 0 15M 1M",
            ],
        );
        assert!(!out.contains("fail"), "{a}: {out}");
        assert_eq!(out.matches("read ").count(), 5, "{a}: {out}");
    }
}

#[test]
fn parallel_connections_on_each_allocator() {
    // Two nbdcopy streams into different halves, then both read back.
    for a in ALLOCATORS {
        let s = Server::start(&["memory", "size=8M", &format!("allocator={a}")]);
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.raw");
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i % 251) as u8 ^ (i >> 15) as u8)
            .collect();
        std::fs::write(&src, &data).expect("write src");
        let script = format!(
            "nbdcopy --connections=2 {src} '{uri}' & nbdcopy --connections=2 {src} '{uri}'; wait",
            src = src.display(),
            uri = s.uri
        );
        let out = sh(&script);
        assert!(
            out.status.success(),
            "{a}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            read_all(&s.uri) == data,
            "{a}: contents differ after parallel copies"
        );
    }
}

#[test]
fn malloc_mlock_works_or_names_ulimit() {
    match Server::try_start(&["memory", "size=1M", "allocator=malloc,mlock=true"]) {
        Ok(s) => {
            s.nbdsh("h.pwrite(b'x' * 512, 0)\nassert h.pread(512, 0) == b'x' * 512");
        }
        Err(e) => assert!(e.contains("ulimit -l"), "{e}"),
    }
    // Without CAP_IPC_LOCK and with a 64 KiB limit, locking 64 MiB must fail
    // with a message that says what to do.
    let out = Command::new("setpriv")
        .env("PATH", sys_path())
        .args([
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "sh",
            "-c",
        ])
        .arg(format!(
            "ulimit -l 64 && exec {} memory size=64M allocator=malloc,mlock=true --run true",
            bin()
        ))
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("setpriv:") {
        eprintln!("setpriv unavailable here, skipping the forced failure: {err}");
        return;
    }
    assert!(
        !out.status.success(),
        "mlock of 64M under ulimit -l 64 succeeded"
    );
    assert!(err.contains("ulimit -l") && err.contains("64 KiB"), "{err}");
}

#[test]
fn bad_allocator_names_the_value() {
    let e = Server::try_start(&["memory", "size=1M", "allocator=slab"])
        .err()
        .expect("must fail");
    assert!(e.contains("slab") && e.contains("sparse"), "{e}");
    let e = Server::try_start(&["memory", "size=1M", "allocator=malloc,mlock=perhaps"])
        .err()
        .expect("must fail");
    assert!(e.contains("mlock=perhaps"), "{e}");
}

/// VmHWM of a process in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

/// Each 4 KiB block 2 KiB of noise then 2 KiB of zeros: compresses 2:1.
fn half_noise(len: usize, mut s: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if i % 4096 < 2048 {
                (s >> 24) as u8
            } else {
                0
            }
        })
        .collect()
}

#[test]
fn zstd_rss_tracks_the_compressed_size_while_writing() {
    // 96 MiB written with nbdcopy compress to about 48 MiB: the server's
    // peak RSS (binary and buffers included) stays well under what was
    // written, and the bytes and the ratio line are right.
    const LEN: usize = 96 << 20;
    let s = Server::start(&["-v", "memory", "size=256M", "allocator=zstd"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.raw");
    let data = half_noise(LEN, 0x9e37_79b9);
    std::fs::write(&src, &data).expect("write src");
    run_ok("nbdcopy", &[src.to_str().unwrap(), &s.uri]);
    let peak = peak_rss_mib(s.child.id());
    assert!(peak < 80, "peak RSS {peak} MiB for 96 MiB written at 2:1");
    let back = read_all(&s.uri);
    assert!(back[..LEN] == data[..], "contents differ");
    assert!(back[LEN..].iter().all(|&b| b == 0), "tail not zero");
    let (_, err) = s.stop();
    let line = err
        .lines()
        .rfind(|l| l.contains("zstd: 3072 pages stored"))
        .unwrap_or_else(|| panic!("no stats line: {err}"));
    let ratio: f64 = line
        .rsplit("compression ratio ")
        .next()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {line}"));
    assert!(ratio > 1.9 && ratio < 2.1, "{line}");
}

#[test]
fn zstd_ratio_in_dump_plugin() {
    let out = nbdscript()
        .args(["--dump-plugin", "memory", "1G", "allocator=zstd"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l == "allocator=zstd"), "{text}");
    assert!(
        text.lines().any(|l| l == "compression_ratio=1.000"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("allocator_stats=zstd: 0 pages stored")),
        "{text}"
    );
    let out = nbdscript()
        .args(["--dump-plugin", "memory", "1G"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "allocator=sparse"), "{text}");
    assert!(!text.contains("compression_ratio"), "{text}");
}

#[test]
fn zstd_stats_in_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("stats.rhai");
    std::fs::write(
        &script,
        r#"
fn config(params) {
    let d = disk("4M", "zstd");
    d.pwrite(pattern(65536, "hello, world! ".to_blob()), 0);
    let s = d.stats();
    if s.allocator != "zstd" || s.stored != 65536 || s.used != 65536 { throw `cached: ${s}` }
    d.flush();
    let s = d.stats();
    if s.stored != 65536 || s.used >= 2000 || s.ratio < 30.0 { throw `flushed: ${s}` }
    if !s.line.contains("compression ratio") { throw s.line }
    print(`stats ok: ${s.line}`);
    let m = disk("1M").stats();
    if m.allocator != "sparse" || m.ratio != 1.0 { throw `sparse: ${m}` }
    #{ d: d }
}
fn get_size(h) { h.d.size() }
fn pread(h, count, offset) { h.d.pread(count, offset) }
"#,
    )
    .expect("write script");
    let out = nbdscript()
        .arg("-v")
        .arg(&script)
        .args(["--run", "nbdinfo --size \"$uri\""])
        .env("PATH", sys_path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4194304");
    assert!(
        err.contains("stats ok: zstd: 2 pages stored (2 compressed into"),
        "{err}"
    );
}

/// Drives one nbdsh connection to a 1 MiB disk, keeping a model of it:
/// `fill` writes each 4 KiB block as noise then zeros (0 to 4096 bytes of
/// noise), `scribble` writes into those zero tails and zeroes some data,
/// `check` reads the disk back at odd offsets and sizes.
const ZERO_TAILS: &str = r#"
import sys, random
random.seed(18)
size = h.get_size()
model = bytearray(size)
def put(buf, off):
    h.pwrite(bytes(buf), off)
    model[off:off + len(buf)] = buf
def check():
    for off, n in [(0, size), (1, 4095), (2047, 4098), (4096 * 7 + 3000, 40000)]:
        for b in range(off, size, 65536 + n):
            n = min(n, size - b)
            assert h.pread(n, b) == model[b:b + n], (b, n)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "fill":
        for i in range(size // 4096):
            n = (i * 977) % 4097
            put(random.randbytes(n) + bytes(4096 - n), i * 4096)
        h.flush()
    elif cmd == "scribble":
        for i in range(0, size // 4096 - 1, 3):
            put(b"\xab" * 10, i * 4096 + 4090)
            h.zero(100, i * 4096 + 1)
            model[i * 4096 + 1:i * 4096 + 101] = bytes(100)
            assert h.pread(8192, i * 4096) == model[i * 4096:i * 4096 + 8192], i
    check()
    print("ok", flush=True)
"#;

#[test]
fn zstd_sub_frames_with_zero_tails_read_back_after_writes() {
    // Sub-frames hold a block's data without its trailing zeros; writes
    // into those tails (into pages in every form: in the cache, one frame,
    // sub-frames) must read back, before and after the next idle pass.
    let s = LiveServer::start(&["-v", "memory", "1M", "allocator=zstd"]);
    let mut c = Client::start(&s.uri, ZERO_TAILS);
    c.step("fill");
    let line = s.wait_log("idle: zstd: 32 pages stored");
    let split: u32 = line
        .split(", ")
        .find_map(|w| w.strip_suffix(" of them in 4 KiB frames")?.parse().ok())
        .unwrap_or_else(|| panic!("no sub-frame count in {line}"));
    assert!(split >= 16, "{line}");
    c.step("check");
    c.step("scribble");
    s.wait_log("idle: zstd: 32 pages stored");
    c.step("check");
}
