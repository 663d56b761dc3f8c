//! Tests of the zstd allocator's own machinery: the sub-frame form, the
//! per-thread decompressed page, flush, the live usage and the idle pass.
//! Test-only; imports nothing outside `alloc`.

use super::codec::{self, SUB};
use super::{Form, Zstd};
use crate::alloc::{dump_lines, Allocator, Sparse, PAGE};

const P: u64 = PAGE as u64;

fn rng(s: &mut u64) -> u8 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s >> 24) as u8
}

/// `pages` pages where each 4 KiB block is 2 KiB of noise then 2 KiB of
/// zeros (scripts/bench's compressible data): nothing to gain from
/// matches across 4 KiB, so sub-frames cost almost nothing.
fn noisy(pages: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..pages * PAGE)
        .map(|i| if i % SUB < SUB / 2 { rng(&mut s) } else { 0 })
        .collect()
}

/// Text that repeats across the page: one frame compresses far better.
fn text(pages: usize) -> Vec<u8> {
    (0..pages * PAGE)
        .map(|i| b"the quick brown fox jumps over the lazy dog "[i % 44] ^ (i / 4096) as u8)
        .collect()
}

fn read(z: &Zstd, len: usize, off: u64) -> Vec<u8> {
    let mut b = vec![0xeeu8; len];
    z.read(&mut b, off).unwrap();
    b
}

#[test]
fn split_form_round_trips_and_skips_zero_blocks() {
    let mut page = [0u8; PAGE];
    let n = noisy(1, 7);
    page[SUB..2 * SUB].copy_from_slice(&n[..SUB]); // half noise
    let mut s = 99;
    for b in &mut page[3 * SUB..4 * SUB] {
        *b = rng(&mut s); // incompressible: kept as it is
    }
    page[5 * SUB..6 * SUB].copy_from_slice(&text(1)[..SUB]);
    let sp = codec::split(&page).unwrap();
    // 16 bytes of index, 2 KiB-ish noise, 4 KiB raw, a little text.
    assert!(sp.len() < 16 + 2200 + SUB + 200, "{}", sp.len());
    let mut back = [1u8; PAGE];
    codec::unpack(&sp, true, &mut back).unwrap();
    assert!(back[..] == page[..]);
    // Reads at every alignment, crossing sub-frame edges.
    for (off, len) in [
        (0, 1),
        (SUB - 3, 7),
        (SUB, SUB),
        (3 * SUB + 5, 2 * SUB),
        (PAGE - 1, 1),
    ] {
        let mut out = vec![0u8; len];
        codec::read_split(&sp, off, &mut out).unwrap();
        assert!(out[..] == page[off..off + len], "{off}+{len}");
    }
    // A truncated index is an error, never a panic.
    assert!(codec::unpack(&sp[..10], true, &mut back).is_err());
}

#[test]
fn idle_pass_splits_noisy_pages_and_keeps_text_whole() {
    let z = Zstd::with_size(64 * P);
    let data = noisy(8, 3);
    let txt = text(8);
    z.write(&data, 0).unwrap();
    z.write(&txt, 8 * P).unwrap();
    z.compact();
    assert_eq!(z.pending_pages(), 0);
    assert_eq!(z.split_pages(), 8, "{}", z.stats());
    assert!(
        z.stats().contains("8 of them in 4 KiB frames"),
        "{}",
        z.stats()
    );
    assert!(z.ratio() > 1.7, "{}", z.stats());
    // Every 4 KiB block alone, then unaligned ranges across pages.
    for b in 0..16 * PAGE / SUB {
        let off = (b * SUB) as u64;
        let want = if b < 8 * PAGE / SUB {
            &data[..]
        } else {
            &txt[..]
        };
        let base = if b < 8 * PAGE / SUB { 0 } else { 8 * PAGE };
        let i = b * SUB - base;
        assert!(read(&z, SUB, off) == want[i..i + SUB], "block {b}");
    }
    assert!(read(&z, 3 * PAGE, P - 100) == data[PAGE - 100..4 * PAGE - 100]);
    let mut all = data.clone();
    all.extend_from_slice(&txt);
    assert!(read(&z, 16 * PAGE, 0) == all);
}

