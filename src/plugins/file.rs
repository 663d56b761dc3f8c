//! The `file` plugin: serve a file or block device. pread/pwrite, flush as
//! fdatasync, trim as hole punching, zero with fallocate, extents from
//! SEEK_DATA/SEEK_HOLE; read-only when the file is. Same parameters as
//! nbdkit-file-plugin (`file=`, the magic key).

use super::PluginDef;
use crate::backend::{
    extent_type, flags, Backend, BackendError, CacheMode, Errno, Extents, FuaMode, Plugin, Result,
};
use crate::params::{ConfigError, Params};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "file",
    aliases: &[],
    magic_key: Some("file"),
    params: &[(
        "file",
        "path of the file or block device to serve (required)",
    )],
    description: "serve a local file or block device",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("file", &DEF.keys())?;
    let path = PathBuf::from(p.require("file", "file")?);
    let meta = std::fs::metadata(&path)
        .map_err(|e| ConfigError::new(format!("file: cannot open file={}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(ConfigError::new(format!(
            "file: file={} is a directory; give a regular file or block device",
            path.display()
        )));
    }
    Ok(Arc::new(FilePlugin { path }))
}

pub struct FilePlugin {
    path: PathBuf,
}

impl Plugin for FilePlugin {
    fn name(&self) -> String {
        "file".into()
    }
    fn open(&self, readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        let rw = if readonly {
            Err(std::io::Error::from_raw_os_error(libc::EROFS))
        } else {
            OpenOptions::new().read(true).write(true).open(&self.path)
        };
        let (file, writable) = match rw {
            Ok(f) => (f, true),
            Err(_) => (
                File::open(&self.path).map_err(|e| {
                    BackendError::from_io(&format!("open {}", self.path.display()), &e)
                })?,
                false,
            ),
        };
        Ok(Arc::new(FileHandle { file, writable }))
    }
    fn dump(&self) -> Vec<(String, String)> {
        vec![("file".into(), self.path.display().to_string())]
    }
}

struct FileHandle {
    file: File,
    writable: bool,
}

fn last_os(what: &str) -> BackendError {
    BackendError::from_io(what, &std::io::Error::last_os_error())
}

impl FileHandle {
    fn fallocate(&self, mode: i32, count: u64, offset: u64) -> std::io::Result<()> {
        // SAFETY: fallocate on an owned, open descriptor with checked values.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                count as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn seek(&self, offset: u64, whence: i32) -> Option<u64> {
        // SAFETY: lseek on an owned descriptor; positional I/O elsewhere
        // never depends on the file position.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, whence) };
        if r < 0 {
            None
        } else {
            Some(r as u64)
        }
    }
}

impl Backend for FileHandle {
    fn is_blocking(&self) -> bool {
        true
    }
    fn get_size(&self) -> Result<u64> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| BackendError::from_io("fstat", &e))?;
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        self.seek(0, libc::SEEK_END)
            .ok_or_else(|| last_os("seek to end of device"))
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(self.writable)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.writable)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_extents(&self) -> Result<bool> {
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
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BackendError::io(format!(
                    "read at {offset}: the file is shorter than expected"
                ))
            } else {
                BackendError::from_io("pread", &e)
            }
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| BackendError::from_io("pwrite", &e))
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BackendError::from_io("fdatasync", &e))
    }
    fn trim(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        // Trim is a hint: a file system that cannot punch holes ignores it.
        let _ = self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            count,
            offset,
        );
        Ok(())
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        if f & flags::MAY_TRIM != 0
            && self
                .fallocate(
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    count,
                    offset,
                )
                .is_ok()
        {
            return Ok(());
        }
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            count,
            offset,
        ) {
            Ok(()) => Ok(()),
            // Not supported here: the server falls back to writing zeros.
            Err(e) => Err(BackendError::new(
                Errno::NotSup,
                format!("fallocate zero range: {e}"),
            )),
        }
    }
    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        let end = offset + count;
        let mut e = Extents::new(offset, count);
        let mut pos = offset;
        while pos < end {
            let data = match self.seek(pos, libc::SEEK_DATA) {
                Some(d) => d,
                None => {
                    // ENXIO: no data after pos, or SEEK_DATA unsupported.
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::ENXIO) {
                        e.add(pos, end - pos, extent_type::HOLE | extent_type::ZERO)?;
                    } else {
                        e.add(pos, end - pos, extent_type::DATA)?;
                    }
                    break;
                }
            };
            if data > pos {
                e.add(
                    pos,
                    data.min(end) - pos,
                    extent_type::HOLE | extent_type::ZERO,
                )?;
                pos = data;
                continue;
            }
            let hole = self.seek(pos, libc::SEEK_HOLE).unwrap_or(end);
            e.add(pos, hole.max(pos + 1).min(end) - pos, extent_type::DATA)?;
            pos = hole.max(pos + 1);
        }
        Ok(e)
    }
}
