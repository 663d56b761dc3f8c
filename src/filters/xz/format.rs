//! The .xz container format as the `xz` filter needs it: stream headers and
//! footers, the index (where every block starts, compressed and not), block
//! headers, and decoding one block with liblzma's raw decoder. Pure byte
//! work over a `read_at` closure: must not import tokio, rhai or the server.

use lzma_sys as lz;
use std::ptr;

const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
const STREAM_HEADER_SIZE: u64 = 12;
/// Largest index accepted (a million 1 MiB blocks need about 8 MiB).
const MAX_INDEX: u64 = 256 << 20;

/// One block: where its bytes are in the file and in the uncompressed disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Offset of the block header in the .xz file.
    pub coffset: u64,
    /// Block header + compressed data + check (without the padding).
    pub unpadded: u64,
    /// Offset of the block's data in the uncompressed disk.
    pub uoffset: u64,
    pub usize: u64,
    /// Check type (low nibble of the stream flags).
    pub check: u8,
}

/// A format error: what was wrong, for the log and the client.
pub type FmtResult<T> = Result<T, String>;

/// Size of the check field for a check type (liblzma's table).
pub fn check_size(check: u8) -> u64 {
    const SIZES: [u64; 16] = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64];
    SIZES[(check & 0x0f) as usize]
}

fn crc32(buf: &[u8]) -> u32 {
    // SAFETY: liblzma reads exactly `len` bytes of a valid slice.
    unsafe { lz::lzma_crc32(buf.as_ptr(), buf.len(), 0) }
}

fn crc64(buf: &[u8]) -> u64 {
    // SAFETY: as above.
    unsafe { lz::lzma_crc64(buf.as_ptr(), buf.len(), 0) }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decode a multibyte integer (the xz "VLI") at `*pos`.
fn vli(buf: &[u8], pos: &mut usize) -> FmtResult<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let b = *buf.get(*pos).ok_or("truncated integer")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err("integer is not minimally encoded".into());
            }
            return Ok(v);
        }
    }
    Err("integer is longer than 9 bytes".into())
}

fn round4(n: u64) -> u64 {
    (n + 3) & !3
}

/// Read the index of every stream of the file (`size` bytes, read through
/// `read_at`) and return its blocks in disk order with their offsets.
pub fn read_index(
    size: u64,
    read_at: &mut dyn FnMut(&mut [u8], u64) -> FmtResult<()>,
) -> FmtResult<Vec<Block>> {
    if size < 2 * STREAM_HEADER_SIZE {
        return Err(format!(
            "the file is {size} bytes, too small to be an .xz file"
        ));
    }
    // Walk the streams from the end: padding, footer, index, blocks, header.
    let mut streams: Vec<Vec<Block>> = Vec::new();
    let mut pos = size;
    while pos > 0 {
        // Stream padding: zero bytes in multiples of four.
        let mut word = [0u8; 4];
        if !pos.is_multiple_of(4) {
            return Err("the file size is not a multiple of four: not an .xz file".into());
        }
        loop {
            if pos < STREAM_HEADER_SIZE {
                return Err(format!("garbage at the start of the file (offset {pos})"));
            }
            read_at(&mut word, pos - 4)?;
            if word != [0; 4] {
                break;
            }
            pos -= 4;
        }
        if pos < 2 * STREAM_HEADER_SIZE {
            return Err("truncated stream: no room for a stream header and footer".into());
        }
        let mut footer = [0u8; 12];
        read_at(&mut footer, pos - 12)?;
        if footer[10..12] != FOOTER_MAGIC {
            return Err(format!(
                "no xz stream footer before offset {pos}: not an .xz file, or truncated"
            ));
        }
        if crc32(&footer[4..10]) != le32(&footer[0..4]) {
            return Err("the stream footer's CRC32 is wrong: the file is damaged".into());
        }
        let backward = (u64::from(le32(&footer[4..8])) + 1) * 4;
        let flags = [footer[8], footer[9]];
        if flags[0] != 0 || flags[1] & 0xf0 != 0 {
            return Err("unsupported stream flags: written by a newer xz?".into());
        }
        let check = flags[1] & 0x0f;
        let index_end = pos - 12;
        let index_start = index_end
            .checked_sub(backward)
            .filter(|s| *s >= STREAM_HEADER_SIZE)
            .ok_or("the stream's index size points before the start of the file")?;
        if backward > MAX_INDEX {
            return Err(format!(
                "the stream footer claims a {backward}-byte index (more than {MAX_INDEX}): \
                 the file is damaged or not an .xz file"
            ));
        }
        let mut index = vec![0u8; backward as usize];
        read_at(&mut index, index_start)?;
        let records = parse_index(&index)?;
        let blocks_total: u64 = records.iter().map(|(u, _)| round4(*u)).sum();
        let stream_start = index_start
            .checked_sub(blocks_total + STREAM_HEADER_SIZE)
            .ok_or("the index describes more blocks than the file holds")?;
        let mut header = [0u8; 12];
        read_at(&mut header, stream_start)?;
        if header[0..6] != HEADER_MAGIC {
            return Err(format!(
                "no xz stream header at offset {stream_start}: not an .xz file, or damaged"
            ));
        }
        if crc32(&header[6..8]) != le32(&header[8..12]) || header[6..8] != flags {
            return Err("the stream header does not match its footer: the file is damaged".into());
        }
        let mut coffset = stream_start + STREAM_HEADER_SIZE;
        let mut blocks = Vec::with_capacity(records.len());
        for (unpadded, usize) in records {
            blocks.push(Block {
                coffset,
                unpadded,
                uoffset: 0,
                usize,
                check,
            });
            coffset += round4(unpadded);
        }
        streams.push(blocks);
        pos = stream_start;
    }
    let mut all = Vec::new();
    let mut uoffset = 0u64;
    for mut b in streams.into_iter().rev().flatten() {
        b.uoffset = uoffset;
        uoffset = uoffset
            .checked_add(b.usize)
            .filter(|u| *u <= i64::MAX as u64)
            .ok_or("the uncompressed size is larger than 2^63-1")?;
        all.push(b);
    }
    Ok(all)
}