#[test]
fn writes_into_split_and_whole_pages() {
    let z = Zstd::with_cache(16 * P, 0);
    let mut model = noisy(4, 5);
    model.extend_from_slice(&text(4));
    z.write(&model, 0).unwrap();
    z.compact();
    assert_eq!(z.split_pages(), 4);
    // Partial writes: a split page, a whole-frame page, across both.
    for (off, len, byte) in [
        (100, 10, 1u8),
        (5 * PAGE + 7, 300, 2),
        (4 * PAGE - 50, 100, 3),
    ] {
        z.write(&vec![byte; len], off as u64).unwrap();
        model[off..off + len].fill(byte);
    }
    assert!(read(&z, 8 * PAGE, 0) == model);
    z.compact();
    assert!(read(&z, 8 * PAGE, 0) == model);
    // Zeroing a split page makes it a hole.
    z.zero(P, P).unwrap();
    model[PAGE..2 * PAGE].fill(0);
    assert_eq!(
        z.extents(P, P).unwrap()[0].typ,
        crate::alloc::HOLE | crate::alloc::ZERO
    );
    assert!(read(&z, 8 * PAGE, 0) == model);
}

#[test]
fn thread_page_buffer_never_serves_stale_bytes() {
    let z = Zstd::with_cache(8 * P, 0);
    let t = text(2);
    z.write(&t, 0).unwrap();
    // Small sequential reads decompress the page once, into this thread's
    // buffer; a change to the page must be seen by the next read.
    for i in 0..8 {
        assert!(read(&z, 512, i * 512) == t[i as usize * 512..(i as usize + 1) * 512]);
    }
    z.write(b"NEW", 10).unwrap();
    assert_eq!(read(&z, 3, 10), b"NEW");
    z.write(&t[..PAGE], 0).unwrap();
    assert!(read(&z, 100, 0) == t[..100]);
    // Another allocator's page with the same index is not this one.
    let z2 = Zstd::with_cache(8 * P, 0);
    z2.write(&t[PAGE..], 0).unwrap();
    assert!(read(&z2, 100, 0) == t[PAGE..PAGE + 100]);
    assert!(read(&z, 100, 0) == t[..100]);
}

#[test]
fn random_pages_are_stored_once_idle() {
    let z = Zstd::with_size(8 * P);
    let mut s = 11u64;
    let r: Vec<u8> = (0..2 * PAGE).map(|_| rng(&mut s)).collect();
    z.write(&r, 0).unwrap();
    z.compact();
    assert_eq!(z.pending_pages(), 0);
    let u = z.usage();
    assert_eq!(u.stored, 2 * P);
    assert_eq!(u.used, 2 * P, "{}", z.stats());
    assert!(read(&z, 2 * PAGE, 0) == r);
    // The form a sample chose is retried and settled by the idle pass.
    let slot = z.inner.table.get(0).unwrap();
    assert!(matches!(
        &*slot.0.read(),
        super::ZPage::Packed {
            form: Form::Stored,
            ..
        }
    ));
}

#[test]
fn flush_compresses_the_cache_and_usage_is_live() {
    let z = Zstd::with_size(64 * P);
    z.write(&text(4), 0).unwrap();
    let u = z.usage();
    assert!(u.compressed);
    assert_eq!((u.stored, u.used), (4 * P, 4 * P), "in the cache");
    z.flush().unwrap();
    let u = z.usage();
    assert_eq!(u.stored, 4 * P);
    assert!(u.used < P, "{}", z.stats());
    let line = format!("compression ratio {:.3}", u.ratio());
    assert!(z.stats().ends_with(&line), "{} / {line}", z.stats());
    let d = dump_lines(&z);
    assert_eq!(d[0], ("allocator".into(), "zstd".into()));
    assert_eq!(d[1].0, "allocator_stats");
    assert_eq!(
        d[2],
        ("compression_ratio".into(), format!("{:.3}", u.ratio()))
    );
    // Allocators that do not compress have no ratio line.
    let s = Sparse::with_size(P);
    assert!(dump_lines(&s).iter().all(|(k, _)| k != "compression_ratio"));
    assert_eq!(Sparse::with_size(P).usage().ratio(), 1.0);
}

