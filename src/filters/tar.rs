//! The `tar` filter: serve one file inside an uncompressed tar archive
//! provided by any layer below, as nbdkit-tar-filter. The headers are read
//! here (ustar, GNU long names `L`, pax `x` headers with `path=`/`size=`,
//! GNU base-256 sizes), not by running tar. Writes modify the entry in place.
//! Parameters: `tar-entry=PATH` (required, exactly as `tar tf` lists it),
//! `tar-limit=SIZE` (scan at most this many bytes of the archive for the
//! entry; default 0 = no limit).
//! Example: `nbdscript file disk.tar --filter=tar tar-entry=disk.img`.
//! Must not import tokio or rhai.

use super::offset::OffsetHandle;
use super::value;
use super::FilterDef;
use crate::backend::{Backend, BackendError, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "tar",
    params: &[
        (
            "tar-entry",
            "path of the file inside the tar to serve (required)",
        ),
        (
            "tar-limit",
            "scan at most this many bytes for the entry (default 0: no limit)",
        ),
    ],
    description: "serve one file inside a tar archive",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let entry = p.require("tar-entry", "tar")?.to_string();
    if entry.is_empty() {
        return Err(ConfigError::new(
            "tar: tar-entry= is empty; give the path as `tar tf` lists it",
        ));
    }
    Ok(Arc::new(TarFilter {
        entry,
        limit: value::size(p, "tar-limit", "tar")?.unwrap_or(0),
    }))
}

pub struct TarFilter {
    entry: String,
    limit: u64,
}

impl Filter for TarFilter {
    fn name(&self) -> String {
        "tar".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let size = next.get_size()?;
        let (offset, len) = find_entry(&*next, size, &self.entry, self.limit)?;
        Ok(Arc::new(
            OffsetHandle::new(next, offset, len, size)?.blocking(),
        ))
    }
}

const BLOCK: u64 = 512;
/// Largest GNU long name or pax header we read.
const MAX_META: u64 = 1 << 20;

/// A NUL-terminated field.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// An octal number field (or GNU base-256 when the top bit is set).
fn number(b: &[u8]) -> Option<u64> {
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut v: u64 = (first & 0x3f) as u64;
            for &c in &b[1..] {
                v = v.checked_mul(256)?.checked_add(c as u64)?;
            }
            return Some(v);
        }
    }
    let t = cstr(b);
    let s = std::str::from_utf8(t)
        .ok()?
        .trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = number(&h[148..156]) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                c as u64
            }
        })
        .sum();
    sum == want
}