/// Parse one stream's index field: `(unpadded size, uncompressed size)`.
fn parse_index(index: &[u8]) -> FmtResult<Vec<(u64, u64)>> {
    if index.len() < 8 || index[0] != 0 {
        return Err("the index does not start with its indicator byte".into());
    }
    let body = index.len() - 4;
    if crc32(&index[..body]) != le32(&index[body..]) {
        return Err("the index CRC32 is wrong: the file is damaged".into());
    }
    let mut pos = 1;
    let n = vli(index, &mut pos)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let unpadded = vli(index, &mut pos)?;
        let usize = vli(index, &mut pos)?;
        if unpadded < 5 || pos > body {
            return Err("a damaged index record".into());
        }
        out.push((unpadded, usize));
    }
    if round4(pos as u64) != body as u64 || index[pos..body].iter().any(|b| *b != 0) {
        return Err("the index has trailing bytes".into());
    }
    Ok(out)
}

/// The filters of a block header, decoded into liblzma's form. The options
/// liblzma allocated are freed on drop.
struct Filters(Vec<lz::lzma_filter>);

impl Drop for Filters {
    fn drop(&mut self) {
        for f in &self.0 {
            if !f.options.is_null() {
                // SAFETY: allocated by lzma_properties_decode with the
                // default allocator (malloc).
                unsafe { libc::free(f.options) };
            }
        }
    }
}

