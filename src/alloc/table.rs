//! The page table shared by the `sparse` and `zstd` allocators: a radix tree
//! of 4096-way nodes whose interior links are `OnceLock`s, so lookups take
//! no lock at all and creating a missing node only makes the threads that
//! want that same node wait. Slots are never removed (a slot's contents are
//! freed instead), so no reclamation scheme is needed. Also the chunking of
//! byte ranges into pages, and `is_zero`.
//! Must not import anything outside `alloc`.

use std::sync::OnceLock;

/// The page size of `sparse` and `zstd` (nbdkit's SPARSE_PAGE).
pub const PAGE: usize = 32768;
pub const PAGE_SHIFT: u32 = 15;
const FANOUT_BITS: u32 = 12;
const FANOUT: usize = 1 << FANOUT_BITS;
const MASK: u64 = FANOUT as u64 - 1;

enum Node<S> {
    Inner(Box<[OnceLock<Node<S>>]>),
    Leaf(Box<[S]>),
}

impl<S: Default> Node<S> {
    /// A node whose children are `shift` page bits apart (0: a leaf).
    fn new(shift: u32) -> Self {
        if shift == 0 {
            Node::Leaf((0..FANOUT).map(|_| S::default()).collect())
        } else {
            Node::Inner((0..FANOUT).map(|_| OnceLock::new()).collect())
        }
    }
}

/// Slots of type `S` for pages `0..capacity()`, created on demand.
pub struct PageTable<S> {
    root: Node<S>,
    /// Page-index bits selected by the root (a multiple of FANOUT_BITS).
    top_shift: u32,
}

impl<S: Default> PageTable<S> {
    /// A table able to hold at least `pages` pages (at most 2^48).
    pub fn new(pages: u64) -> Self {
        let mut top_shift = 0;
        while top_shift + FANOUT_BITS < 48 && (1u64 << (top_shift + FANOUT_BITS)) < pages {
            top_shift += FANOUT_BITS;
        }
        PageTable {
            root: Node::new(top_shift),
            top_shift,
        }
    }

    /// Number of pages addressable.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.top_shift + FANOUT_BITS)
    }

    /// The slot of `page` if its leaf exists. Never blocks.
    pub fn get(&self, page: u64) -> Option<&S> {
        if page >= self.capacity() {
            return None;
        }
        let mut node = &self.root;
        let mut shift = self.top_shift;
        loop {
            match node {
                Node::Leaf(s) => return s.get((page & MASK) as usize),
                Node::Inner(ch) => {
                    node = ch.get(((page >> shift) & MASK) as usize)?.get()?;
                    shift = shift.saturating_sub(FANOUT_BITS);
                }
            }
        }
    }

    /// The slot of `page`, creating the nodes on its path; `None` only when
    /// `page` is beyond the capacity.
    pub fn get_or_create(&self, page: u64) -> Option<&S> {
        if page >= self.capacity() {
            return None;
        }
        let mut node = &self.root;
        let mut shift = self.top_shift;
        loop {
            match node {
                Node::Leaf(s) => return s.get((page & MASK) as usize),
                Node::Inner(ch) => {
                    let child = shift - FANOUT_BITS;
                    node = ch
                        .get(((page >> shift) & MASK) as usize)?
                        .get_or_init(|| Node::new(child));
                    shift = child;
                }
            }
        }
    }

    /// Call `f(page, slot)` for every existing slot of pages `first..=last`,
    /// in ascending order, skipping whole missing subtrees.
    pub fn visit(&self, first: u64, last: u64, f: &mut dyn FnMut(u64, &S)) {
        let last = last.min(self.capacity() - 1);
        if first <= last {
            Self::visit_node(&self.root, 0, self.top_shift, first, last, f);
        }
    }

    fn visit_node(
        node: &Node<S>,
        base: u64,
        shift: u32,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, &S),
    ) {
        let span_last = base + ((FANOUT as u64) << shift) - 1;
        let lo = (first.max(base) - base) >> shift;
        let hi = (last.min(span_last) - base) >> shift;
        match node {
            Node::Leaf(s) => {
                for i in lo..=hi {
                    if let Some(slot) = s.get(i as usize) {
                        f(base + i, slot);
                    }
                }
            }
            Node::Inner(ch) => {
                for i in lo..=hi {
                    if let Some(c) = ch.get(i as usize).and_then(|c| c.get()) {
                        let b = base + (i << shift);
                        Self::visit_node(c, b, shift - FANOUT_BITS, first, last, f);
                    }
                }
            }
        }
    }
}

/// One piece of a byte range that lies inside one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Page index.
    pub page: u64,
    /// Offset inside the page.
    pub inpg: usize,
    /// Offset of this piece from the start of the range.
    pub done: usize,
    /// Length of the piece.
    pub len: usize,
}

/// Split `[offset, offset+count)` into per-page chunks of `1 << shift` bytes.
pub fn chunks(offset: u64, count: u64, shift: u32) -> impl Iterator<Item = Chunk> {
    let size = 1u64 << shift;
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done >= count {
            return None;
        }
        let off = offset + done;
        let inpg = off & (size - 1);
        let len = (size - inpg).min(count - done);
        let c = Chunk {
            page: off >> shift,
            inpg: inpg as usize,
            done: done as usize,
            len: len as usize,
        };
        done += len;
        Some(c)
    })
}

/// True if every byte is zero (vectorised blocks with an early exit).
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}
