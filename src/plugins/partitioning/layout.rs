//! The virtual disk of the partitioning plugin: where each partition's
//! file, the partition tables and the zero padding lie (the regions), and
//! the bytes of the tables: an MBR (with an extended partition and a chain
//! of EBRs past four files) or a GPT (protective MBR, primary header and
//! entries, backup entries and header, with their CRC-32s). The layout is
//! nbdkit-partitioning-plugin's, so the disk is byte-identical to
//! nbdkit's apart from the random unique partition GUIDs of a GPT.
//! Must not import tokio or rhai.

use crate::params::ConfigError;

pub const SECTOR: u64 = 512;
/// The largest (and default) alignment of a partition, as nbdkit.
pub const MAX_ALIGNMENT: u64 = 2048 * SECTOR;
/// nbdkit's bound on the files' total size for an MBR (2^32 sectors less
/// some padding); past it the default table is a GPT.
pub const MAX_MBR_DISK_SIZE: u64 = u32::MAX as u64 * SECTOR - 5 * MAX_ALIGNMENT;
/// GPT entries come in groups of this many (the UEFI minimum), 128 bytes each.
const GPT_MIN_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// nbdkit writes its C struct's size (92 bytes padded to 96), which UEFI allows (at
/// least 92); the CRC covers all 96.
const GPT_HEADER_SIZE: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableType {
    Mbr,
    Gpt,
}

/// One partition as the command line gave it.
pub struct Part {
    /// The path as given (a GPT entry's name when short and ASCII).
    pub name: String,
    pub size: u64,
    pub alignment: u64,
    pub mbr_id: u8,
    /// The partition type GUID, in on-disk byte order.
    pub type_guid: [u8; 16],
    /// The unique partition GUID, in on-disk byte order.
    pub guid: [u8; 16],
}

/// What a stretch of the disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The `i`th file.
    File(usize),
    /// `Layout::tables[i]`: a partition table (read-only).
    Table(usize),
    /// Padding: reads as zeros, only zeros may be written.
    Zero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub kind: Kind,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

pub struct Layout {
    pub regions: Vec<Region>,
    pub tables: Vec<Vec<u8>>,
    /// What each table is, for messages: `MBR`, `EBR`, `GPT primary`, ...
    pub table_names: Vec<&'static str>,
    pub size: u64,
}

fn too_big() -> ConfigError {
    ConfigError::new("partitioning: the virtual disk would be larger than 2^63-1 bytes")
}

