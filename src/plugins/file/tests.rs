//! The file plugin's extents walk on a fragmented file: bounded per
//! request, and a client asking again from where a reply ended gets the
//! file's whole map.

use super::*;
use crate::backend::Extent;
use std::io::Write;

const BLOCK: u64 = 4096;

/// A file of `n` 4 KiB data blocks, each followed by an 8 KiB hole.
fn fragmented(n: u64) -> (tempfile::NamedTempFile, FileHandle) {
    let mut t = tempfile::NamedTempFile::new().unwrap();
    for i in 0..n {
        t.as_file().write_all_at(&[0x5a; BLOCK as usize], i * 3 * BLOCK).unwrap();
    }
    t.as_file_mut().set_len(n * 3 * BLOCK).unwrap();
    t.flush().unwrap();
    let h = FileHandle {
        file: t.reopen().unwrap(),
        writable: false,
        cache_none: false,
    };
    (t, h)
}

/// The map the file really has: a data block then a hole, `n` times.
fn real_map(n: u64) -> Vec<(u64, u64, u32)> {
    (0..n)
        .flat_map(|i| {
            [
                (i * 3 * BLOCK, BLOCK, extent_type::DATA),
                ((i * 3 + 1) * BLOCK, 2 * BLOCK, extent_type::HOLE | extent_type::ZERO),
            ]
        })
        .collect()
}

#[test]
fn a_fragmented_file_is_walked_in_bounded_steps_that_add_up_to_its_map() {
    let n = 200;
    let (_t, h) = fragmented(n);
    if h.seek(0, libc::SEEK_HOLE) == Some(n * 3 * BLOCK) {
        // No hole support here (the file reads as all data): nothing to walk.
        eprintln!("skipped: this filesystem reports no holes");
        return;
    }
    let size = n * 3 * BLOCK;
    // One request for everything, at most 64 extents: fewer than asked,
    // a prefix of the real map.
    let e = h.walk_extents(size, 0, false, 64).unwrap();
    assert_eq!(e.len(), 64);
    let got: Vec<_> = e.as_slice().iter().map(|x| (x.offset, x.length, x.typ)).collect();
    assert_eq!(got, real_map(n)[..64]);
    // Asking again from where each reply ends covers the file, exactly.
    let (mut pos, mut all, mut requests) = (0, Vec::new(), 0);
    while pos < size {
        let e = h.walk_extents(size - pos, pos, false, 64).unwrap();
        assert!(!e.is_empty() && e.len() <= 64);
        all.extend(e.as_slice().iter().map(|x| (x.offset, x.length, x.typ)));
        pos = e.next_offset();
        requests += 1;
    }
    assert_eq!(all, real_map(n));
    assert_eq!(requests, 2 * n as usize / 64 + 1);
    // REQ_ONE: one extent, one seek's worth, wherever it starts.
    let one = h.walk_extents(size, 0, true, Extents::MAX).unwrap();
    assert_eq!(one.as_slice(), &[Extent { offset: 0, length: BLOCK, typ: 0 }]);
    let one = h.walk_extents(size - BLOCK, BLOCK, true, Extents::MAX).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one.as_slice()[0].length, 2 * BLOCK);
}
