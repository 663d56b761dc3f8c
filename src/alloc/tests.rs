//! Model tests for every allocator: seeded random sequences of write, fill,
//! zero, blit, read and extents checked against a plain `Vec<u8>` window of
//! the address space, plus concurrent writers sharing pages.
//! Test-only; imports nothing outside `alloc`.

use super::{AllocExtent, AllocSpec, Allocator, Malloc, Sparse, Zstd, HOLE, PAGE, ZERO};
use std::sync::Arc;

const P: u64 = PAGE as u64;

/// splitmix64: tiny, deterministic, good enough for test sequences.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        match self.below(5) {
            0 => vec![0; n],
            1 => {
                // All zero but one byte: the edge case of zero detection.
                let mut v = vec![0; n];
                if n > 0 {
                    let i = self.below(n as u64) as usize;
                    v[i] = 1 + self.below(255) as u8;
                }
                v
            }
            2 => (0..n).map(|i| (i % 7) as u8 * 3).collect(),
            _ => (0..n).map(|_| self.next() as u8).collect(),
        }
    }
}

/// A range inside `[0, window)`, biased to page boundaries and whole pages.
fn pick(rng: &mut Rng, window: u64) -> (u64, u64) {
    let pages = window / P;
    let (off, len) = match rng.below(5) {
        0 => (rng.below(window), 1 + rng.below(9000)),
        1 => {
            let b = rng.below(pages + 1) * P;
            let off = (b + rng.below(1200)).saturating_sub(600);
            (off, 1 + rng.below(2 * P + 100))
        }
        2 => (rng.below(pages) * P, P * (1 + rng.below(3))),
        3 => (rng.below(window), rng.below(window)),
        _ => (rng.below(window), rng.below(64)),
    };
    let off = off.min(window - 1);
    (off, len.min(window - off))
}

fn check_extents(a: &dyn Allocator, model: &[u8], base: u64, off: u64, len: u64, exact: bool) {
    let ext: Vec<AllocExtent> = a.extents(len, base + off).unwrap();
    let mut pos = base + off;
    for e in &ext {
        assert_eq!(
            e.offset,
            pos,
            "{}: extents not contiguous: {ext:?}",
            a.name()
        );
        assert!(e.length > 0, "{}: empty extent", a.name());
        assert!(
            [0, ZERO, HOLE | ZERO].contains(&e.typ),
            "{}: bad type {}",
            a.name(),
            e.typ
        );
        let m = &model[(e.offset - base) as usize..(e.offset - base + e.length) as usize];
        if e.typ != 0 {
            assert!(
                m.iter().all(|&b| b == 0),
                "{}: extent {e:?} claims zero where data is",
                a.name()
            );
        }
        if exact {
            // Pages fully inside a data extent must hold a non-zero byte.
            let first = (e.offset - base).div_ceil(P);
            let last = (e.offset - base + e.length) / P;
            for p in first..last {
                let pm = &model[(p * P) as usize..((p + 1) * P) as usize];
                assert_eq!(
                    e.typ == 0,
                    pm.iter().any(|&b| b != 0),
                    "{}: page {p} reported {} but model nonzero={}",
                    a.name(),
                    e.typ,
                    pm.iter().any(|&b| b != 0)
                );
            }
        }
        pos += e.length;
    }
    assert_eq!(
        pos,
        base + off + len,
        "{}: extents do not cover {len} bytes",
        a.name()
    );
}

/// Run `ops` random operations on `a` at `[base, base+window)`.
fn run_model(a: &dyn Allocator, base: u64, window: u64, seed: u64, ops: usize, exact: bool) {
    let mut rng = Rng(seed);
    let mut model = vec![0u8; window as usize];
    // A blit source with its own known contents.
    let src = Sparse::new();
    let src_data: Vec<u8> = (0..window).map(|i| (i * 31 % 253) as u8).collect();
    src.write(&src_data, 12345).unwrap();
    let mut buf = Vec::new();
    for i in 0..ops {
        let (off, len) = pick(&mut rng, window);
        let (o, l) = (off as usize, len as usize);
        match rng.below(20) {
            0..=6 => {
                let d = rng.bytes(l);
                a.write(&d, base + off).unwrap();
                model[o..o + l].copy_from_slice(&d);
            }
            7..=8 => {
                let b = if rng.below(3) == 0 {
                    0
                } else {
                    rng.next() as u8
                };
                a.fill(b, len, base + off).unwrap();
                model[o..o + l].fill(b);
            }
            9..=11 => {
                a.zero(len, base + off).unwrap();
                model[o..o + l].fill(0);
            }
            12 => {
                let so = rng.below(window - len + 1);
                a.blit(&src, len, 12345 + so, base + off).unwrap();
                model[o..o + l].copy_from_slice(&src_data[so as usize..(so + len) as usize]);
            }
            13..=16 => {
                buf.resize(l, 0xAA);
                a.read(&mut buf, base + off).unwrap();
                assert!(
                    buf[..] == model[o..o + l],
                    "{}: seed {seed} op {i}: read of {len} at {off} differs",
                    a.name()
                );
            }
            _ => check_extents(a, &model, base, off, len, exact),
        }
    }
    let mut all = vec![0xAAu8; window as usize];
    a.read(&mut all, base).unwrap();
    assert!(
        all == model,
        "{}: seed {seed}: final contents differ",
        a.name()
    );
    check_extents(a, &model, base, 0, window, exact);
}

