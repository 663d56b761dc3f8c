//! Unit tests of the `cow` filter over an in-memory disk: the overlay,
//! `cow-on-read` and `cow-on-cache`.

use super::*;
use crate::filters::offset::tests::{disk, params};

/// A layer that refuses every write.
struct NoWrite(Arc<dyn Backend>);
impl Backend for NoWrite {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.0)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(false)
    }
    fn pwrite(&self, _: &[u8], _: u64, _: u32) -> Result<()> {
        panic!("cow wrote to the layer below")
    }
    fn zero(&self, _: u64, _: u64, _: u32) -> Result<()> {
        panic!("cow zeroed the layer below")
    }
    fn trim(&self, _: u64, _: u64, _: u32) -> Result<()> {
        panic!("cow trimmed the layer below")
    }
}

#[test]
fn overlay() {
    let below = disk(200_000);
    let f = make(&params(&[("cow-block-size", "4k")])).unwrap();
    let h = f.open(Arc::new(NoWrite(below.clone())), true).unwrap();
    assert!(h.can_write().unwrap());
    h.pwrite(&[1, 2, 3], 4094, 0).unwrap();
    h.zero(10_000, 50_000, 0).unwrap();
    h.trim(5, 199_998, 0).unwrap();
    let mut want: Vec<u8> = (0..200_000u64).map(|i| (i % 251) as u8).collect();
    want[4094..4097].copy_from_slice(&[1, 2, 3]);
    want[50_000..60_000].fill(0);
    want[199_998..].fill(0);
    let mut got = vec![0u8; 200_000];
    h.pread(&mut got, 0, 0).unwrap();
    assert_eq!(got, want);
    // The layer below is unchanged.
    let mut orig = vec![0u8; 8];
    below.pread(&mut orig, 4094, 0).unwrap();
    assert_eq!(orig[0], (4094 % 251) as u8);
    // A second connection sees the same overlay.
    let h2 = f.open(Arc::new(NoWrite(below)), true).unwrap();
    let mut b = [0u8; 3];
    h2.pread(&mut b, 4094, 0).unwrap();
    assert_eq!(b, [1, 2, 3]);
    // Extents cover the request and see the zeroed range.
    let e = h.extents(200_000, 0, 0).unwrap();
    let s = e.as_slice();
    assert_eq!(s[0].offset, 0);
    let last = s.last().unwrap();
    assert_eq!(last.offset + last.length, 200_000);
    assert!(s.iter().any(|x| x.typ & extent_type::ZERO != 0
        && x.offset <= 53_248
        && x.offset + x.length >= 57_344));
    assert!(make(&params(&[("cow-block-size", "1k")])).is_err());
}

#[test]
fn on_read() {
    let below = disk(100_000);
    let f = make(&params(&[("cow-on-read", "true")])).unwrap();
    let h = f.open(below.clone(), false).unwrap();
    let mut b = [0u8; 10];
    h.pread(&mut b, 70_000, 0).unwrap();
    below.pwrite(&[0u8; 10], 70_000, 0).unwrap();
    let mut c = [0u8; 10];
    h.pread(&mut c, 70_000, 0).unwrap();
    assert_eq!(b, c, "copied up on first read");
}

#[test]
fn on_cache_and_req_one() {
    let below = disk(300_000);
    let f = make(&params(&[("cow-on-cache", "true")])).unwrap();
    let h = f.open(below.clone(), false).unwrap();
    h.cache(10, 131_072, 0).unwrap();
    below.pwrite(&[0u8; 10], 131_072, 0).unwrap();
    let mut b = [0u8; 2];
    h.pread(&mut b, 131_073, 0).unwrap();
    assert_eq!(b, [(131_073 % 251) as u8, (131_074 % 251) as u8]);
    h.zero(65536, 0, 0).unwrap();
    let e = h.extents(300_000, 0, flags::REQ_ONE).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e.as_slice()[0].length, 65536);
    assert_eq!(e.as_slice()[0].typ, extent_type::HOLE | extent_type::ZERO);
}
