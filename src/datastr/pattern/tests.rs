//! `Pattern` unit tests: reads of huge repeats, maps with gaps and slices,
//! extents of huge repeats, resizing and cost.

use super::*;

fn rd(p: &Pattern, off: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0xEE; n];
    p.read(&mut v, off);
    v
}

#[test]
fn huge_repeat_reads_anywhere() {
    let p = Pattern::bytes(vec![0x55, 0xAA]).repeat(1 << 32).unwrap();
    assert_eq!(p.size(), 8 << 30);
    assert_eq!(rd(&p, 1, 3), [0xAA, 0x55, 0xAA]);
    assert_eq!(rd(&p, (8 << 30) - 1, 3), [0xAA, 0, 0]);
    let big = rd(&p, 12345, 300_000);
    assert!(big.chunks(2).all(|c| c == [0xAA, 0x55] || c == [0xAA]));
}

#[test]
fn map_gaps_and_slices() {
    let big = Pattern::bytes((0..=255).collect()).repeat(1000).unwrap();
    let m = Pattern::new(
        Node::Map(vec![
            (10, Pattern::bytes(vec![1, 2])),
            (100_000, big.clone()),
        ]),
        100_000 + big.size() + 5,
    );
    assert_eq!(rd(&m, 9, 4), [0, 1, 2, 0]);
    assert_eq!(rd(&m, 99_999, 3), [0, 0, 1]);
    let s = m.slice(100_001, 200_000);
    assert_eq!(rd(&s, 0, 2), [1, 2]);
    assert_eq!(rd(&s, 255, 2), [0, 1]);
    let ex = m.extents(0, m.size(), 100);
    assert_eq!(
        ex[..3],
        [
            PatternExtent {
                offset: 0,
                length: 10,
                zero: true
            },
            PatternExtent {
                offset: 10,
                length: 2,
                zero: false
            },
            PatternExtent {
                offset: 12,
                length: 100_000 - 12,
                zero: true
            },
        ]
    );
    assert_eq!(ex.last().unwrap().length, 5);
    assert!(ex.last().unwrap().zero);
}

#[test]
fn extents_of_huge_repeats_are_bounded() {
    let big = Pattern::bytes(vec![1u8; 70000]).repeat(1 << 40).unwrap();
    let t = std::time::Instant::now();
    let e = big.extents(5, big.size(), 256);
    assert!(t.elapsed().as_secs() < 2);
    assert_eq!(e[0].offset, 5);
    assert!(!e[0].zero && e[0].length > 70000);
    // Shared subtrees: cost and depth come from construction.
    let mut p = Pattern::new(Node::Map(vec![(0, Pattern::bytes(vec![1]))]), 100_000);
    for _ in 0..40 {
        p = Pattern::new(
            Node::Map(vec![(0, p.clone()), (p.size(), p.clone())]),
            p.size() * 2,
        );
    }
    assert_eq!(p.dense_cost(), 1 << 40);
    assert_eq!(p.depth(), 42);
}

#[test]
fn resize_and_cost() {
    let p = Pattern::fill(0, 1 << 40).repeat(3).unwrap();
    assert_eq!(p.dense_cost(), 0);
    assert_eq!(p.resized(2).to_vec().unwrap(), [0, 0]);
    let q = Pattern::bytes(vec![9]).resized(3);
    assert_eq!(q.to_vec().unwrap(), [9, 0, 0]);
    assert!(Pattern::zeros(MAX_VEC + 1).to_vec().is_err());
}
