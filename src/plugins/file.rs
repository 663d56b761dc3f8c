//! The `file` plugin: serve a file or block device, or (`dir=`) every
//! regular file and block device in a directory, one export per file
//! chosen by the export name and listed by NBD_OPT_LIST. pread/pwrite,
//! flush as fdatasync, FUA as fdatasync after the write, cache as
//! posix_fadvise(WILLNEED), trim as hole punching, zero with fallocate,
//! extents from SEEK_DATA/SEEK_HOLE (one with REQ_ONE, at most
//! `Extents::MAX` per request); read-only when the file is. Same
//! parameters as nbdkit-file-plugin (`file=`, the magic key; `dir=`,
//! `directory=`; `fadvise=`; `cache=`).

use super::PluginDef;
use crate::backend::{
    extent_type, flags, Backend, BackendError, CacheMode, Errno, Extents, FuaMode, Plugin, Result,
};
use crate::params::{ConfigError, Params};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "file",
    aliases: &[],
    magic_key: Some("file"),
    params: &[
        (
            "file",
            "path of the file or block device to serve (this or dir= is required)",
        ),
        (
            "dir",
            "serve every regular file and block device in this directory; the export name picks one",
        ),
        ("directory", "the same as dir="),
        (
            "fadvise",
            "normal|random|sequential: how the client will read (posix_fadvise hint)",
        ),
        (
            "cache",
            "default|none: none drops what was read or written from the page cache",
        ),
    ],
    description: "serve a local file or block device, or the files in a directory",
    callbacks: &["dump_plugin", "list_exports", "pwrite", "flush", "trim", "zero", "extents", "cache"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("file", &DEF.keys())?;
    let fadvise = match p.get("fadvise") {
        None | Some("normal") => libc::POSIX_FADV_NORMAL,
        Some("random") => libc::POSIX_FADV_RANDOM,
        Some("sequential") => libc::POSIX_FADV_SEQUENTIAL,
        Some(v) => {
            return Err(ConfigError::new(format!(
                "file: fadvise={v}: give normal, random or sequential"
            )))
        }
    };
    let cache_none = match p.get("cache") {
        None | Some("default") => false,
        Some("none") => true,
        Some(v) => {
            return Err(ConfigError::new(format!(
                "file: cache={v}: give default or none"
            )))
        }
    };
    let dir = p.get("dir").or_else(|| p.get("directory"));
    let source = match (p.get("file"), dir) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "file: file= and dir= cannot be used at the same time",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                "file: give [file=]FILENAME or dir=DIRECTORY after the plugin name",
            ))
        }
        (Some(f), None) => {
            let path = PathBuf::from(f);
            let meta = std::fs::metadata(&path).map_err(|e| {
                ConfigError::new(format!("file: cannot open file={}: {e}", path.display()))
            })?;
            if meta.is_dir() {
                return Err(ConfigError::new(format!(
                    "file: file={} is a directory; use dir= to serve the files in it",
                    path.display()
                )));
            }
            Source::File(path)
        }
        (None, Some(d)) => {
            let path = PathBuf::from(d);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => Source::Dir(path),
                Ok(_) => {
                    return Err(ConfigError::new(format!(
                        "file: dir={}: not a directory",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(ConfigError::new(format!(
                        "file: dir={}: {e}",
                        path.display()
                    )))
                }
            }
        }
    };
    Ok(Arc::new(FilePlugin {
        source,
        fadvise,
        cache_none,
    }))
}

enum Source {
    File(PathBuf),
    /// One export per regular file or block device directly inside.
    Dir(PathBuf),
}

pub struct FilePlugin {
    source: Source,
    /// POSIX_FADV_* given to each opened file.
    fadvise: i32,
    /// `cache=none`: evict what was read or written from the page cache.
    cache_none: bool,
}

/// A regular file or block device (symlinks followed)?
fn servable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() || meta.file_type().is_block_device()
}

impl FilePlugin {
    /// The path to open for an export name.
    fn path_for(&self, export: &str) -> Result<PathBuf> {
        match &self.source {
            Source::File(p) => Ok(p.clone()),
            Source::Dir(d) => {
                if export.is_empty() {
                    return Err(BackendError::new(
                        Errno::Inval,
                        format!(
                            "dir={}: choose a file by export name (nbdinfo --list shows them)",
                            d.display()
                        ),
                    ));
                }
                if export.contains('/') {
                    return Err(BackendError::new(
                        Errno::Inval,
                        format!("export name {export:?}: may not contain /"),
                    ));
                }
                Ok(d.join(export))
            }
        }
    }
}