#[test]
fn entropy_estimate_decides_what_is_compressed_while_writing() {
    let mut s = 5u64;
    let mut page = |f: &mut dyn FnMut(usize, u8) -> u8| -> Box<[u8; PAGE]> {
        let mut p = Box::new([0u8; PAGE]);
        for (i, b) in p.iter_mut().enumerate() {
            *b = f(i, rng(&mut s));
        }
        p
    };
    // Random bytes, and random bytes with one in 8 zero (as the blocks fio
    // writes, which zstd shrinks by under 10%): not worth it yet.
    assert!(!codec::worth_compressing(&page(&mut |_, r| r), 0));
    assert!(!codec::worth_compressing(
        &page(&mut |i, r| if i % 8 == 0 { 0 } else { r }),
        0
    ));
    // One zero 4 KiB block in a random page saves MIN_GAIN: worth it.
    assert_eq!(codec::MIN_GAIN, SUB);
    assert!(codec::worth_compressing(
        &page(&mut |i, r| if i < SUB { 0 } else { r }),
        0
    ));
    // Random with a third zeros, half-zero blocks, text: worth it.
    assert!(codec::worth_compressing(
        &page(&mut |i, r| if i % 3 == 0 { 0 } else { r }),
        0
    ));
    let n = noisy(1, 9);
    assert!(codec::worth_compressing(n[..].try_into().unwrap(), 0));
    let t = text(1);
    assert!(codec::worth_compressing(t[..].try_into().unwrap(), 0));
    // A page of one repeated byte estimates to nothing.
    assert!(codec::worth_compressing(&page(&mut |_, _| 7), 0));
    // Blocks known to gain nothing are not sampled.
    let z = page(&mut |i, r| if i < SUB { 0 } else { r });
    assert!(!codec::worth_compressing(&z, 1));
    assert!(codec::worth_compressing(&z, 0xfe));
}

#[test]
fn a_write_into_a_page_kept_as_is_samples_the_blocks_it_changed() {
    let z = Zstd::with_cache(8 * P, 0);
    let mut s = 21u64;
    let r: Vec<u8> = (0..PAGE).map(|_| rng(&mut s)).collect();
    z.write(&r, 0).unwrap();
    z.compact();
    assert_eq!((z.pending_pages(), z.usage().used), (0, P));
    let form = |z: &Zstd| match &*z.inner.table.get(0).unwrap().0.read() {
        super::ZPage::Packed { form, .. } => Some(*form),
        _ => None,
    };
    assert_eq!(form(&z), Some(Form::Stored));
    // A block of one byte in a random page saves MIN_GAIN: compressed.
    let mut model = r.clone();
    z.write(&[0x41; SUB], 2 * SUB as u64).unwrap();
    model[2 * SUB..3 * SUB].fill(0x41);
    assert_eq!(form(&z), Some(Form::Frame), "{}", z.stats());
    assert!(z.usage().used < P - 4000, "{}", z.stats());
    // Random bytes back in its place: that page gains nothing, kept as is.
    z.write(&r[..SUB], 2 * SUB as u64).unwrap();
    model[2 * SUB..3 * SUB].copy_from_slice(&r[..SUB]);
    assert_eq!(form(&z), Some(Form::Sampled), "{}", z.stats());
    assert!(read(&z, PAGE, 0) == model);
    assert_eq!(super::blocks(0, PAGE), 0xff);
    assert_eq!(super::blocks(SUB - 1, 2), 0b11);
    assert_eq!(super::blocks(PAGE - 1, 1), 0x80);
    assert_eq!(super::blocks(5, 0), 0);
}

