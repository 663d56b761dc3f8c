//! The `cow` filter's block map: which overlay blocks hold data (a
//! bitmap per 64 blocks) and which read as zeros (disjoint intervals),
//! walked in what the overlay holds, not in the range's length.

use std::collections::BTreeMap;

/// Which blocks the overlay holds.
#[derive(Default)]
pub(super) struct BlockMap {
    /// Bitmaps (word index -> 64 bits) of blocks with data in `alloc`.
    present: BTreeMap<u64, u64>,
    /// Disjoint, non-adjacent intervals `start -> end` of blocks that read
    /// as zeros (whole-block zero or trim).
    zeroed: BTreeMap<u64, u64>,
}

/// What the overlay says about a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blk {
    Present,
    Zeroed,
    Below,
}

impl BlockMap {
    pub(super) fn is_present(&self, blk: u64) -> bool {
        self.present
            .get(&(blk / 64))
            .is_some_and(|w| w & (1 << (blk % 64)) != 0)
    }

    /// The zeroed interval holding `blk`.
    pub(super) fn zeroed_at(&self, blk: u64) -> Option<(u64, u64)> {
        self.zeroed
            .range(..=blk)
            .next_back()
            .filter(|(_, &e)| e > blk)
            .map(|(&s, &e)| (s, e))
    }

    pub(super) fn state(&self, blk: u64) -> Blk {
        if self.is_present(blk) {
            Blk::Present
        } else if self.zeroed_at(blk).is_some() {
            Blk::Zeroed
        } else {
            Blk::Below
        }
    }

    /// The first present block at or after `blk`.
    pub(super) fn next_present(&self, blk: u64) -> Option<u64> {
        for (&w, &bits) in self.present.range(blk / 64..) {
            let bits = if w == blk / 64 {
                bits & (!0u64 << (blk % 64))
            } else {
                bits
            };
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as u64);
            }
        }
        None
    }

    /// The first block at or after `blk` that is not present.
    pub(super) fn next_absent(&self, blk: u64) -> u64 {
        let mut b = blk;
        loop {
            let bits = self.present.get(&(b / 64)).copied().unwrap_or(0) >> (b % 64);
            let run = (!bits).trailing_zeros() as u64; // present blocks from b
            if run < 64 - b % 64 {
                return b + run;
            }
            b = (b / 64 + 1) * 64;
        }
    }

    /// The first zeroed interval starting after `blk`.
    pub(super) fn next_zeroed_start(&self, blk: u64) -> Option<u64> {
        self.zeroed.range(blk + 1..).next().map(|(&s, _)| s)
    }

    /// Mark `blk` present, taking it out of any zeroed interval.
    pub(super) fn mark_present(&mut self, blk: u64) {
        self.unzero(blk, blk + 1);
        *self.present.entry(blk / 64).or_insert(0) |= 1 << (blk % 64);
    }

    /// Take `[a, b)` out of the zeroed intervals.
    pub(super) fn unzero(&mut self, a: u64, b: u64) {
        let mut hit: Vec<(u64, u64)> = Vec::new();
        if let Some(iv) = self.zeroed_at(a) {
            hit.push(iv);
        }
        hit.extend(self.zeroed.range(a + 1..b).map(|(&s, &e)| (s, e)));
        for (s, e) in hit {
            self.zeroed.remove(&s);
            if s < a {
                self.zeroed.insert(s, a);
            }
            if e > b {
                self.zeroed.insert(b, e);
            }
        }
    }

    /// Make `[a, b)` read as zeros: one interval (merged with its
    /// neighbours), and no block of it present. Returns whether any block
    /// was present (its data must be cleared from the allocator).
    pub(super) fn zero_blocks(&mut self, a: u64, b: u64) -> bool {
        let mut had = false;
        let words: Vec<u64> = self
            .present
            .range(a / 64..=(b - 1) / 64)
            .map(|(&w, _)| w)
            .collect();
        for w in words {
            let lo = (w * 64).max(a) - w * 64;
            let hi = ((w + 1) * 64).min(b) - w * 64;
            let mask = if hi - lo == 64 {
                !0
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            if let Some(bits) = self.present.get_mut(&w) {
                had |= *bits & mask != 0;
                *bits &= !mask;
                if *bits == 0 {
                    self.present.remove(&w);
                }
            }
        }
        let (mut s, mut e) = (a, b);
        if let Some((ps, pe)) = self.zeroed.range(..=a).next_back().map(|(&s, &e)| (s, e)) {
            if pe >= a {
                s = ps;
                e = e.max(pe);
            }
        }
        let inside: Vec<(u64, u64)> = self.zeroed.range(s..=b).map(|(&s, &e)| (s, e)).collect();
        for (is, ie) in inside {
            self.zeroed.remove(&is);
            e = e.max(ie);
        }
        self.zeroed.insert(s, e);
        had
    }
}
