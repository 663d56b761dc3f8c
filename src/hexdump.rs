//! `--hexdump`: the export rendered as `hexdump -C` does, runs of
//! identical lines collapsed to `*`. What reads as zeros by the export's
//! extents is never read (a 7E hole prints in one step), the rest is read
//! in 1 MiB pieces.

use crate::backend::{extent_type, Export, Stack};
use std::fmt::Write;

/// `--hexdump=OFFSET:LEN`: open `export_name` of `stack` read-only and
/// print `[offset, offset+len)` (to the end without `len`) to standard
/// output.
pub fn print_export(
    stack: &Stack,
    export_name: &str,
    offset: u64,
    len: Option<u64>,
) -> Result<(), String> {
    let export = stack
        .open(true, export_name)
        .map_err(|e| format!("cannot open the export: {e}"))?;
    let size = export.size();
    let start = offset.min(size);
    let end = match len {
        Some(l) => start.saturating_add(l).min(size),
        None => size,
    };
    let r = dump(&export, start, end, &mut std::io::stdout().lock());
    export.close();
    r
}

/// Print `[start, end)` of `export` to `out`. A closed `out` (piped into
/// `head`) ends the dump quietly; a failed read is an error naming where.
pub fn dump(
    export: &Export,
    start: u64,
    end: u64,
    out: &mut impl std::io::Write,
) -> Result<(), String> {
    let mut h = HexDump::new(start);
    let mut pos = start;
    while pos < end {
        // The extents from here: zero runs are skipped, data is read.
        let runs: Vec<(u64, u64, bool)> = match export.extents(end - pos, pos, false) {
            Ok(e) if !e.is_empty() => e
                .as_slice()
                .iter()
                .map(|x| (x.offset, x.length, x.typ & extent_type::ZERO != 0))
                .collect(),
            _ => vec![(pos, end - pos, false)],
        };
        for (off, len, zero) in runs {
            if off != pos {
                break;
            }
            let text = if zero {
                h.zeros(len)
            } else {
                let mut text = String::new();
                let mut p = off;
                while p < off + len {
                    let n = (off + len - p).min(1 << 20) as u32;
                    let data = export.read(n, p).map_err(|e| format!("read at {p}: {e}"))?;
                    text += &h.feed(&data);
                    p += n as u64;
                    if text.len() >= 1 << 20 {
                        if out.write_all(text.as_bytes()).is_err() {
                            return Ok(());
                        }
                        text.clear();
                    }
                }
                text
            };
            if out.write_all(text.as_bytes()).is_err() {
                return Ok(()); // e.g. piped into head
            }
            pos = off + len;
        }
    }
    let _ = out.write_all(h.finish().as_bytes());
    Ok(())
}

/// Streams lines of 16 bytes; remembers the previous line to collapse runs.
pub struct HexDump {
    prev: Option<[u8; 16]>,
    starred: bool,
    pending: Vec<u8>,
    offset: u64,
}

impl HexDump {
    pub fn new(start: u64) -> Self {
        HexDump {
            prev: None,
            starred: false,
            pending: Vec::new(),
            offset: start,
        }
    }

    fn line(&mut self, bytes: &[u8], out: &mut String) {
        if bytes.len() == 16 {
            let arr: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
            if self.prev == Some(arr) {
                if !self.starred {
                    out.push_str("*\n");
                    self.starred = true;
                }
                self.offset += 16;
                return;
            }
            self.prev = Some(arr);
        } else {
            self.prev = None;
        }
        self.starred = false;
        let _ = write!(out, "{:08x} ", self.offset);
        for i in 0..16 {
            if i == 8 {
                out.push(' ');
            }
            match bytes.get(i) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        for &b in bytes {
            out.push(if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            });
        }
        out.push_str("|\n");
        self.offset += bytes.len() as u64;
    }

    /// Feed bytes; returns the text of every complete line.
    pub fn feed(&mut self, data: &[u8]) -> String {
        let mut out = String::new();
        self.pending.extend_from_slice(data);
        let full = self.pending.len() / 16 * 16;
        let pending = std::mem::take(&mut self.pending);
        for chunk in pending[..full].chunks(16) {
            self.line(chunk, &mut out);
        }
        self.pending = pending[full..].to_vec();
        out
    }

    /// Feed `n` zero bytes without materialising them: the same text as
    /// `feed(&vec![0; n])`, in time independent of `n`.
    pub fn zeros(&mut self, n: u64) -> String {
        let head = ((16 - self.pending.len() % 16) % 16).min(n as usize);
        let mut out = self.feed(&[0u8; 16][..head]);
        let rest = n - head as u64;
        let lines = rest / 16;
        // Two lines settle the state (printed or starred); the others
        // only move the offset.
        for _ in 0..lines.min(2) {
            out += &self.feed(&[0u8; 16]);
        }
        if lines > 2 {
            self.offset += (lines - 2) * 16;
        }
        out += &self.feed(&[0u8; 16][..(rest % 16) as usize]);
        out
    }

    /// Flush a partial last line and print the end offset.
    pub fn finish(mut self) -> String {
        let mut out = String::new();
        let p = std::mem::take(&mut self.pending);
        if !p.is_empty() {
            self.line(&p, &mut out);
        }
        let _ = writeln!(out, "{:08x}", self.offset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_like_hexdump_c() {
        let mut h = HexDump::new(0);
        let mut s = h.feed(&[0u8; 48]);
        s += &h.feed(b"AB");
        s += &h.finish();
        assert_eq!(
            s,
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000030  41 42                                             |AB|\n\
             00000032\n"
        );
    }

    #[test]
    fn zeros_match_feeding_zeros() {
        for (lead, n, tail) in [
            (0, 0, 0),
            (3, 5, 1),
            (5, 100, 17),
            (0, 16, 0),
            (16, 48, 16),
            (7, 1000, 0),
        ] {
            let lead_bytes: Vec<u8> = (1..=lead as u8).collect();
            let tail_bytes = vec![0x41u8; tail];
            let mut a = HexDump::new(0);
            let mut s1 = a.feed(&lead_bytes);
            s1 += &a.feed(&vec![0u8; n]);
            s1 += &a.feed(&tail_bytes);
            s1 += &a.finish();
            let mut b = HexDump::new(0);
            let mut s2 = b.feed(&lead_bytes);
            s2 += &b.zeros(n as u64);
            s2 += &b.feed(&tail_bytes);
            s2 += &b.finish();
            assert_eq!(s1, s2, "lead={lead} n={n} tail={tail}");
        }
    }
}
