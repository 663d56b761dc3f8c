//! Unit tests of the sparse-random plugin against bytes nbdkit 1.32.5
//! served for the same parameters.

use super::*;
use crate::backend::{Errno, Extent};

fn disk(kv: &[(&str, &str)]) -> Arc<dyn Backend> {
    let p = Params::new(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    make(&p).unwrap().open(false, "").unwrap()
}

fn first_bytes(h: &dyn Backend, size: usize, n: usize) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; size];
    h.pread(&mut buf, 0, 0).unwrap();
    buf.chunks(4096).map(|c| c[..n].to_vec()).collect()
}

/// nbdkit sparse-random size=64K seed=1 percent=50 runlength=8192:
/// `nbdinfo --map` and the first byte of each block.
#[test]
fn matches_nbdkit_seed_1() {
    let kv = [("size", "64K"), ("seed", "1"), ("percent", "50"), ("runlength", "8192")];
    let h = disk(&kv);
    let first: Vec<u8> = first_bytes(&*h, 65536, 1).into_iter().map(|v| v[0]).collect();
    let mut want = vec![0u8; 16];
    want[4] = 0x35;
    want[5] = 0xf9;
    want[7] = 0x11;
    assert_eq!(first, want);
    let e = h.extents(65536, 0, 0).unwrap();
    let got: Vec<(u64, u64, u32)> = e.as_slice().iter().map(|x| (x.offset, x.length, x.typ)).collect();
    assert_eq!(
        got,
        [(0, 16384, 3), (16384, 8192, 0), (24576, 4096, 3), (28672, 4096, 0), (32768, 32768, 3)]
    );
    // Extents asked from inside a block start there.
    let e = h.extents(10000, 17000, 0).unwrap();
    assert_eq!(e.as_slice()[0].offset, 17000);
    assert_eq!(e.as_slice()[0].length, 24576 - 17000);

    let mut kv = kv.to_vec();
    kv.push(("random-content", "true"));
    let h = disk(&kv);
    let b = first_bytes(&*h, 65536, 8);
    assert_eq!(b[4], [0x35, 0x99, 0x93, 0x1b, 0xb3, 0x81, 0x97, 0x0c]);
    assert_eq!(b[5], [0xf9, 0x33, 0x50, 0xc8, 0x81, 0xf8, 0x80, 0x96]);
    assert_eq!(b[7], [0x11, 0x2f, 0x78, 0x56, 0xec, 0x45, 0x00, 0x42]);
    // An unaligned read sees the same bytes as the aligned one.
    let mut part = [0u8; 6];
    h.pread(&mut part, 4 * 4096 + 2, 0).unwrap();
    assert_eq!(part, [0x93, 0x1b, 0xb3, 0x81, 0x97, 0x0c]);
}

#[test]
fn writes_are_checked_and_only_holes_trim() {
    let kv = [("size", "64K"), ("seed", "1"), ("percent", "50"), ("runlength", "8192")];
    let h = disk(&kv);
    let mut all = vec![0u8; 65536];
    h.pread(&mut all, 0, 0).unwrap();
    h.pwrite(&all, 0, 0).unwrap();
    h.pwrite(&all[5000..20000], 5000, 0).unwrap();
    let e = h.pwrite(&[1], 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Io);
    assert!(e.message.contains("does not match expected"), "{}", e.message);
    assert_eq!(h.pwrite(&[0], 16384, 0).unwrap_err().errno, Errno::Io);
    h.zero(16384, 0, 0).unwrap();
    h.trim(100, 32768 + 7, 0).unwrap();
    assert_eq!(h.zero(2, 16383, 0).unwrap_err().errno, Errno::Io);
    assert_eq!(h.trim(4096, 24576 + 4095, 0).unwrap_err().errno, Errno::Io);
}

#[test]
fn percent_0_and_100_and_odd_sizes() {
    let h = disk(&[("size", "10001"), ("seed", "3"), ("percent", "100")]);
    let mut b = vec![0u8; 10001];
    h.pread(&mut b, 0, 0).unwrap();
    assert!(b.iter().all(|&x| x != 0));
    let e = h.extents(10001, 0, 0).unwrap();
    assert_eq!(e.as_slice(), [Extent { offset: 0, length: 10001, typ: 0 }]);
    let h = disk(&[("size", "7E"), ("percent", "0")]);
    let e = h.extents(1 << 40, 5 << 60, 0).unwrap();
    assert_eq!(e.as_slice(), [Extent { offset: 5 << 60, length: 1 << 40, typ: 3 }]);
    // A size that is not a multiple of the block: the last block's tail.
    let h = disk(&[("size", "5000"), ("seed", "9"), ("percent", "50"), ("runlength", "4096")]);
    let e = h.extents(5000, 0, 0).unwrap();
    assert_eq!(e.as_slice().last().map(|x| x.offset + x.length), Some(5000));
}

#[test]
fn bad_parameters_name_the_parameter() {
    let err = |kv: &[(&str, &str)]| {
        let p = Params::new(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        make(&p).err().expect("should fail").0
    };
    assert!(err(&[]).contains("size= is required"));
    assert!(err(&[("size", "1M"), ("percent", "101")]).contains("percent=101"));
    assert!(err(&[("size", "1M"), ("percent", "nan")]).contains("percent=nan"));
    assert!(err(&[("size", "1M"), ("runlength", "0")]).contains("runlength=0"));
    assert!(err(&[("size", "1M"), ("seed", "-1")]).contains("seed=-1"));
    assert!(err(&[("size", "1M"), ("random-content", "maybe")]).contains("random-content=maybe"));
    assert!(err(&[("size", "1P")]).contains("too large"));
    assert!(err(&[("size", "1M"), ("sead", "1")]).contains("sead"));
}