impl Layout {
    /// Lay the parts out and write the tables.
    pub fn build(parts: &[Part], ttype: TableType) -> Result<Layout, ConfigError> {
        let mut l = Layout {
            regions: Vec::new(),
            tables: Vec::new(),
            table_names: Vec::new(),
            size: 0,
        };
        let n = parts.len() as u64;
        let pta_lbas = n.div_ceil(GPT_MIN_ENTRIES) * GPT_MIN_ENTRIES * GPT_ENTRY_SIZE / SECTOR;
        let extended = ttype == TableType::Mbr && parts.len() > 4;
        match ttype {
            TableType::Mbr => l.push_table("MBR", SECTOR)?,
            TableType::Gpt => l.push_table("GPT primary", (2 + pta_lbas) * SECTOR)?,
        }
        let mut file_region = Vec::with_capacity(parts.len());
        let mut ebr_region = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if extended && i >= 3 {
                ebr_region.push(l.regions.len());
                l.push_table("EBR", SECTOR)?;
            }
            l.pad_to(p.alignment)?;
            file_region.push(l.regions.len());
            l.push(p.size, Kind::File(i))?;
            l.pad_to(SECTOR)?;
        }
        if ttype == TableType::Gpt {
            l.push_table("GPT secondary", (pta_lbas + 1) * SECTOR)?;
        }
        let files: Vec<Region> = file_region.iter().map(|&r| l.regions[r]).collect();
        match ttype {
            TableType::Mbr => {
                let ebrs: Vec<Region> = ebr_region.iter().map(|&r| l.regions[r]).collect();
                l.write_mbr(parts, &files, &ebrs)?
            }
            TableType::Gpt => l.write_gpt(parts, &files, pta_lbas),
        }
        Ok(l)
    }

    fn push(&mut self, len: u64, kind: Kind) -> Result<(), ConfigError> {
        let end = self.size.checked_add(len).filter(|&e| e <= i64::MAX as u64);
        let end = end.ok_or_else(too_big)?;
        self.regions.push(Region {
            start: self.size,
            len,
            kind,
        });
        self.size = end;
        Ok(())
    }

    fn push_table(&mut self, name: &'static str, len: u64) -> Result<(), ConfigError> {
        self.tables.push(vec![0; len as usize]);
        self.table_names.push(name);
        self.push(len, Kind::Table(self.tables.len() - 1))
    }

    /// Zero padding up to a multiple of `align` (a power of two).
    fn pad_to(&mut self, align: u64) -> Result<(), ConfigError> {
        let rem = self.size % align;
        if rem != 0 {
            self.push(align - rem, Kind::Zero)?;
        }
        Ok(())
    }

    /// The region holding `offset` (< size).
    pub fn find(&self, offset: u64) -> &Region {
        let i = self.regions.partition_point(|r| r.start <= offset);
        &self.regions[i.saturating_sub(1)]
    }

    fn write_mbr(&mut self, parts: &[Part], files: &[Region], ebrs: &[Region]) -> Result<(), ConfigError> {
        let size = self.size;
        let mut mbr = std::mem::take(&mut self.tables[0]);
        mbr[0x1fe] = 0x55;
        mbr[0x1ff] = 0xaa;
        let primaries = if ebrs.is_empty() { parts.len() } else { 3 };
        for i in 0..primaries {
            mbr_entry(&mut mbr[0x1be + 16 * i..], i == 0, parts[i].mbr_id, files[i].start, files[i].len)?;
        }
        if let Some(first) = ebrs.first() {
            mbr_entry(&mut mbr[0x1ee..], false, 0x0f, first.start, size - first.start)?;
            for (k, ebr) in ebrs.iter().enumerate() {
                let i = k + 3;
                let Kind::Table(t) = ebr.kind else { continue };
                let b = &mut self.tables[t];
                b[0x1fe] = 0x55;
                b[0x1ff] = 0xaa;
                let f = files[i];
                mbr_entry(&mut b[0x1be..], false, parts[i].mbr_id, f.start - ebr.start, f.len)?;
                if let Some(next) = ebrs.get(k + 1) {
                    let nf = files[i + 1];
                    mbr_entry(&mut b[0x1ce..], false, 0x0f, next.start - first.start, nf.end() - next.start)?;
                }
            }
        }
        self.tables[0] = mbr;
        Ok(())
    }

    fn write_gpt(&mut self, parts: &[Part], files: &[Region], pta_lbas: u64) {
        let lbas = self.size / SECTOR;
        let pta_len = (pta_lbas * SECTOR) as usize;
        let mut pta = vec![0u8; pta_len];
        for (i, (p, f)) in parts.iter().zip(files).enumerate() {
            let e = &mut pta[i * GPT_ENTRY_SIZE as usize..(i + 1) * GPT_ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid);
            e[16..32].copy_from_slice(&p.guid);
            e[32..40].copy_from_slice(&(f.start / SECTOR).to_le_bytes());
            e[40..48].copy_from_slice(&((f.end() - 1) / SECTOR).to_le_bytes());
            // Legacy BIOS bootable on the first, as nbdkit.
            e[48..56].copy_from_slice(&(if i == 0 { 4u64 } else { 0 }).to_le_bytes());
            if p.name.len() < 36 && p.name.is_ascii() {
                for (j, c) in p.name.bytes().enumerate() {
                    e[56 + 2 * j] = c;
                }
            }
        }
        let pta_crc = crc32(&pta);
        let header = |current: u64, backup: u64, entries: u64| {
            let mut h = [0u8; GPT_HEADER_SIZE];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&[0, 0, 1, 0]);
            h[12..16].copy_from_slice(&(GPT_HEADER_SIZE as u32).to_le_bytes());
            h[24..32].copy_from_slice(&current.to_le_bytes());
            h[32..40].copy_from_slice(&backup.to_le_bytes());
            h[40..48].copy_from_slice(&(2 + pta_lbas).to_le_bytes());
            h[48..56].copy_from_slice(&(lbas - pta_lbas - 2).to_le_bytes());
            // 56..72: the disk GUID, left zero as nbdkit does.
            h[72..80].copy_from_slice(&entries.to_le_bytes());
            h[80..84].copy_from_slice(&((pta_len as u64 / GPT_ENTRY_SIZE) as u32).to_le_bytes());
            h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
            h[88..92].copy_from_slice(&pta_crc.to_le_bytes());
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let primary = &mut self.tables[0];
        // The protective MBR: one 0xee partition over the disk, or as much
        // of it as an MBR can say.
        let end = (self.size - 1).min(u32::MAX as u64 * SECTOR);
        // Cannot fail: the end is clamped to what 32 bits of sectors hold.
        let _ = mbr_entry(&mut primary[0x1be..], false, 0xee, SECTOR, end - SECTOR + 1);
        primary[0x1fe] = 0x55;
        primary[0x1ff] = 0xaa;
        primary[512..512 + GPT_HEADER_SIZE].copy_from_slice(&header(1, lbas - 1, 2));
        primary[1024..1024 + pta_len].copy_from_slice(&pta);
        let last = self.tables.len() - 1;
        let secondary = &mut self.tables[last];
        secondary[..pta_len].copy_from_slice(&pta);
        secondary[pta_len..pta_len + GPT_HEADER_SIZE]
            .copy_from_slice(&header(lbas - 1, 1, lbas - pta_lbas - 1));
    }
}

/// One 16-byte MBR partition entry; CHS fields say "too large" (LBA only).
fn mbr_entry(out: &mut [u8], bootable: bool, id: u8, start: u64, len: u64) -> Result<(), ConfigError> {
    let first = start / SECTOR;
    let count = len.div_ceil(SECTOR);
    let (Ok(first), Ok(count)) = (u32::try_from(first), u32::try_from(count)) else {
        return Err(ConfigError::new(format!(
            "partitioning: the virtual disk is too large for an MBR partition table (a partition at sector {first} of {count} sectors does not fit in 32 bits); use partition-type=gpt"
        )));
    };
    const CHS_TOO_LARGE: [u8; 3] = [254, 0xff, 0xff];
    out[0] = if bootable { 0x80 } else { 0 };
    out[1..4].copy_from_slice(&CHS_TOO_LARGE);
    out[4] = id;
    out[5..8].copy_from_slice(&CHS_TOO_LARGE);
    out[8..12].copy_from_slice(&first.to_le_bytes());
    out[12..16].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

/// A GUID as text (`0FC63DAF-8483-4772-8E79-3D69D8477DE4`, braces
/// allowed) in GPT's on-disk order: the first three groups little-endian.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    crate::ondisk::guid_bytes(s).ok()
}

pub use crate::ondisk::crc32;
