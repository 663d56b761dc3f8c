//! The `partitioning` plugin: a partitioned virtual disk made of files,
//! one partition per file, as nbdkit-partitioning-plugin. An MBR table
//! (an extended partition and logical partitions past four files) or a
//! GPT (primary and backup) is generated in front of (and for GPT behind)
//! the files; reads and writes of a partition go to its file, the tables
//! may only be rewritten with the bytes they hold and the padding between
//! partitions with zeros (else EIO). Parameters, in order as nbdkit:
//! `file=` (the magic key, repeatable), `partition-type=mbr|gpt`, and
//! `alignment=`, `mbr-id=`, `type-guid=` which apply to the files after
//! them. Must not import tokio or rhai.

mod layout;

use super::random::Xoshiro256;
use super::PluginDef;
use crate::backend::{Backend, BackendError, CacheMode, FuaMode, Plugin, Result};
use crate::params::{parse_int, parse_size, ConfigError, Params};
use layout::{Kind, Layout, Part, TableType, MAX_ALIGNMENT, MAX_MBR_DISK_SIZE, SECTOR};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "partitioning",
    aliases: &[],
    magic_key: Some("file"),
    params: &[
        (
            "file",
            "a file holding one partition; repeat for more (at least one is required)",
        ),
        (
            "partition-type",
            "mbr|gpt (default: mbr for up to 4 files that fit in 2T, else gpt)",
        ),
        (
            "alignment",
            "alignment of the following partitions: a power of two from 512 to 1M (default 1M)",
        ),
        (
            "mbr-id",
            "MBR type byte of the following partitions, e.g. 0x82, or default (0x83)",
        ),
        (
            "type-guid",
            "GPT type GUID of the following partitions, or default (0FC63DAF-8483-4772-8E79-3D69D8477DE4)",
        ),
    ],
    description: "a partitioned disk (MBR or GPT) made of one file per partition",
    callbacks: &["pwrite", "flush"],
    make,
};

const DEFAULT_MBR_ID: u8 = 0x83;
const DEFAULT_TYPE_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The current settings while walking the parameters.
struct Settings {
    alignment: u64,
    mbr_id: u8,
    type_guid: [u8; 16],
}

fn err(msg: String) -> ConfigError {
    ConfigError::new(format!("partitioning: {msg}"))
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("partitioning", &DEF.keys())?;
    let default_guid = layout::parse_guid(DEFAULT_TYPE_GUID).unwrap_or_default();
    let mut set = Settings {
        alignment: MAX_ALIGNMENT,
        mbr_id: DEFAULT_MBR_ID,
        type_guid: default_guid,
    };
    let mut ttype = None;
    let mut parts = Vec::new();
    let mut files = Vec::new();
    let mut read_only = false;
    let mut guids = Guids::new();
    for (k, v) in &p.items {
        match k.as_str() {
            "file" => {
                let (f, ro) = open_file(v)?;
                read_only |= ro;
                let size = size_of(&f, v)?;
                parts.push(Part {
                    name: v.clone(),
                    size,
                    alignment: set.alignment,
                    mbr_id: set.mbr_id,
                    type_guid: set.type_guid,
                    guid: guids.next(),
                });
                files.push(PartFile { file: f, name: v.clone() });
            }
            "partition-type" => {
                ttype = Some(match v.to_ascii_lowercase().as_str() {
                    "mbr" | "dos" => TableType::Mbr,
                    "gpt" => TableType::Gpt,
                    _ => return Err(err(format!("partition-type={v}: give mbr or gpt"))),
                })
            }
            "alignment" => set.alignment = alignment(v)?,
            "mbr-id" => {
                set.mbr_id = if v.eq_ignore_ascii_case("default") {
                    DEFAULT_MBR_ID
                } else {
                    parse_int(v)
                        .ok()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| {
                            err(format!("mbr-id={v}: give a byte such as 0x83 (0 to 255), or default"))
                        })?
                }
            }
            "type-guid" => {
                set.type_guid = if v.eq_ignore_ascii_case("default") {
                    default_guid
                } else {
                    layout::parse_guid(v).ok_or_else(|| {
                        err(format!(
                            "type-guid={v}: not a GUID (like 0FC63DAF-8483-4772-8E79-3D69D8477DE4), or default"
                        ))
                    })?
                }
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Err(err(
            "at least one file= is required, e.g. partitioning boot.img root.img".into(),
        ));
    }
    let total = parts
        .iter()
        .try_fold(0u64, |a, p| a.checked_add(p.size))
        .unwrap_or(u64::MAX);
    let needs_gpt = total > MAX_MBR_DISK_SIZE;
    let ttype = match ttype {
        Some(TableType::Mbr) if needs_gpt => {
            return Err(err(format!(
                "partition-type=mbr: an MBR partition table supports a virtual disk of about 2 TB, but the {} file(s) total {total} bytes (> {MAX_MBR_DISK_SIZE}); use partition-type=gpt",
                parts.len()
            )))
        }
        Some(t) => t,
        None if needs_gpt || parts.len() > 4 => TableType::Gpt,
        None => TableType::Mbr,
    };
    let layout = Layout::build(&parts, ttype)?;
    for (i, r) in layout.regions.iter().enumerate() {
        let what = match r.kind {
            Kind::File(f) => parts[f].name.as_str(),
            Kind::Table(t) => layout.table_names[t],
            Kind::Zero => "padding",
        };
        tracing::debug!("partitioning: region[{i}]: {:x}-{:x} {what}", r.start, r.end() - 1);
    }
    Ok(Arc::new(Partitioning(Arc::new(Disk {
        files,
        layout,
        read_only,
    }))))
}

/// Open read-write as nbdkit; a file we may only read makes the disk
/// read-only instead of failing.
fn open_file(path: &str) -> std::result::Result<(File, bool), ConfigError> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok((f, false)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => {
            File::open(path)
                .map(|f| (f, true))
                .map_err(|e| err(format!("file={path}: {e}")))
        }
        Err(e) => Err(err(format!("file={path}: {e}"))),
    }
}

