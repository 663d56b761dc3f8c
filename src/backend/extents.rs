//! `Extents`: the answer to a block-status query, built like nbdkit's
//! `nbdkit_add_extent` (ascending, contiguous, clipped to the request).
//! Must not import tokio or rhai.

use super::{BackendError, Result};

/// One extent: `length` bytes from `offset` with `base:allocation` type bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes it covers.
    pub length: u64,
    /// Its type: [`extent_type`](crate::extent_type) bits (0 is data).
    pub typ: u32,
}

/// A list of extents covering a prefix of `[start, start+count)`.
/// `add` clips to that window, drops what lies before the current end and
/// merges neighbours of the same type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extents {
    start: u64,
    end: u64,
    list: Vec<Extent>,
    /// An extent was dropped for [`Extents::MAX`]: later ones are too.
    closed: bool,
}

impl Extents {
    /// Most extents one answer holds: past this, `add` keeps only what
    /// merges with the last one, and layers stop looking (the protocol
    /// lets a reply describe less than was asked). Bounds the work and
    /// the memory of one BLOCK_STATUS whatever its length.
    pub const MAX: usize = 1 << 16;

    pub fn new(start: u64, count: u64) -> Self {
        Extents {
            start,
            end: start.saturating_add(count),
            list: Vec::new(),
            closed: false,
        }
    }

    /// Where the next extent must begin.
    pub fn next_offset(&self) -> u64 {
        self.list
            .last()
            .map(|e| e.offset + e.length)
            .unwrap_or(self.start)
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Append an extent. Parts before `next_offset()` or past the window are
    /// dropped. A gap (an extent starting after `next_offset()`) is an error.
    pub fn add(&mut self, offset: u64, length: u64, typ: u32) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let next = self.next_offset();
        let mut off = offset;
        let mut end = offset.saturating_add(length);
        if end <= next || off >= self.end || length == 0 {
            return Ok(());
        }
        if off < next {
            off = next;
        }
        if off > next {
            return Err(BackendError::io(format!(
                "extents are not contiguous: expected one at {next}, got {offset}"
            )));
        }
        if end > self.end {
            end = self.end;
        }
        if let Some(last) = self.list.last_mut() {
            if last.typ == typ {
                last.length += end - off;
                return Ok(());
            }
        }
        if self.is_full() {
            self.closed = true;
            return Ok(());
        }
        self.list.push(Extent {
            offset: off,
            length: end - off,
            typ,
        });
        Ok(())
    }

    /// True once [`Extents::MAX`] extents are held: a layer should stop.
    pub fn is_full(&self) -> bool {
        self.list.len() >= Self::MAX
    }

    pub fn as_slice(&self) -> &[Extent] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn into_vec(self) -> Vec<Extent> {
        self.list
    }

    /// Re-base every extent (for filters that shift offsets): each offset
    /// `o` becomes `o - delta`, and the window likewise.
    pub fn shifted_down(self, delta: u64) -> Extents {
        Extents {
            start: self.start - delta.min(self.start),
            end: self.end - delta.min(self.end),
            closed: self.closed,
            list: self
                .list
                .into_iter()
                .map(|e| Extent {
                    offset: e.offset - delta.min(e.offset),
                    ..e
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_and_merges() {
        let mut e = Extents::new(100, 100);
        e.add(0, 150, 3).unwrap();
        e.add(150, 10, 3).unwrap();
        e.add(160, 1000, 0).unwrap();
        assert_eq!(
            e.as_slice(),
            &[
                Extent {
                    offset: 100,
                    length: 60,
                    typ: 3
                },
                Extent {
                    offset: 160,
                    length: 40,
                    typ: 0
                }
            ]
        );
        assert!(e.add(300, 1, 0).is_ok());
        let mut g = Extents::new(0, 10);
        g.add(0, 2, 0).unwrap();
        assert!(g.add(5, 2, 0).is_err());
    }

    #[test]
    fn stops_when_full() {
        let mut e = Extents::new(0, u64::MAX);
        for i in 0..Extents::MAX as u64 + 10 {
            e.add(i, 1, (i % 2) as u32).unwrap();
        }
        assert!(e.is_full());
        assert_eq!(e.len(), Extents::MAX);
        assert_eq!(e.next_offset(), Extents::MAX as u64, "a contiguous prefix");
    }
}