#[test]
fn near_random_pages_wait_for_the_idle_pass() {
    let z = Zstd::with_cache(8 * P, 0);
    let mut s = 3u64;
    let d: Vec<u8> = (0..2 * PAGE)
        .map(|i| if i % 8 == 0 { 0 } else { rng(&mut s) })
        .collect();
    z.write(&d, 0).unwrap();
    // Written as they are (no zstd call), so used == stored until idle.
    assert_eq!(z.pending_pages(), 2);
    assert_eq!(z.usage().used, 2 * P, "{}", z.stats());
    z.compact();
    assert_eq!(z.pending_pages(), 0);
    assert!(z.usage().used < 2 * P, "{}", z.stats());
    assert!(read(&z, 2 * PAGE, 0) == d);
}

#[test]
fn frames_leave_out_trailing_zeros() {
    assert_eq!(codec::data_len(&[0; 100]), 0);
    let mut b = [0u8; 100];
    for (pos, want) in [(0, 1), (8, 9), (91, 92), (92, 93), (99, 100)] {
        b[pos] = 7;
        assert_eq!(codec::data_len(&b), want, "nonzero up to {pos}");
    }
    // A page of text then zeros: its frame holds only the text, and
    // decompressing overwrites whatever the buffer held with the zeros.
    let mut page = [0u8; PAGE];
    page[..1000].copy_from_slice(&text(1)[..1000]);
    let c = codec::compress(&page).unwrap();
    assert_eq!(zstd::bulk::decompress(&c, PAGE).unwrap().len(), 1000);
    let mut back = [0xeeu8; PAGE];
    codec::decompress(&c, &mut back).unwrap();
    assert!(back[..] == page[..]);
    // Sub-blocks of noise with zero tails of every kind of length.
    let lens = [1, 7, 8, 4096, 2048, 4095, 0, 3001];
    let n = noisy(2, 11);
    let mut page = [0u8; PAGE];
    for (i, &l) in lens.iter().enumerate() {
        page[i * SUB..i * SUB + l].copy_from_slice(&n[i * SUB..i * SUB + l]);
        if l > 0 {
            page[i * SUB + l - 1] = 1; // the data ends exactly there
        }
    }
    let sp = codec::split(&page).unwrap();
    for (i, &l) in lens.iter().enumerate() {
        let f = codec::sub_range(&sp, i).unwrap();
        let held = match f.len() {
            0 | SUB => f.len(),
            _ => zstd::bulk::decompress(f, SUB).unwrap().len(),
        };
        assert_eq!(held, l, "sub-frame {i}");
    }
    for off in (0..PAGE).step_by(997) {
        for len in [1, 100, SUB, 2 * SUB + 5] {
            let len = len.min(PAGE - off);
            let mut out = vec![0xeeu8; len];
            codec::read_split(&sp, off, &mut out).unwrap();
            assert!(out[..] == page[off..off + len], "{off}+{len}");
        }
    }
    let mut back = [0xeeu8; PAGE];
    codec::unpack(&sp, true, &mut back).unwrap();
    assert!(back[..] == page[..]);
}

/// Random writes, fills, zeroes and idle passes on a zstd disk, checked
/// against a sparse one after every step: the data written is noise with
/// zero tails, so pages go through every form (cache, one frame,
/// sub-frames, kept as is, holes) and every write lands in one.
#[test]
fn random_changes_read_back_as_on_sparse() {
    const PAGES: usize = 12;
    for shard_pages in [0, 4] {
        let z = Zstd::with_cache(PAGES as u64 * P, shard_pages);
        let m = Sparse::new();
        let mut s = 0x1234_5678u64 ^ shard_pages as u64;
        let mut r = |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let disk = PAGES as u64 * P;
        for step in 0..1500 {
            let off = r(disk);
            let most = match r(3) {
                0 => 64,
                1 => SUB as u64 * 2,
                _ => 3 * P,
            };
            let len = (1 + r(most)).min(disk - off);
            match r(10) {
                0..=5 => {
                    let mut d = vec![0u8; len as usize];
                    let keep = r(SUB as u64 + 1) as usize;
                    for (i, b) in d.iter_mut().enumerate() {
                        let k = (off as usize + i) % SUB;
                        if k < keep {
                            *b = if step % 3 == 0 { (k % 7) as u8 + 1 } else { r(256) as u8 };
                        }
                    }
                    z.write(&d, off).unwrap();
                    m.write(&d, off).unwrap();
                }
                6 => {
                    let byte = r(2) as u8 * 0x5a;
                    z.fill(byte, len, off).unwrap();
                    m.fill(byte, len, off).unwrap();
                }
                7 => {
                    z.zero(len, off).unwrap();
                    m.zero(len, off).unwrap();
                }
                8 => z.compact(),
                _ => z.flush().unwrap(),
            }
            let (ro, rl) = (r(disk), 1 + r(2 * P));
            let rl = rl.min(disk - ro) as usize;
            let mut want = vec![0u8; rl];
            m.read(&mut want, ro).unwrap();
            assert!(read(&z, rl, ro) == want, "step {step}: {rl} bytes at {ro}");
        }
        z.compact();
        let mut want = vec![0u8; disk as usize];
        m.read(&mut want, 0).unwrap();
        assert!(read(&z, disk as usize, 0) == want, "whole disk");
        assert!(z.split_pages() > 0, "no page went to sub-frames");
    }
}