/// The size of a file or block device; zero is refused as nbdkit.
fn size_of(f: &File, path: &str) -> std::result::Result<u64, ConfigError> {
    let meta = f.metadata().map_err(|e| err(format!("file={path}: {e}")))?;
    if meta.is_dir() {
        return Err(err(format!("file={path}: is a directory, not a partition image")));
    }
    let mut f = f;
    let size = f.seek(SeekFrom::End(0)).map_err(|e| err(format!("file={path}: {e}")))?;
    if size == 0 {
        return Err(err(format!("file={path}: zero length partitions are not allowed")));
    }
    Ok(size)
}

fn alignment(v: &str) -> std::result::Result<u64, ConfigError> {
    let a = parse_size(v).map_err(|e| err(format!("alignment={v}: {e}")))?;
    if !(SECTOR..=MAX_ALIGNMENT).contains(&a) || !a.is_power_of_two() {
        return Err(err(format!(
            "alignment={v}: give a power of two from 512 (the sector size) to 1M"
        )));
    }
    Ok(a)
}

/// Unique partition GUIDs: random (version 4), as each GPT needs.
struct Guids(Xoshiro256);

impl Guids {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom fills the buffer it is given.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        let mut s = u64::from_le_bytes(seed);
        if n != 8 {
            s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ std::process::id() as u64;
        }
        Guids(Xoshiro256::seeded(s))
    }

    fn next(&mut self) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&self.0.next_u64().to_le_bytes());
        g[8..].copy_from_slice(&self.0.next_u64().to_le_bytes());
        g[7] = (g[7] & 0x0f) | 0x40; // version 4 (byte 7: the third group's high byte on disk)
        g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
        g
    }
}

struct PartFile {
    file: File,
    name: String,
}

struct Disk {
    files: Vec<PartFile>,
    layout: Layout,
    read_only: bool,
}

pub struct Partitioning(Arc<Disk>);

impl Plugin for Partitioning {
    fn name(&self) -> String {
        "partitioning".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(Handle(self.0.clone())))
    }
}

struct Handle(Arc<Disk>);

impl Handle {
    /// Call `f(region, offset in region, range of buf)` for each region
    /// `[offset, offset+len)` crosses.
    fn walk(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&layout::Region, u64, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let r = self.0.layout.find(pos);
            let n = ((r.end() - pos).min((len - done) as u64)) as usize;
            f(r, pos - r.start, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

impl Backend for Handle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.0.layout.size)
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn can_write(&self) -> Result<bool> {
        Ok(!self.0.read_only)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        Ok(FuaMode::Emulate)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Emulate)
    }

    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let d = &*self.0;
        self.walk(offset, buf.len(), |r, at, range| {
            let out = &mut buf[range];
            match r.kind {
                Kind::File(i) => {
                    let pf = &d.files[i];
                    pf.file.read_exact_at(out, at).map_err(|e| {
                        let msg = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            "unexpected end of file (did it shrink?)".to_string()
                        } else {
                            e.to_string()
                        };
                        BackendError::io(format!("partitioning: pread: {}: {msg}", pf.name))
                    })
                }
                Kind::Table(t) => {
                    let at = at as usize;
                    out.copy_from_slice(&d.layout.tables[t][at..at + out.len()]);
                    Ok(())
                }
                Kind::Zero => {
                    out.fill(0);
                    Ok(())
                }
            }
        })
    }

    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        let d = &*self.0;
        self.walk(offset, buf.len(), |r, at, range| {
            let data = &buf[range];
            match r.kind {
                Kind::File(i) => {
                    let pf = &d.files[i];
                    pf.file.write_all_at(data, at).map_err(|e| {
                        BackendError::from_io(&format!("partitioning: pwrite: {}", pf.name), &e)
                    })
                }
                Kind::Table(t) => {
                    let at = at as usize;
                    if d.layout.tables[t][at..at + data.len()] == *data {
                        Ok(())
                    } else {
                        Err(BackendError::io(format!(
                            "partitioning: attempt to change the partition table of the virtual disk ({} at offset {})",
                            d.layout.table_names[t],
                            r.start + at as u64
                        )))
                    }
                }
                Kind::Zero => {
                    if data.iter().all(|&b| b == 0) {
                        Ok(())
                    } else {
                        Err(BackendError::io(format!(
                            "partitioning: write of non-zero bytes to padding between partitions (offset {})",
                            r.start + at
                        )))
                    }
                }
            }
        })
    }

    fn flush(&self, _flags: u32) -> Result<()> {
        for pf in &self.0.files {
            pf.file
                .sync_data()
                .map_err(|e| BackendError::from_io(&format!("partitioning: fdatasync: {}", pf.name), &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