fn all_kinds(size: u64) -> Vec<Arc<dyn Allocator>> {
    vec![
        Arc::new(Sparse::with_size(size)),
        Arc::new(Malloc::new(size, false).unwrap()),
        Arc::new(Zstd::with_size(size)),
    ]
}

#[test]
fn random_sequences_all_allocators() {
    let window = 24 * P + 1000;
    for seed in 1..=6 {
        for a in all_kinds(window) {
            let exact = a.name() != "malloc";
            run_model(&*a, 0, window, seed, 1500, exact);
        }
    }
}

/// Run `f` while another thread keeps compacting `z`.
fn compacting(z: &Zstd, f: impl FnOnce()) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                z.compact();
                std::thread::yield_now();
            }
        });
        f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn random_sequences_zstd_no_cache_while_compacting() {
    let window = 20 * P + 77;
    for (seed, cache) in [(21, 0), (22, 1), (23, 0)] {
        let z = Zstd::with_cache(window, cache);
        compacting(&z, || run_model(&z, 0, window, seed, 1500, true));
        z.compact();
        assert_eq!(z.pending_pages(), 0, "compaction left pending pages");
        z.zero(window, 0).unwrap();
        assert!(z.stats().starts_with("zstd: 0 pages"), "{}", z.stats());
        run_model(&z, 0, window, seed + 100, 300, true);
    }
}

#[test]
fn huge_offsets_sparse_zstd() {
    let window = 12 * P;
    let base = (1u64 << 63) - window;
    for seed in 10..=13 {
        let a: [Arc<dyn Allocator>; 2] = [Arc::new(Sparse::new()), Arc::new(Zstd::new())];
        for a in a {
            run_model(&*a, base, window, seed, 800, true);
            // The last byte of the address space works; one past does not.
            a.write(&[7], (1u64 << 63) - 1).unwrap();
            let mut b = [0u8; 1];
            a.read(&mut b, (1u64 << 63) - 1).unwrap();
            assert_eq!(b[0], 7);
            assert!(a.read(&mut b, 1u64 << 63).is_err());
            assert!(a.write(&[1, 2], (1u64 << 63) - 1).is_err());
            assert!(a.extents(2, u64::MAX).is_err());
            // An extents query over the whole space skips missing subtrees.
            let e = a.extents(1u64 << 63, 0).unwrap();
            assert_eq!(e[0].typ, HOLE | ZERO);
            assert!(e[0].length >= base);
            assert_eq!(e.last().unwrap().typ, 0);
            assert!(e.last().unwrap().offset <= (1u64 << 63) - P);
            // Zeroing the whole space frees everything.
            a.zero(1u64 << 63, 0).unwrap();
            assert_eq!(a.extents(1u64 << 63, 0).unwrap().len(), 1);
        }
    }
}

#[test]
fn malloc_range_and_odd_size() {
    let size = 5 * P + 123;
    let a = Malloc::new(size, false).unwrap();
    run_model(&a, 0, size, 99, 1500, false);
    assert!(a.read(&mut [0u8; 2], size - 1).is_err());
    assert!(a.zero(1, size).is_err());
    assert!(a.set_size_hint(size + 1).is_err());
    assert_eq!(a.preferred_block(), 512);
}