/// Parse a block header (its full bytes) into filters.
fn block_filters(h: &[u8]) -> FmtResult<Filters> {
    let n = h.len();
    if n < 8 || crc32(&h[..n - 4]) != le32(&h[n - 4..]) {
        return Err("a block header's CRC32 is wrong: the file is damaged".into());
    }
    let flags = h[1];
    if flags & 0x3c != 0 {
        return Err("unsupported block flags: written by a newer xz?".into());
    }
    let nfilters = usize::from(flags & 3) + 1;
    let mut pos = 2;
    if flags & 0x40 != 0 {
        vli(h, &mut pos)?;
    }
    if flags & 0x80 != 0 {
        vli(h, &mut pos)?;
    }
    let mut filters = Filters(Vec::with_capacity(nfilters + 1));
    for _ in 0..nfilters {
        let id = vli(h, &mut pos)?;
        let psize = vli(h, &mut pos)? as usize;
        let props = h
            .get(pos..pos.saturating_add(psize))
            .filter(|_| pos.saturating_add(psize) <= n - 4)
            .ok_or("a block header's filter properties are truncated")?;
        pos += psize;
        let mut f = lz::lzma_filter {
            id,
            options: ptr::null_mut(),
        };
        // SAFETY: props is a valid slice; liblzma writes only f.options.
        let r = unsafe { lz::lzma_properties_decode(&mut f, ptr::null(), props.as_ptr(), psize) };
        if r != lz::LZMA_OK {
            return Err(format!(
                "a block uses filter 0x{id:x}, which this liblzma cannot decode"
            ));
        }
        filters.0.push(f);
    }
    filters.0.push(lz::lzma_filter {
        id: lz::LZMA_VLI_UNKNOWN,
        options: ptr::null_mut(),
    });
    Ok(filters)
}

impl Block {
    /// Bytes the block takes in the file: header, data, padding, check.
    pub fn total(&self) -> u64 {
        round4(self.unpadded)
    }
}

/// Decode one block from its raw bytes (`b.total()` bytes read from
/// `coffset`): verify the header and the check, return `usize` bytes in
/// `out` (a recycled buffer: its contents are replaced, never zero-filled).
pub fn decode_block(b: &Block, raw: &[u8], mut out: Vec<u8>) -> FmtResult<Vec<u8>> {
    let hsize = (usize::from(*raw.first().ok_or("empty block")?) + 1) * 4;
    let csize = check_size(b.check) as usize;
    let unpadded = usize::try_from(b.unpadded).map_err(|_| "block too large")?;
    if raw[0] == 0 || unpadded < hsize + csize + 1 || raw.len() < unpadded {
        return Err(format!("block at offset {} is damaged", b.coffset));
    }
    let filters = block_filters(&raw[..hsize])?;
    let data = &raw[hsize..unpadded - csize];
    let usize = usize::try_from(b.usize).map_err(|_| "block too large for this machine")?;
    out.clear();
    out.reserve_exact(usize);
    let (mut in_pos, mut out_pos) = (0usize, 0usize);
    // SAFETY: the filter chain is terminated; the input slice is valid for
    // its length, `out` has capacity for `usize` bytes, and liblzma never
    // writes past out_size; set_len below covers only what it wrote.
    let r = unsafe {
        lz::lzma_raw_buffer_decode(
            filters.0.as_ptr(),
            ptr::null(),
            data.as_ptr(),
            &mut in_pos,
            data.len(),
            out.as_mut_ptr(),
            &mut out_pos,
            usize,
        )
    };
    // SAFETY: liblzma initialized the first out_pos <= usize bytes.
    unsafe { out.set_len(out_pos.min(usize)) };
    if r != lz::LZMA_OK || out_pos != usize {
        return Err(format!(
            "block at offset {} does not decompress (liblzma error {r}): the file is damaged",
            b.coffset
        ));
    }
    let check = &raw[raw.len() - csize..];
    let ok = match b.check {
        1 => crc32(&out).to_le_bytes() == check,
        4 => crc64(&out).to_le_bytes() == check,
        _ => true, // none, or SHA-256 (not verified)
    };
    if !ok {
        return Err(format!(
            "block at offset {}: the check does not match: the file is damaged",
            b.coffset
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vli_decoding() {
        let mut p = 0;
        assert_eq!(vli(&[0x05], &mut p), Ok(5));
        let mut p = 0;
        assert_eq!(vli(&[0x80, 0x01], &mut p), Ok(128));
        assert_eq!(p, 2);
        let mut p = 0;
        assert!(vli(&[0x80, 0x00], &mut p).is_err());
        let mut p = 0;
        assert!(vli(&[0x80], &mut p).is_err());
    }

    #[test]
    fn rejects_garbage() {
        let junk = [7u8; 64];
        let mut r = |buf: &mut [u8], off: u64| {
            buf.copy_from_slice(&junk[off as usize..off as usize + buf.len()]);
            Ok(())
        };
        let e = read_index(64, &mut r).unwrap_err();
        assert!(e.contains("not an .xz file"), "{e}");
        assert!(read_index(10, &mut r).is_err());
    }
}
