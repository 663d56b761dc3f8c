//! Native byte helpers for building test images (the built-in library's
//! `std/mbr`, `std/gpt`, `std/fat`, `std/sectors` and any script):
//! checksums (`crc32`, `crc32c`), UTF-16LE text, GUIDs (`guid`,
//! `seeded_guid`), FAT tables and long-name slots (`fat_table`,
//! `fat_lfn`), sector stamps (`sector_stamp`, `offset_pattern`) and
//! `first_difference`, so no script needs a per-byte loop. Only
//! `src/script/` may import rhai.

use super::raise::{raise, RResult};
use crate::backend::Errno;
use rhai::{Array, Blob, Engine, INT};

pub use crate::ondisk::{crc32, crc32c, guid_bytes};

/// Largest Blob one of these helpers builds.
const MAX_OUT: u64 = 256 << 20;

fn inval(msg: String) -> Box<rhai::EvalAltResult> {
    raise(Errno::Inval, msg)
}

/// A version-4-shaped GUID computed from `seed`: the same seed always
/// gives the same GUID (FNV-1a then SplitMix64; stable forever).
pub fn seeded_guid(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut next = || {
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&next().to_be_bytes());
    b[8..].copy_from_slice(&next().to_be_bytes());
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// A FAT (12, 16 or 32 bits an entry) with the two reserved entries and
/// one chain per run `[first_cluster, count]` (the clusters of a run are
/// contiguous; its last entry is end-of-chain). Only as long as the last
/// used entry needs: the rest of a FAT is zeros (free clusters).
pub fn fat_table(bits: INT, media: INT, clusters: INT, runs: &Array) -> Result<Blob, String> {
    let (mask, eoc): (u32, u32) = match bits {
        12 => (0xFFF, 0xFFF),
        16 => (0xFFFF, 0xFFFF),
        32 => (0x0FFF_FFFF, 0x0FFF_FFFF),
        _ => return Err(format!("fat_table: bits must be 12, 16 or 32, got {bits}")),
    };
    if !(0..=0x0FFF_FFF5).contains(&clusters) {
        return Err(format!("fat_table: {clusters} clusters is out of range"));
    }
    let limit = clusters as u64 + 2;
    let mut parsed = Vec::with_capacity(runs.len());
    let mut end = 2u64;
    for r in runs {
        let pair: Vec<INT> = r
            .read_lock::<Array>()
            .map(|a| a.iter().filter_map(|x| x.as_int().ok()).collect())
            .unwrap_or_default();
        let [first, count] = pair[..] else {
            return Err(format!(
                "fat_table: each run must be [first_cluster, count], got {r}"
            ));
        };
        if first < 2 || count < 1 || (first as u64).saturating_add(count as u64) > limit {
            return Err(format!(
                "fat_table: run [{first}, {count}] is outside clusters 2..{}",
                limit - 1
            ));
        }
        end = end.max(first as u64 + count as u64);
        parsed.push((first as u64, count as u64));
    }
    let bytes = (end * bits as u64).div_ceil(8);
    let mut t = vec![0u8; bytes as usize];
    let put = |t: &mut Vec<u8>, n: u64, v: u32| -> Result<(), String> {
        let v = v & mask;
        match bits {
            12 => {
                let o = (n * 3 / 2) as usize;
                let old = if n.is_multiple_of(2) {
                    let o0 = u32::from(t[o]) | (u32::from(t[o + 1] & 0x0F) << 8);
                    t[o] = v as u8;
                    t[o + 1] = (t[o + 1] & 0xF0) | ((v >> 8) as u8 & 0x0F);
                    o0
                } else {
                    let o0 = u32::from(t[o] >> 4) | (u32::from(t[o + 1]) << 4);
                    t[o] = (t[o] & 0x0F) | ((v as u8 & 0x0F) << 4);
                    t[o + 1] = (v >> 4) as u8;
                    o0
                };
                if old != 0 && n >= 2 {
                    return Err(format!("fat_table: cluster {n} is in two runs"));
                }
            }
            16 => {
                let o = (n * 2) as usize;
                if n >= 2 && t[o..o + 2] != [0, 0] {
                    return Err(format!("fat_table: cluster {n} is in two runs"));
                }
                t[o..o + 2].copy_from_slice(&(v as u16).to_le_bytes());
            }
            _ => {
                let o = (n * 4) as usize;
                if n >= 2 && t[o..o + 4] != [0, 0, 0, 0] {
                    return Err(format!("fat_table: cluster {n} is in two runs"));
                }
                t[o..o + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    };
    put(&mut t, 0, (0xFFFF_FF00 | (media as u32 & 0xFF)) & mask)?;
    put(&mut t, 1, eoc)?;
    for (first, count) in parsed {
        for c in first..first + count - 1 {
            put(&mut t, c, (c + 1) as u32)?;
        }
        put(&mut t, first + count - 1, eoc)?;
    }
    Ok(t)
}

/// The checksum of an 11-byte short name that each long-name slot carries.
fn short_sum(short: &[u8]) -> u8 {
    short
        .iter()
        .fold(0u8, |s, c| s.rotate_right(1).wrapping_add(*c))
}

/// The VFAT long-name slots for `name`, in on-disk order (the slot with
/// the end of the name first), for the short entry `short` (11 bytes).
pub fn fat_lfn(name: &str, short: &[u8]) -> Result<Blob, String> {
    if short.len() != 11 {
        return Err(format!(
            "fat_lfn: the short name must be 11 bytes, got {}",
            short.len()
        ));
    }
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if units.is_empty() || units.len() > 255 {
        return Err(format!(
            "fat_lfn: a long name has 1 to 255 UTF-16 units, {name:?} has {}",
            units.len()
        ));
    }
    let slots = units.len().div_ceil(13);
    if !units.len().is_multiple_of(13) {
        units.push(0);
    }
    units.resize(slots * 13, 0xFFFF);
    let sum = short_sum(short);
    let mut out = Vec::with_capacity(slots * 32);
    for k in (1..=slots).rev() {
        let u = &units[(k - 1) * 13..k * 13];
        let mut e = [0u8; 32];
        e[0] = k as u8 | if k == slots { 0x40 } else { 0 };
        e[11] = 0x0F;
        e[13] = sum;
        let put = |e: &mut [u8; 32], at: usize, us: &[u16]| {
            for (i, v) in us.iter().enumerate() {
                e[at + 2 * i..at + 2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
        };
        put(&mut e, 1, &u[0..5]);
        put(&mut e, 14, &u[5..11]);
        put(&mut e, 28, &u[11..13]);
        out.extend_from_slice(&e);
    }
    Ok(out)
}

/// The 32-byte text record that fills a stamped sector:
/// `TAG (15 columns) LBA (15 columns, right-aligned)\n`.
fn stamp_record(tag: &str, lba: u64) -> [u8; 32] {
    let mut r = [b' '; 32];
    let t = tag.as_bytes();
    let n = t.len().min(15);
    r[..n].copy_from_slice(&t[..n]);
    let num = lba.to_string();
    let nb = num.as_bytes();
    let k = nb.len().min(15);
    r[31 - k..31].copy_from_slice(&nb[nb.len() - k..]);
    r[31] = b'\n';
    r
}

fn checked_len(count: INT, offset: INT, what: &str) -> Result<(usize, u64), String> {
    if count < 0 || offset < 0 || (offset as u64).checked_add(count as u64).is_none() {
        return Err(format!(
            "{what}: count and offset must not be negative (got {count}, {offset})"
        ));
    }
    if count as u64 > MAX_OUT {
        return Err(format!("{what}: {count} bytes is too large"));
    }
    Ok((count as usize, offset as u64))
}

/// `count` bytes at `offset` of a disk whose every sector (`sector_size`
/// bytes) repeats the record `stamp_record(tag, sector number)`.
pub fn sector_stamp(count: INT, offset: INT, tag: &str, sector_size: INT) -> Result<Blob, String> {
    let (n, off) = checked_len(count, offset, "sector_stamp")?;
    if !(1..=1 << 20).contains(&sector_size) {
        return Err(format!(
            "sector_stamp: sector size must be 1 to 1048576 bytes, got {sector_size}"
        ));
    }
    let ss = sector_size as u64;
    let mut out = Vec::with_capacity(n);
    let mut pos = off;
    let end = off + n as u64;
    let mut sector = Vec::with_capacity(ss as usize);
    while pos < end {
        let lba = pos / ss;
        let rec = stamp_record(tag, lba);
        sector.clear();
        while sector.len() < ss as usize {
            let take = (ss as usize - sector.len()).min(32);
            sector.extend_from_slice(&rec[..take]);
        }
        let from = (pos - lba * ss) as usize;
        let to = ((end - lba * ss).min(ss)) as usize;
        out.extend_from_slice(&sector[from..to]);
        pos = (lba + 1) * ss;
    }
    Ok(out)
}

/// `count` bytes at `offset` of nbdkit's `pattern` plugin: every 8-byte
/// word holds its own offset, big-endian.
pub fn offset_pattern(count: INT, offset: INT) -> Result<Blob, String> {
    let (n, off) = checked_len(count, offset, "offset_pattern")?;
    let mut out = Vec::with_capacity(n + 16);
    let mut w = off & !7;
    while (out.len() as u64) < n as u64 + (off - (off & !7)) {
        out.extend_from_slice(&w.to_be_bytes());
        w += 8;
    }
    let skip = (off & 7) as usize;
    Ok(out[skip..skip + n].to_vec())
}

/// Index of the first byte where `a` and `b` differ (or where the shorter
/// one ends), -1 when they are equal.
pub fn first_difference(a: &[u8], b: &[u8]) -> INT {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => i as INT,
        None if a.len() == b.len() => -1,
        None => a.len().min(b.len()) as INT,
    }
}

/// Register the helpers as host functions.
pub fn register(e: &mut Engine) {
    e.register_fn("crc32", |b: &mut Blob| crc32(b) as INT);
    e.register_fn("crc32c", |b: &mut Blob| crc32c(b) as INT);
    e.register_fn("utf16le", |s: &str| -> Blob {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    });
    e.register_fn("guid", |s: &str| -> RResult<Blob> {
        guid_bytes(s).map(|g| g.to_vec()).map_err(inval)
    });
    e.register_fn("seeded_guid", |s: &str| seeded_guid(s));
    e.register_fn(
        "fat_table",
        |bits: INT, media: INT, clusters: INT, runs: Array| -> RResult<Blob> {
            fat_table(bits, media, clusters, &runs).map_err(inval)
        },
    );
    e.register_fn("fat_lfn", |name: &str, short: Blob| -> RResult<Blob> {
        fat_lfn(name, &short).map_err(inval)
    });
    e.register_fn(
        "sector_stamp",
        |count: INT, offset: INT, tag: &str| -> RResult<Blob> {
            sector_stamp(count, offset, tag, 512).map_err(inval)
        },
    );
    e.register_fn(
        "sector_stamp",
        |count: INT, offset: INT, tag: &str, ss: INT| -> RResult<Blob> {
            sector_stamp(count, offset, tag, ss).map_err(inval)
        },
    );
    e.register_fn(
        "offset_pattern",
        |count: INT, offset: INT| -> RResult<Blob> { offset_pattern(count, offset).map_err(inval) },
    );
    e.register_fn("first_difference", |a: &mut Blob, b: Blob| {
        first_difference(a, &b)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guid_layout() {
        let g = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(
            g,
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(
            guid_bytes("{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}").unwrap(),
            g
        );
        assert!(guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_err());
        assert!(guid_bytes("X12A7328-F81F-11D2-BA4B-00A0C93EC93B").is_err());
        let a = seeded_guid("disk");
        assert_eq!(a, seeded_guid("disk"));
        assert_ne!(a, seeded_guid("disk2"));
        assert_eq!(&a[14..15], "4");
        assert!(guid_bytes(&a).is_ok());
    }

    #[test]
    fn fat12_packing() {
        let runs: Array = vec![rhai::Dynamic::from_array(vec![2.into(), 3.into()])];
        let t = fat_table(12, 0xF0, 100, &runs).unwrap();
        // entries F0F FFF 003 004 FFF
        assert_eq!(t, vec![0xF0, 0xFF, 0xFF, 0x03, 0x40, 0x00, 0xFF, 0x0F]);
        let twice: Array = vec![
            rhai::Dynamic::from_array(vec![2.into(), 3.into()]),
            rhai::Dynamic::from_array(vec![4.into(), 1.into()]),
        ];
        assert!(fat_table(12, 0xF0, 100, &twice)
            .unwrap_err()
            .contains("two runs"));
        assert!(fat_table(16, 0xF8, 3, &runs).is_ok());
        assert!(fat_table(16, 0xF8, 2, &runs).is_err());
        let t = fat_table(32, 0xF8, 100, &runs).unwrap();
        assert_eq!(&t[..8], &[0xF8, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F]);
        assert_eq!(&t[8..12], &[3, 0, 0, 0]);
        assert_eq!(&t[16..20], &[0xFF, 0xFF, 0xFF, 0x0F]);
    }

    #[test]
    fn lfn_slots() {
        let short = *b"LONGFI~1TXT";
        let s = fat_lfn("Long file name.txt", &short).unwrap();
        assert_eq!(s.len(), 64);
        assert_eq!(s[0], 0x42);
        assert_eq!(s[32], 0x01);
        assert_eq!(s[11], 0x0F);
        assert_eq!(&s[33..35], &[b'L', 0]);
        // 18 units: the second slot holds units 13..18, a 0 and 0xFFFF fill.
        assert_eq!(&s[1..3], &[b'e', 0]);
        assert_eq!(&s[14..18], &[0, 0, 0xFF, 0xFF]);
        assert!(fat_lfn(&"x".repeat(256), &short).is_err());
    }

    #[test]
    fn stamps_and_offsets() {
        let s = sector_stamp(1024, 0, "disk", 512).unwrap();
        assert_eq!(&s[..32], b"disk                          0\n");
        assert_eq!(&s[512..544], b"disk                          1\n");
        let part = sector_stamp(40, 500, "disk", 512).unwrap();
        assert_eq!(&part[..], &s[500..540]);
        let p = offset_pattern(20, 6).unwrap();
        assert_eq!(
            p,
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]
        );
        assert_eq!(first_difference(b"abc", b"abd"), 2);
        assert_eq!(first_difference(b"abc", b"abc"), -1);
        assert_eq!(first_difference(b"abc", b"ab"), 2);
    }
}
