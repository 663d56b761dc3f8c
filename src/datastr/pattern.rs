//! `Pattern`: the evaluated value of a data string, kept lazy. Repeats
//! are never expanded: a `Pattern` answers `read(buf, offset)` for any
//! range by walking a small tree (literal bytes, fills, repeats, slices and
//! maps of non-overlapping pieces with zero gaps). Also reports extents
//! (gaps and zero fills are holes) and can write itself into an allocator.
//! May use `alloc` (for `write_into`); nothing else outside `datastr`.

use super::{DataError, Result, MAX_VEC};
use crate::alloc::Allocator;
use std::sync::Arc;

/// Groups no larger than this are flattened into plain bytes when built.
pub const MATERIALIZE: u64 = 64 * 1024;

/// A repeat whose period is at most this keeps a buffer of whole periods
/// so reads copy large chunks.
const PERIOD_BUF: usize = 64 * 1024;

#[derive(Debug)]
pub(super) enum Node {
    Data(Arc<[u8]>),
    Fill(u8),
    Repeat {
        inner: Pattern,
        /// Whole periods of `inner`, for small periods.
        buf: Option<Arc<[u8]>>,
    },
    Slice {
        inner: Pattern,
        start: u64,
    },
    /// Non-overlapping pieces, ascending; gaps read as zero.
    Map(Vec<(u64, Pattern)>),
}

/// A lazily evaluated byte string of `size()` bytes.
#[derive(Debug, Clone)]
pub struct Pattern {
    node: Arc<Node>,
    len: u64,
    /// Tree depth and storage cost, computed once when built (names make
    /// shared subtrees, so walking the tree to find them could blow up).
    depth: u32,
    cost: u64,
}

/// One extent of a pattern: `zero` means it reads as zeros and stores
/// nothing (a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternExtent {
    pub offset: u64,
    pub length: u64,
    pub zero: bool,
}

impl Pattern {
    pub(super) fn new(node: Node, len: u64) -> Self {
        let (depth, cost) = match &node {
            Node::Data(d) => (1, d.len() as u64),
            Node::Fill(0) => (1, 0),
            Node::Fill(_) => (1, len),
            Node::Slice { inner, .. } => (inner.depth + 1, len),
            Node::Repeat { inner, .. } => (
                inner.depth + 1,
                inner.cost.saturating_mul(len / inner.len.max(1)),
            ),
            Node::Map(pieces) => (
                1 + pieces.iter().map(|(_, p)| p.depth).max().unwrap_or(0),
                pieces
                    .iter()
                    .fold(0u64, |a, (_, p)| a.saturating_add(p.cost)),
            ),
        };
        Pattern {
            node: Arc::new(node),
            len,
            depth,
            cost,
        }
    }

    pub fn empty() -> Self {
        Self::zeros(0)
    }

    pub fn zeros(len: u64) -> Self {
        Self::fill(0, len)
    }

    pub fn fill(b: u8, len: u64) -> Self {
        Self::new(Node::Fill(b), len)
    }

    pub fn bytes(v: Vec<u8>) -> Self {
        let len = v.len() as u64;
        Self::new(Node::Data(v.into()), len)
    }