/// Small reads of split pages at every offset, checked against a sparse
/// disk: sub-frames all of one size (where `read_split` guesses right
/// where the first one starts) and of uneven sizes (where it guesses
/// wrong), zero tails, a page written partly, next to a page almost empty
/// (one frame), then a write and a trim across sub-blocks of split pages,
/// before and after they are split again.
#[test]
fn split_reads_at_every_offset_and_length() {
    let z = Zstd::with_cache(4 * P, 0);
    let m = Sparse::new();
    let mut s = 77u64;
    let put = |off: usize, d: &[u8]| {
        z.write(d, off as u64).unwrap();
        m.write(d, off as u64).unwrap();
    };
    put(0, &noisy(1, 21));
    let uneven = [SUB, 0, 100, 3000, 1, 0, 2048, 4000];
    for (i, &l) in uneven.iter().enumerate() {
        let mut d: Vec<u8> = (0..l).map(|_| rng(&mut s)).collect();
        if let Some(last) = d.last_mut() {
            *last = 1; // the data ends exactly there
        }
        put(PAGE + i * SUB, &d);
    }
    put(3 * PAGE - 10, &[9; 10]);
    put(3 * PAGE, &noisy(1, 5)[..10_000]);
    let check = |what: &str| {
        z.compact();
        let mut want = vec![0u8; 4 * PAGE];
        m.read(&mut want, 0).unwrap();
        for off in 0..4 * PAGE {
            let to_sub_end = SUB - off % SUB;
            for len in [1, 2, 63, to_sub_end, SUB] {
                let len = len.min(4 * PAGE - off);
                assert!(
                    read(&z, len, off as u64) == want[off..off + len],
                    "{what}: {len} bytes at {off}"
                );
            }
            if off % 61 == 0 {
                for len in [511, SUB + 1, 2 * SUB + 3, PAGE - off % PAGE] {
                    let len = len.min(4 * PAGE - off);
                    assert!(
                        read(&z, len, off as u64) == want[off..off + len],
                        "{what}: {len} bytes at {off}"
                    );
                }
            }
        }
        assert!(read(&z, 4 * PAGE, 0) == want, "{what}: whole disk");
    };
    let form = |page: u64| match &*z.inner.table.get(page).unwrap().0.read() {
        super::ZPage::Packed { form, .. } => Some(*form),
        _ => None,
    };
    check("split");
    for page in [0, 1, 3] {
        assert_eq!(form(page), Some(Form::Split), "page {page}: {}", z.stats());
    }
    put(SUB - 5, &[3; 700]);
    put(PAGE + 2 * SUB + 50, &noisy(1, 9)[..SUB]);
    z.zero(5000, 3000).unwrap();
    m.zero(5000, 3000).unwrap();
    z.zero(SUB as u64 + 7, P + 3 * SUB as u64 - 3).unwrap();
    m.zero(SUB as u64 + 7, P + 3 * SUB as u64 - 3).unwrap();
    check("written and trimmed");
    assert_eq!(form(1), Some(Form::Split), "{}", z.stats());
}
