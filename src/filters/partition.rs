//! The `partition` filter: serve one partition of a partitioned disk, as
//! nbdkit-partition-filter: MBR primaries (1-4), MBR logical partitions
//! (5+, through the EBR chain of the extended partition), and GPT.
//! Parameters: `partition=N` (required, counting from 1).
//! Example: `nbdscript file disk.img --filter=partition partition=1`.
//! Must not import tokio or rhai.

use super::offset::OffsetHandle;
use super::FilterDef;
use crate::backend::{Backend, BackendError, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "partition",
    params: &[(
        "partition",
        "the partition number to serve, counting from 1 (required)",
    )],
    description: "serve one partition of an MBR or GPT disk",
    make,
};

const SECTOR: u64 = 512;

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let v = p.require("partition", "partition")?;
    let n: u32 = v.trim().parse().map_err(|_| {
        ConfigError::new(format!(
            "partition: partition={v}: expected a partition number counting from 1"
        ))
    })?;
    if n == 0 {
        return Err(ConfigError::new(
            "partition: partition=0: invalid partition number; they count from 1",
        ));
    }
    Ok(Arc::new(PartitionFilter { partnum: n }))
}

pub struct PartitionFilter {
    partnum: u32,
}

impl Filter for PartitionFilter {
    fn name(&self) -> String {
        "partition".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let size = next.get_size()?;
        let (offset, range) = find_partition(&*next, size, self.partnum)?;
        Ok(Arc::new(
            OffsetHandle::new(next, offset, range, size)
                .map_err(|_| BackendError::io("partition is outside the disk"))?,
        ))
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `(offset, range)` in bytes of partition `partnum` on `next`.
pub fn find_partition(next: &dyn Backend, size: u64, partnum: u32) -> Result<(u64, u64)> {
    if size < 2 * SECTOR {
        return Err(BackendError::io(
            "disk is too small to be a partitioned disk",
        ));
    }
    let mut lba01 = [0u8; 2 * SECTOR as usize];
    next.pread(&mut lba01, 0, 0)?;
    if size >= 2 * 34 * SECTOR && &lba01[512..520] == b"EFI PART" {
        find_gpt(next, size, &lba01[512..], partnum)
    } else if lba01[0x1fe] == 0x55 && lba01[0x1ff] == 0xaa {
        find_mbr(next, size, &lba01[..512], partnum)
    } else {
        Err(BackendError::io(
            "disk does not contain MBR or GPT partition table signature",
        ))
    }
}

fn is_extended(t: u8) -> bool {
    t == 0x05 || t == 0x0f || t == 0x85
}

/// `(type, start sector, sectors)` of entry `i` of an MBR/EBR sector.
fn mbr_entry(sector: &[u8], i: usize) -> (u8, u32, u32) {
    let o = 0x1be + i * 16;
    (sector[o + 4], le32(sector, o + 8), le32(sector, o + 12))
}

fn find_mbr(next: &dyn Backend, size: u64, mbr: &[u8], partnum: u32) -> Result<(u64, u64)> {
    if partnum <= 4 {
        let (t, start, n) = mbr_entry(mbr, partnum as usize - 1);
        if n > 0 && t != 0 && !is_extended(t) {
            return Ok((start as u64 * SECTOR, n as u64 * SECTOR));
        }
        return Err(BackendError::io(format!(
            "MBR partition {partnum} not found"
        )));
    }
    let ext = (0..4)
        .map(|i| mbr_entry(mbr, i))
        .find(|&(t, _, n)| n > 0 && is_extended(t))
        .ok_or_else(|| {
            BackendError::io(
                "MBR logical partition selected, but there is no extended partition in the partition table",
            )
        })?;
    let (_, ep_start, ep_n) = ext;
    let ep_end = (ep_start as u64 + ep_n as u64) * SECTOR;
    let mut ebr = ep_start as u64 * SECTOR;
    let mut sector = [0u8; SECTOR as usize];
    let mut i = 5u32;
    loop {
        if !ebr.is_multiple_of(SECTOR) || ebr < SECTOR || ebr >= size - SECTOR {
            return Err(BackendError::io(
                "invalid EBR chain: next EBR boot sector is located outside disk boundary",
            ));
        }
        next.pread(&mut sector, ebr, 0)?;
        if i == partnum {
            let (_, start, n) = mbr_entry(&sector, 0);
            let offset = ebr + start as u64 * SECTOR;
            let range = n as u64 * SECTOR;
            if offset <= ebr || offset + range > ep_end {
                return Err(BackendError::io(format!(
                    "logical partition start or size out of range (offset={offset}, range={range}, ep:startsect={ep_start}, ep:nrsects={ep_n})"
                )));
            }
            return Ok((offset, range));
        }
        let (_, link, link_n) = mbr_entry(&sector, 1);
        if link == 0 && link_n == 0 {
            break;
        }
        let next_ebr = (ep_start as u64 + link as u64) * SECTOR;
        if next_ebr <= ebr {
            return Err(BackendError::io(format!(
                "invalid EBR chain: next EBR {next_ebr} <= current EBR {ebr}"
            )));
        }
        ebr = next_ebr;
        i += 1;
    }
    Err(BackendError::io(format!(
        "MBR partition {partnum} not found"
    )))
}

fn find_gpt(next: &dyn Backend, size: u64, header: &[u8], partnum: u32) -> Result<(u64, u64)> {
    let nr_entries = le32(header, 80);
    let entry_size = le32(header, 84) as u64;
    if partnum > nr_entries {
        return Err(BackendError::io("GPT partition number out of range"));
    }
    if entry_size < 128 {
        return Err(BackendError::io("GPT partition entry size is < 128 bytes"));
    }
    if (size as u128) < 3 * SECTOR as u128 + 2 * nr_entries as u128 * entry_size as u128 {
        return Err(BackendError::io(
            "GPT partition table is too large for this disk",
        ));
    }
    let mut entry = [0u8; 128];
    let at = 2 * SECTOR + (partnum as u64 - 1) * entry_size;
    next.pread(&mut entry, at, 0)?;
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(BackendError::io(format!(
            "GPT partition {partnum} not found"
        )));
    }
    let first = le64(&entry, 32);
    let last = le64(&entry, 40);
    if last < first
        || last
            .checked_add(1)
            .and_then(|l| l.checked_mul(SECTOR))
            .is_none()
    {
        return Err(BackendError::io("partition is outside the disk"));
    }
    Ok((first * SECTOR, (1 + last - first) * SECTOR))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alloc::Sparse;
    use crate::filters::offset::tests::params;
    use crate::storage::AllocDisk;

    fn put_entry(b: &mut [u8], base: usize, i: usize, t: u8, start: u32, n: u32) {
        let o = base + 0x1be + i * 16;
        b[o + 4] = t;
        b[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
        b[o + 12..o + 16].copy_from_slice(&n.to_le_bytes());
    }

    /// A 1 MiB disk: primary 1 at sector 2 (4 sectors), extended at
    /// sector 16 (64 sectors) with logicals 5 (EBR 16, data 17, 8 sectors)
    /// and 6 (EBR 32, data 34, 4 sectors). Each data sector is filled with
    /// its sector number.
    pub fn mbr_disk() -> Vec<u8> {
        let mut b = vec![0u8; 1 << 20];
        for s in 0..(b.len() / 512) {
            b[s * 512..(s + 1) * 512].fill(s as u8);
        }
        b[..512].fill(0);
        put_entry(&mut b, 0, 0, 0x83, 2, 4);
        put_entry(&mut b, 0, 1, 0x05, 16, 64);
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        let e1 = 16 * 512;
        b[e1..e1 + 512].fill(0);
        put_entry(&mut b, e1, 0, 0x83, 1, 8);
        put_entry(&mut b, e1, 1, 0x05, 16, 8);
        b[e1 + 0x1fe] = 0x55;
        b[e1 + 0x1ff] = 0xaa;
        let e2 = 32 * 512;
        b[e2..e2 + 512].fill(0);
        put_entry(&mut b, e2, 0, 0x83, 2, 4);
        b[e2 + 0x1fe] = 0x55;
        b[e2 + 0x1ff] = 0xaa;
        b
    }

    /// A 1 MiB GPT disk with partitions 1 (LBA 64..=127) and 3 (LBA 200..=203).
    pub fn gpt_disk() -> Vec<u8> {
        let mut b = vec![0u8; 1 << 20];
        for s in 34..(b.len() / 512) {
            b[s * 512..(s + 1) * 512].fill(s as u8);
        }
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        put_entry(&mut b, 0, 0, 0xee, 1, 2047);
        b[512..520].copy_from_slice(b"EFI PART");
        b[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        b[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        for (i, first, last) in [(0usize, 64u64, 127u64), (2, 200, 203)] {
            let o = 1024 + i * 128;
            b[o..o + 16].fill(0xaf);
            b[o + 32..o + 40].copy_from_slice(&first.to_le_bytes());
            b[o + 40..o + 48].copy_from_slice(&last.to_le_bytes());
        }
        b
    }

    fn backend(bytes: &[u8]) -> Arc<dyn Backend> {
        let d = AllocDisk::new(Arc::new(Sparse::new()), bytes.len() as u64);
        d.pwrite(bytes, 0, 0).unwrap();
        Arc::new(d)
    }

    fn open(bytes: &[u8], n: &str) -> Result<Arc<dyn Backend>> {
        make(&params(&[("partition", n)]))
            .unwrap()
            .open(backend(bytes), false)
    }

    #[test]
    fn mbr() {
        let d = mbr_disk();
        let h = open(&d, "1").unwrap();
        assert_eq!(h.get_size().unwrap(), 4 * 512);
        let mut b = [0u8; 2];
        h.pread(&mut b, 511, 0).unwrap();
        assert_eq!(b, [2, 3]);
        let h = open(&d, "5").unwrap();
        assert_eq!(h.get_size().unwrap(), 8 * 512);
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(b, [17, 17]);
        let h = open(&d, "6").unwrap();
        assert_eq!(h.get_size().unwrap(), 4 * 512);
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(b, [34, 34]);
        assert!(open(&d, "2").is_err()); // extended is not servable
        assert!(open(&d, "3").is_err());
        assert!(open(&d, "7").is_err());
        assert!(open(&vec![0u8; 4096], "1").is_err());
        assert!(make(&params(&[("partition", "0")])).is_err());
        assert!(make(&params(&[])).is_err());
    }

    #[test]
    fn gpt() {
        let d = gpt_disk();
        let h = open(&d, "1").unwrap();
        assert_eq!(h.get_size().unwrap(), 64 * 512);
        let mut b = [0u8; 2];
        h.pread(&mut b, 511, 0).unwrap();
        assert_eq!(b, [64, 65]);
        let h = open(&d, "3").unwrap();
        assert_eq!(h.get_size().unwrap(), 4 * 512);
        assert!(open(&d, "2").is_err());
        assert!(open(&d, "129").is_err());
    }
}