impl Plugin for FilePlugin {
    fn name(&self) -> String {
        "file".into()
    }
    fn open(&self, readonly: bool, export: &str) -> Result<Arc<dyn Backend>> {
        let path = self.path_for(export)?;
        let rw = if readonly {
            Err(std::io::Error::from_raw_os_error(libc::EROFS))
        } else {
            OpenOptions::new().read(true).write(true).open(&path)
        };
        let (file, writable) = match rw {
            Ok(f) => (f, true),
            Err(_) => (
                File::open(&path)
                    .map_err(|e| BackendError::from_io(&format!("open {}", path.display()), &e))?,
                false,
            ),
        };
        let meta = file
            .metadata()
            .map_err(|e| BackendError::from_io(&format!("fstat {}", path.display()), &e))?;
        if !servable(&meta) {
            return Err(BackendError::new(
                Errno::Inval,
                format!("{}: not a regular file or block device", path.display()),
            ));
        }
        if self.fadvise != libc::POSIX_FADV_NORMAL {
            // A hint: failure is harmless.
            // SAFETY: posix_fadvise on an owned, open descriptor.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, self.fadvise) };
        }
        Ok(Arc::new(FileHandle {
            file,
            writable,
            cache_none: self.cache_none,
        }))
    }
    fn list_exports(&self) -> Vec<(String, String)> {
        let Source::Dir(d) = &self.source else {
            return vec![(String::new(), String::new())];
        };
        // Directory order, as nbdkit lists them.
        let Ok(rd) = std::fs::read_dir(d) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| servable(&m)))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| (n, String::new()))
            .collect()
    }
    fn dump(&self) -> Vec<(String, String)> {
        match &self.source {
            Source::File(p) => vec![("file".into(), p.display().to_string())],
            Source::Dir(d) => vec![("dir".into(), d.display().to_string())],
        }
    }
}

struct FileHandle {
    file: File,
    writable: bool,
    cache_none: bool,
}

fn last_os(what: &str) -> BackendError {
    BackendError::from_io(what, &std::io::Error::last_os_error())
}

impl FileHandle {
    /// Extents from SEEK_DATA/SEEK_HOLE, one seek per extent: stops after
    /// the first with `req_one` (as nbdkit), and after `max` (the reply
    /// may describe less than was asked; clients ask again from where it
    /// ends), so a fragmented file costs bounded work per request whatever
    /// its length.
    fn walk_extents(&self, count: u64, offset: u64, req_one: bool, max: usize) -> Result<Extents> {
        let end = offset + count;
        let mut e = Extents::new(offset, count);
        let mut pos = offset;
        let max = if req_one { 1 } else { max };
        while pos < end && e.len() < max {
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

    fn fadvise(&self, offset: u64, count: u64, advice: i32) -> i32 {
        // SAFETY: posix_fadvise on an owned, open descriptor.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                count as libc::off_t,
                advice,
            )
        }
    }

    /// `cache=none` after a write: write the range back, then drop it.
    fn evict_written(&self, offset: u64, count: u64) {
        // SAFETY: sync_file_range on an owned, open descriptor.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as libc::off64_t,
                count as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        self.fadvise(offset, count, libc::POSIX_FADV_DONTNEED);
    }

    /// Zero a range with fallocate: punch a hole when allowed, else
    /// ZERO_RANGE; ENOTSUP when neither works, so the server writes zeros.
    fn zero_range(&self, count: u64, offset: u64, f: u32) -> Result<()> {
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

    /// FUA: the write is durable before the reply (nbdkit: fdatasync).
    fn fua(&self, f: u32) -> Result<()> {
        if f & flags::FUA != 0 {
            self.file
                .sync_data()
                .map_err(|e| BackendError::from_io("fdatasync", &e))?;
        }
        Ok(())
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
        Ok(FuaMode::Native)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }
    fn cache(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        match self.fadvise(offset, count, libc::POSIX_FADV_WILLNEED) {
            0 => Ok(()),
            e => Err(BackendError::from_io(
                "posix_fadvise",
                &std::io::Error::from_raw_os_error(e),
            )),
        }
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let r = self.file.read_exact_at(buf, offset);
        if self.cache_none {
            self.fadvise(offset, buf.len() as u64, libc::POSIX_FADV_DONTNEED);
        }
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BackendError::io(format!(
                    "read at {offset}: the file is shorter than expected"
                ))
            } else {
                BackendError::from_io("pread", &e)
            }
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| BackendError::from_io("pwrite", &e))?;
        if self.cache_none {
            self.evict_written(offset, buf.len() as u64);
        }
        self.fua(f)
    }
    fn flush(&self, _flags: u32) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BackendError::from_io("fdatasync", &e))
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        // Trim is a hint: a file system that cannot punch holes ignores it.
        let _ = self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            count,
            offset,
        );
        self.fua(f)
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        self.zero_range(count, offset, f)?;
        self.fua(f)
    }
    fn extents(&self, count: u64, offset: u64, f: u32) -> Result<Extents> {
        self.walk_extents(count, offset, f & flags::REQ_ONE != 0, Extents::MAX)
    }
}

#[cfg(test)]
mod tests;
