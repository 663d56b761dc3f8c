//! `hexdump -C`-style rendering of bytes, with runs of identical lines
//! collapsed to `*`, for `--hexdump` previews. Pure formatting.

use std::fmt::Write;

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
}