    pub(super) fn node(&self) -> &Node {
        &self.node
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// `count` copies of `self`.
    pub fn repeat(&self, count: u64) -> Option<Pattern> {
        let len = self.len.checked_mul(count)?;
        if count == 1 {
            return Some(self.clone());
        }
        if len == 0 {
            return Some(Pattern::empty());
        }
        if let Node::Fill(b) = *self.node {
            return Some(Pattern::fill(b, len));
        }
        if len <= MATERIALIZE {
            let one = self.to_vec_unchecked();
            return Some(Pattern::bytes(one.repeat(count as usize)));
        }
        let buf = if self.len as usize <= PERIOD_BUF {
            let one = self.to_vec_unchecked();
            let k = (PERIOD_BUF / one.len()).max(1);
            Some(Arc::from(one.repeat(k)))
        } else {
            None
        };
        Some(Pattern::new(
            Node::Repeat {
                inner: self.clone(),
                buf,
            },
            len,
        ))
    }

    /// Bytes `[start, start+len)`; the caller has checked the range.
    pub fn slice(&self, start: u64, len: u64) -> Pattern {
        if len == 0 {
            return Pattern::empty();
        }
        if start == 0 && len == self.len {
            return self.clone();
        }
        match &*self.node {
            Node::Fill(b) => return Pattern::fill(*b, len),
            Node::Data(d) if len <= MATERIALIZE => {
                return Pattern::bytes(d[start as usize..(start + len) as usize].to_vec())
            }
            Node::Slice { inner, start: s0 } => return inner.slice(s0 + start, len),
            Node::Repeat { inner, .. } => {
                let p = inner.len;
                if start / p == (start + len - 1) / p {
                    return inner.slice(start % p, len);
                }
            }
            _ => {}
        }
        if len <= MATERIALIZE {
            let mut v = vec![0u8; len as usize];
            self.read(&mut v, start);
            return Pattern::bytes(v);
        }
        Pattern::new(
            Node::Slice {
                inner: self.clone(),
                start,
            },
            len,
        )
    }

    /// Truncate or zero-extend to `size` (the plugin's `size=`).
    pub fn resized(&self, size: u64) -> Pattern {
        if size <= self.len {
            return self.slice(0, size);
        }
        if self.len == 0 {
            return Pattern::zeros(size);
        }
        Pattern::new(Node::Map(vec![(0, self.clone())]), size)
    }

    /// Fill `buf` with the bytes at `offset`; bytes past the end are zero.
    pub fn read(&self, buf: &mut [u8], offset: u64) {
        if offset >= self.len {
            buf.fill(0);
            return;
        }
        let avail = (self.len - offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        tail.fill(0);
        self.read_in(head, offset);
    }

    /// `read` for a range known to lie inside.
    fn read_in(&self, buf: &mut [u8], offset: u64) {
        match &*self.node {
            Node::Data(d) => {
                let o = offset as usize;
                buf.copy_from_slice(&d[o..o + buf.len()]);
            }
            Node::Fill(b) => buf.fill(*b),
            Node::Slice { inner, start } => inner.read_in(buf, start + offset),
            Node::Repeat { inner, buf: pbuf } => {
                let p = inner.len;
                let mut done = 0usize;
                while done < buf.len() {
                    let pos = (offset + done as u64) % p;
                    let rest = buf.len() - done;
                    match pbuf {
                        Some(pb) => {
                            let n = rest.min(pb.len() - pos as usize);
                            buf[done..done + n]
                                .copy_from_slice(&pb[pos as usize..pos as usize + n]);
                            done += n;
                        }
                        None => {
                            let n = (rest as u64).min(p - pos) as usize;
                            inner.read_in(&mut buf[done..done + n], pos);
                            done += n;
                        }
                    }
                }
            }
            Node::Map(pieces) => {
                let end = offset + buf.len() as u64;
                // First piece that ends after `offset`.
                let mut k = pieces.partition_point(|(o, p)| o + p.len <= offset);
                let mut cur = offset;
                while cur < end {
                    match pieces.get(k) {
                        Some((po, p)) if *po < end => {
                            if *po > cur {
                                buf[(cur - offset) as usize..(po - offset) as usize].fill(0);
                                cur = *po;
                            }
                            let pend = (po + p.len).min(end);
                            p.read_in(
                                &mut buf[(cur - offset) as usize..(pend - offset) as usize],
                                cur - po,
                            );
                            cur = pend;
                            k += 1;
                        }
                        _ => {
                            buf[(cur - offset) as usize..].fill(0);
                            cur = end;
                        }
                    }
                }
            }
        }
    }

    /// All the bytes, if they fit in [`MAX_VEC`].
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        if self.len > MAX_VEC {
            return Err(DataError::new(
                format!(
                    "the result is {} bytes, too large to hold in memory (limit {MAX_VEC})",
                    self.len
                ),
                None,
            ));
        }
        Ok(self.to_vec_unchecked())
    }

    fn to_vec_unchecked(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len as usize];
        self.read_in(&mut v, 0);
        v
    }

    /// Extents of `[offset, offset+count)` (clipped to the size), at most
    /// about `max` of them: gaps and zero fills are holes, everything else
    /// data (even literal zero bytes, as nbdkit stores them).
    pub fn extents(&self, offset: u64, count: u64, max: usize) -> Vec<PatternExtent> {
        let mut out = Vec::new();
        let end = offset.saturating_add(count).min(self.len);
        if offset < end {
            let mut budget = 64 * max.max(1);
            self.extents_in(offset, end, 0, max.max(1), &mut budget, &mut out);
        }
        out
    }

