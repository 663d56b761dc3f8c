//! `Extents`: the answer to a block-status query, built like nbdkit's
//! `nbdkit_add_extent` (ascending, contiguous, clipped to the request).
//! Must not import tokio or rhai.

use super::{BackendError, Result};

/// One extent: `length` bytes from `offset` with `base:allocation` type bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
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
}

impl Extents {
    pub fn new(start: u64, count: u64) -> Self {
        Extents {
            start,
            end: start.saturating_add(count),
            list: Vec::new(),
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
        self.list.push(Extent {
            offset: off,
            length: end - off,
            typ,
        });
        Ok(())
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
}
