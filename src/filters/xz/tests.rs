//! Unit tests of the xz filter over an in-memory layer, with files made by
//! the `xz` tool.

use super::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A read-only layer over bytes that counts what is read from it.
struct Bytes {
    data: Vec<u8>,
    read: AtomicU64,
}

impl Backend for Bytes {
    fn get_size(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let o = offset as usize;
        let src = self
            .data
            .get(o..o + buf.len())
            .ok_or_else(|| BackendError::io("read past the end"))?;
        buf.copy_from_slice(src);
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
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
    let out = c.wait_with_output().expect("xz output");
    w.join().expect("writer").expect("write to xz");
    assert!(out.status.success());
    out.stdout
}

/// Deterministic, partly compressible test data.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (i / 4096) % 3 == 0 {
                (i % 251) as u8
            } else {
                (x >> 16) as u8
            }
        })
        .collect()
}

fn open(xzdata: Vec<u8>, max_block: u64, depth: usize) -> (Arc<Bytes>, Result<Arc<dyn Backend>>) {
    let next = Arc::new(Bytes {
        data: xzdata,
        read: AtomicU64::new(0),
    });
    let f = XzFilter::new(max_block, depth);
    let h = f.open(next.clone(), true);
    (next, h)
}

#[test]
fn random_reads_match_and_touch_one_block() {
    let data = sample(1 << 20);
    let (next, h) = open(xz(&data, &["--block-size=64KiB"]), 512 << 20, 2);
    let h = h.expect("open");
    assert_eq!(h.get_size().unwrap(), data.len() as u64);
    assert!(!h.can_write().unwrap());
    let after_open = next.read.load(Ordering::Relaxed);
    // One 4k read inside one block reads about one compressed block.
    let mut buf = vec![0u8; 4096];
    h.pread(&mut buf, 300_000, 0).unwrap();
    assert_eq!(&buf[..], &data[300_000..304_096]);
    let one = next.read.load(Ordering::Relaxed) - after_open;
    assert!(one > 0 && one < 70 * 1024, "read {one} compressed bytes");
    // The same block again comes from the cache.
    h.pread(&mut buf, 301_000, 0).unwrap();
    assert_eq!(next.read.load(Ordering::Relaxed) - after_open, one);
    // Reads crossing blocks, and the last byte.
    for &(off, len) in &[
        (65_000usize, 200_000usize),
        (0, 1),
        ((1 << 20) - 1, 1),
        (123_457, 70_001),
    ] {
        let mut b = vec![0u8; len];
        h.pread(&mut b, off as u64, 0).unwrap();
        assert_eq!(&b[..], &data[off..off + len], "at {off}+{len}");
    }
    // Depth 2: after blocks 14 and 15, block 0 was evicted and is read again.
    for off in [14 * 65_536u64, 15 * 65_536, 0] {
        h.pread(&mut buf, off, 0).unwrap();
    }
    let before = next.read.load(Ordering::Relaxed);
    h.pread(&mut buf, 15 * 65_536, 0).unwrap();
    assert_eq!(next.read.load(Ordering::Relaxed), before, "15 still cached");
    h.pread(&mut buf, 14 * 65_536, 0).unwrap();
    assert!(next.read.load(Ordering::Relaxed) > before, "14 was evicted");
}

#[test]
fn big_block_is_refused_with_advice() {
    let data = sample(256 << 10);
    let (_, h) = open(xz(&data, &[]), 64 << 10, 8);
    let e = h.err().expect("must be refused");
    assert_eq!(e.errno, Errno::Io);
    assert!(e.message.contains("xz --block-size=16MiB"), "{}", e.message);
    assert!(e.message.contains("xz-max-block"), "{}", e.message);
}

#[test]
fn concatenated_streams_and_padding() {
    let a = sample(100_000);
    let b: Vec<u8> = sample(50_000).into_iter().rev().collect();
    let mut file = xz(&a, &["--block-size=16KiB", "--check=crc32"]);
    file.extend_from_slice(&[0u8; 8]); // stream padding
    file.extend(xz(&b, &["--check=sha256"]));
    let (_, h) = open(file, 1 << 20, 4);
    let h = h.expect("open");
    assert_eq!(h.get_size().unwrap(), 150_000);
    let mut buf = vec![0u8; 20_000];
    h.pread(&mut buf, 90_000, 0).unwrap();
    assert_eq!(&buf[..10_000], &a[90_000..]);
    assert_eq!(&buf[10_000..], &b[..10_000]);
}

#[test]
fn empty_and_damaged_files() {
    let (_, h) = open(xz(&[], &[]), 1 << 20, 8);
    assert_eq!(h.expect("open empty").get_size().unwrap(), 0);

    let mut file = xz(&sample(100_000), &["--block-size=16KiB"]);
    let (_, h) = open(file[..file.len() - 1].to_vec(), 1 << 20, 8);
    assert!(h.is_err(), "a truncated file is refused");
    // Damage the data of the first block: open works, the read fails.
    file[40] ^= 0xff;
    let (_, h) = open(file, 1 << 20, 8);
    let h = h.expect("index intact");
    let mut buf = vec![0u8; 10];
    let e = h.pread(&mut buf, 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Io);
    // Other blocks still read.
    h.pread(&mut buf, 50_000, 0).unwrap();
}

#[test]
fn params() {
    let p = |v: &[(&str, &str)]| {
        Params::new(
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    };
    assert!(make(&p(&[])).is_ok());
    assert!(make(&p(&[("xz-max-block", "16M"), ("xz-max-depth", "2")])).is_ok());
    let e = make(&p(&[("xz-max-depth", "0")])).err().expect("depth 0");
    assert!(e.0.contains("xz-max-depth=0"), "{e}");
    assert!(make(&p(&[("xz-max-block", "lots")])).is_err());
}

#[test]
fn parallel_reads_of_one_block_decode_it_once() {
    let data = sample(1 << 20);
    let (next, h) = open(xz(&data, &["--block-size=256KiB"]), 1 << 20, 8);
    let h = h.expect("open");
    let before = next.read.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (h, data) = (h.clone(), &data);
            s.spawn(move || {
                let off = 512 * 1024 + t * 4096;
                let mut b = vec![0u8; 4096];
                h.pread(&mut b, off, 0).unwrap();
                assert_eq!(&b[..], &data[off as usize..off as usize + 4096]);
            });
        }
    });
    let read = next.read.load(Ordering::Relaxed) - before;
    assert!(read < 300 * 1024, "one block read once, not {read} bytes");
}

/// Evicted blocks' buffers are reused for later decodes (of blocks of
/// other sizes too): every read still returns its own bytes, from threads
/// reading at once.
#[test]
fn recycled_buffers_never_leak_old_bytes() {
    // 40 KiB blocks, and a short last block.
    let data = sample(1_000_000);
    let (_next, h) = open(xz(&data, &["--block-size=40KiB"]), 512 << 20, 1);
    let h = h.expect("open");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (h, data) = (&h, &data);
            s.spawn(move || {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = (x % (data.len() as u64 - 3000)) as usize;
                    let len = 1 + (x >> 40) as usize % 3000;
                    let mut b = vec![0u8; len];
                    h.pread(&mut b, off as u64, 0).unwrap();
                    assert!(b[..] == data[off..off + len], "at {off}+{len}");
                }
            });
        }
    });
    // The last, short block after a full-size one.
    let mut b = vec![0u8; 100];
    h.pread(&mut b, 0, 0).unwrap();
    h.pread(&mut b, data.len() as u64 - 100, 0).unwrap();
    assert!(b[..] == data[data.len() - 100..]);
}