    /// Extents of `[from, to)` placed at `base`; stops early when `out`
    /// holds `max` extents or `budget` node visits are used up (callers
    /// accept a short answer).
    fn extents_in(
        &self,
        from: u64,
        to: u64,
        base: u64,
        max: usize,
        budget: &mut usize,
        out: &mut Vec<PatternExtent>,
    ) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let push = |out: &mut Vec<PatternExtent>, a: u64, b: u64, zero: bool| {
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(l) if l.zero == zero && l.offset + l.length == base.wrapping_add(a) => {
                    l.length += b - a
                }
                _ => out.push(PatternExtent {
                    offset: base.wrapping_add(a),
                    length: b - a,
                    zero,
                }),
            }
        };
        match &*self.node {
            Node::Data(_) => push(out, from, to, false),
            Node::Fill(b) => push(out, from, to, *b == 0),
            Node::Slice { inner, start } => inner.extents_in(
                from + start,
                to + start,
                base.wrapping_sub(*start),
                max,
                budget,
                out,
            ),
            Node::Repeat { inner, buf } => {
                if buf.is_some() {
                    // Small period: describe it as data.
                    return push(out, from, to, false);
                }
                let p = inner.len;
                let mut cur = from;
                while cur < to && out.len() < max && *budget > 0 {
                    let k = cur / p;
                    let pos = cur % p;
                    let n = (to - cur).min(p - pos);
                    inner.extents_in(pos, pos + n, base.wrapping_add(k * p), max, budget, out);
                    cur += n;
                }
            }
            Node::Map(pieces) => {
                let mut k = pieces.partition_point(|(o, p)| o + p.len <= from);
                let mut cur = from;
                while cur < to && out.len() < max && *budget > 0 {
                    match pieces.get(k) {
                        Some((po, p)) if *po < to => {
                            push(out, cur, *po, true);
                            let a = cur.max(*po);
                            let b = (po + p.len).min(to);
                            p.extents_in(a - po, b - po, base.wrapping_add(*po), max, budget, out);
                            cur = b;
                            k += 1;
                        }
                        _ => {
                            push(out, cur, to, true);
                            cur = to;
                        }
                    }
                }
            }
        }
    }

    /// How many bytes an allocator would have to store for this pattern
    /// (zero fills and gaps cost nothing); saturates.
    pub fn dense_cost(&self) -> u64 {
        self.cost
    }

    /// Depth of the tree (reads recurse this deep).
    pub fn depth(&self) -> usize {
        self.depth as usize
    }

    /// Store the pattern into `a` at `base` the way nbdkit's evaluator
    /// does: bytes are written (allocating their pages even when zero),
    /// non-zero fills filled, zero fills and gaps left as holes.
    pub fn write_into(&self, a: &dyn Allocator, base: u64) -> crate::alloc::Result<()> {
        match &*self.node {
            Node::Data(d) => a.write(d, base),
            Node::Fill(0) => Ok(()),
            Node::Fill(b) => a.fill(*b, self.len, base),
            Node::Slice { .. } => {
                let mut buf = vec![0u8; self.len.min(1 << 20) as usize];
                let mut done = 0u64;
                while done < self.len {
                    let n = (self.len - done).min(buf.len() as u64) as usize;
                    self.read_in(&mut buf[..n], done);
                    a.write(&buf[..n], base + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            Node::Repeat { inner, .. } if inner.cost == 0 => Ok(()),
            Node::Repeat { buf: Some(pb), .. } => {
                // The buffer holds whole periods from phase 0: write it
                // over and over in large chunks.
                let mut o = 0u64;
                while o < self.len {
                    let n = (self.len - o).min(pb.len() as u64) as usize;
                    a.write(&pb[..n], base + o)?;
                    o += n as u64;
                }
                Ok(())
            }
            Node::Repeat { inner, .. } => {
                let mut o = 0;
                while o < self.len {
                    inner.write_into(a, base + o)?;
                    o += inner.len;
                }
                Ok(())
            }
            Node::Map(pieces) => {
                for (o, p) in pieces {
                    p.write_into(a, base + o)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