/// Parse pax records `LEN key=value\n`; returns (path, size) overrides.
fn pax(data: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let mut path = None;
    let mut size = None;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&c| c == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > rest.len() {
            break;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&c| c == b'=') {
            let (k, v) = (&rec[..eq], &rec[eq + 1..]);
            match k {
                b"path" => path = Some(v.to_vec()),
                b"size" => {
                    size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    (path, size)
}

/// Find `entry` in the tar on `next`: `(data offset, size)`.
pub fn find_entry(next: &dyn Backend, size: u64, entry: &str, limit: u64) -> Result<(u64, u64)> {
    let mut pos = 0u64;
    let mut hdr = [0u8; BLOCK as usize];
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        if limit > 0 && pos.saturating_add(BLOCK) > limit {
            return Err(BackendError::io(format!(
                "tar: {entry} not found in the first {limit} bytes (tar-limit)"
            )));
        }
        if pos.saturating_add(BLOCK) > size {
            return Err(BackendError::io(format!(
                "tar: {entry} not found: the archive ends without it"
            )));
        }
        next.pread(&mut hdr, pos, 0)?;
        if hdr.iter().all(|&c| c == 0) {
            return Err(BackendError::io(format!(
                "tar: {entry} not found in the archive"
            )));
        }
        if !checksum_ok(&hdr) {
            return Err(BackendError::io(format!(
                "tar: bad header checksum at offset {pos}: not a tar file, or a compressed one (stack a decompressing filter below)"
            )));
        }
        let typ = hdr[156];
        let hsize = number(&hdr[124..136])
            .ok_or_else(|| BackendError::io(format!("tar: bad size field at offset {pos}")))?;
        let fsize = pax_size.unwrap_or(hsize);
        let data = pos + BLOCK;
        let padded = fsize
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .ok_or_else(|| BackendError::io("tar: entry size overflows"))?;
        match typ {
            b'L' | b'x' => {
                if hsize > MAX_META || data + hsize > size {
                    return Err(BackendError::io(format!(
                        "tar: extended header at offset {pos} is too large ({hsize} bytes)"
                    )));
                }
                let mut meta = vec![0u8; hsize as usize];
                next.pread(&mut meta, data, 0)?;
                if typ == b'L' {
                    long_name = Some(cstr(&meta).to_vec());
                } else {
                    let (p, s) = pax(&meta);
                    pax_path = p.or(pax_path);
                    pax_size = s.or(pax_size);
                }
                pos = data + hsize.div_ceil(BLOCK) * BLOCK;
                continue;
            }
            _ => {}
        }
        let name: Vec<u8> = if let Some(p) = pax_path.take() {
            p
        } else if let Some(l) = long_name.take() {
            l
        } else {
            let base = cstr(&hdr[0..100]);
            let prefix = if &hdr[257..263] == b"ustar\0" {
                cstr(&hdr[345..500])
            } else {
                &[]
            };
            if prefix.is_empty() {
                base.to_vec()
            } else {
                [prefix, b"/", base].concat()
            }
        };
        long_name = None;
        pax_size = None;
        let regular = matches!(typ, b'0' | 0 | b'7');
        if regular && name == entry.as_bytes() {
            if data.checked_add(fsize).is_none_or(|e| e > size) {
                return Err(BackendError::io(format!(
                    "tar: {entry} ({fsize} bytes at offset {data}) extends beyond the end of the archive"
                )));
            }
            return Ok((data, fsize));
        }
        // Hard links, symlinks, directories, devices carry no data.
        let skip = if matches!(typ, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
            0
        } else {
            padded
        };
        pos = data
            .checked_add(skip)
            .ok_or_else(|| BackendError::io("tar: entry size overflows"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Sparse;
    use crate::filters::offset::tests::params;
    use crate::storage::AllocDisk;

    fn header(name: &[u8], size: u64, typ: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = typ;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&c| c as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn member(out: &mut Vec<u8>, name: &[u8], data: &[u8], typ: u8) {
        out.extend(header(name, data.len() as u64, typ));
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn archive() -> Vec<u8> {
        let mut t = Vec::new();
        member(&mut t, b"a.txt", b"hello", b'0');
        let long = vec![b'x'; 150];
        let mut ln = long.clone();
        ln.push(0);
        member(&mut t, b"././@LongLink", &ln, b'L');
        member(&mut t, &long[..100], &[7u8; 1000], b'0');
        member(&mut t, b"PaxHeader", b"20 path=pax/name.img\n", b'x');
        member(&mut t, b"short", &[9u8; 600], b'0');
        member(&mut t, b"dir/", b"", b'5');
        t.extend(vec![0u8; 1024]);
        t
    }

    fn open(t: &[u8], kv: &[(&str, &str)]) -> Result<Arc<dyn Backend>> {
        let d = AllocDisk::new(Arc::new(Sparse::new()), t.len() as u64);
        d.pwrite(t, 0, 0).unwrap();
        make(&params(kv)).unwrap().open(Arc::new(d), false)
    }

    #[test]
    fn entries() {
        let t = archive();
        let h = open(&t, &[("tar-entry", "a.txt")]).unwrap();
        assert_eq!(h.get_size().unwrap(), 5);
        assert!(h.is_blocking());
        let mut b = [0u8; 5];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(&b, b"hello");
        let long = "x".repeat(150);
        let h = open(&t, &[("tar-entry", &long)]).unwrap();
        assert_eq!(h.get_size().unwrap(), 1000);
        let h = open(&t, &[("tar-entry", "pax/name.img")]).unwrap();
        assert_eq!(h.get_size().unwrap(), 600);
        h.pread(&mut b, 595, 0).unwrap();
        assert_eq!(b, [9; 5]);
        assert!(open(&t, &[("tar-entry", "short")]).is_err());
        assert!(open(&t, &[("tar-entry", "nope")]).is_err());
        assert!(open(&t, &[("tar-entry", "pax/name.img"), ("tar-limit", "2048")]).is_err());
        assert!(open(&vec![1u8; 4096], &[("tar-entry", "a.txt")]).is_err());
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]), Some(258));
    }
}