/// Several threads write interleaved 64-byte granules of the same pages; each
/// checks its own bytes as it goes, and the result must equal the merge.
fn concurrent(a: Arc<dyn Allocator>, base: u64) {
    const T: u64 = 4;
    const G: u64 = 64;
    let len = 3 * P + 2000;
    let models: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..T)
            .map(|t| {
                let a = a.clone();
                s.spawn(move || {
                    let mut rng = Rng(1000 + t);
                    let mut model = vec![0u8; len as usize];
                    let granules = len / G;
                    for _ in 0..600 {
                        let g = rng.below(granules / T) * T + t;
                        let off = g * G + rng.below(G / 2);
                        let n = 1 + rng.below(G - (off - g * G));
                        let (o, l) = (off as usize, n as usize);
                        match rng.below(3) {
                            0 => {
                                let d = rng.bytes(l);
                                a.write(&d, base + off).unwrap();
                                model[o..o + l].copy_from_slice(&d);
                            }
                            1 => {
                                let b = rng.next() as u8;
                                a.fill(b, n, base + off).unwrap();
                                model[o..o + l].fill(b);
                            }
                            _ => {
                                a.zero(n, base + off).unwrap();
                                model[o..o + l].fill(0);
                            }
                        }
                        let mut back = vec![0u8; G as usize];
                        a.read(&mut back, base + g * G).unwrap();
                        assert_eq!(
                            back[..],
                            model[(g * G) as usize..((g + 1) * G) as usize],
                            "{}: thread {t} lost its bytes in granule {g}",
                            a.name()
                        );
                    }
                    model
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut merged = vec![0u8; len as usize];
    for (i, m) in merged.iter_mut().enumerate() {
        let owner = (i as u64 / G) % T;
        *m = models[owner as usize][i];
    }
    let mut all = vec![0u8; len as usize];
    a.read(&mut all, base).unwrap();
    assert!(all == merged, "{}: concurrent writers lost data", a.name());
    check_extents(&*a, &merged, base, 0, len, false);
}

#[test]
fn concurrent_writers_same_pages() {
    let base = P - 1000;
    for a in all_kinds(8 * P) {
        concurrent(a, base);
    }
    concurrent(Arc::new(Sparse::new()), (1u64 << 63) - 4 * P);
    let z = Arc::new(Zstd::with_cache(1 << 63, 0));
    compacting(&z, || concurrent(z.clone(), (1u64 << 63) - 4 * P));
}

#[test]
fn sparse_frees_zero_pages() {
    let a = Sparse::new();
    a.write(&[1u8; 100], P - 50).unwrap();
    assert_eq!(a.allocated_pages(), 2);
    a.write(&[0u8; 50], P - 50).unwrap();
    assert_eq!(a.allocated_pages(), 1);
    a.zero(10, P).unwrap();
    a.zero(30, P + 10).unwrap();
    assert_eq!(a.allocated_pages(), 1);
    a.zero(50, P + 10).unwrap();
    assert_eq!(a.allocated_pages(), 0);
    a.write(&vec![0u8; 3 * PAGE], 0).unwrap();
    assert_eq!(a.allocated_pages(), 0);
    a.fill(9, 1, 5 * P).unwrap();
    assert_eq!(a.allocated_pages(), 1);
    a.fill(0, 1, 5 * P).unwrap();
    assert_eq!(a.allocated_pages(), 0);
    assert!(a.stats().contains("0 pages"));
}

#[test]
fn zstd_compresses_and_compacts() {
    let z = Zstd::new();
    let text: Vec<u8> = (0..64 * PAGE)
        .map(|i| b"the quick brown fox jumps over the lazy dog "[i % 44] ^ (i / 4096) as u8)
        .collect();
    for (i, c) in text.chunks(4096).enumerate() {
        z.write(c, i as u64 * 4096).unwrap();
    }
    z.compact();
    assert!(z.ratio() > 4.0, "ratio {}", z.ratio());
    assert!(z.stats().contains("compression ratio"), "{}", z.stats());
    let mut back = vec![0u8; text.len()];
    z.read(&mut back, 0).unwrap();
    assert!(back == text);
    // Whole-page overwrite of a compressed page, then zero it away.
    z.write(&[5u8; PAGE], 3 * P).unwrap();
    z.zero(P, 3 * P).unwrap();
    let e = z.extents(5 * P, 0).unwrap();
    assert_eq!(
        e[1],
        AllocExtent {
            offset: 3 * P,
            length: P,
            typ: HOLE | ZERO
        }
    );
}

#[test]
fn malloc_untouched_pages_cost_no_rss() {
    fn rss() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
            * 1024
    }
    let before = rss();
    let a = Malloc::new(4 << 30, false).unwrap();
    a.write(&[1u8; 4096], 1 << 30).unwrap();
    let mut b = [0u8; 4096];
    a.read(&mut b, 3 << 30).unwrap();
    assert!(rss() < before + (512 << 20), "a 4 GiB region made RSS grow");
    let e = a.extents(4 << 30, 0).unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[1],
        AllocExtent {
            offset: 1 << 30,
            length: 4096,
            typ: 0
        }
    );
}

#[test]
fn malloc_mlock_works_or_names_ulimit() {
    match Malloc::new(1 << 20, true) {
        Ok(a) => {
            assert!(a.is_locked());
            a.write(&[3u8; 10], 100).unwrap();
            a.zero(4096, 0).unwrap();
            let mut b = [1u8; 10];
            a.read(&mut b, 100).unwrap();
            assert_eq!(b, [0u8; 10]);
        }
        Err(e) => assert!(e.to_string().contains("ulimit -l"), "{e}"),
    }
}

#[test]
fn spec_creates_each_allocator() {
    for (s, name, pref) in [
        ("sparse", "sparse", 32768),
        ("malloc", "malloc", 512),
        ("zstd", "zstd", 32768),
    ] {
        let a = AllocSpec::parse(s).unwrap().create(1 << 20).unwrap();
        assert_eq!(a.name(), name);
        assert_eq!(a.preferred_block(), pref);
    }
    assert!(AllocSpec::parse("malloc,mlock=maybe").is_err());
}
