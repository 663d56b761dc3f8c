//! The `tmpdisk` plugin: every connection gets a fresh private disk in
//! `$TMPDIR` (default /var/tmp), made by a shell command (by default
//! `truncate` + `mkfs -t $type`, as nbdkit-tmpdisk-plugin), opened, then
//! unlinked at once so it is gone when the client disconnects (or the
//! server dies). Not multi-conn: two clients see two different disks.
//! May use `backend`, `params` and the `file` plugin; no tokio, no rhai.

use super::PluginDef;
use crate::backend::{Backend, BackendError, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "tmpdisk",
    aliases: &[],
    magic_key: Some("size"),
    params: &[
        (
            "size",
            "size of each disk, e.g. 1G (required); the command gets it as $size",
        ),
        ("type", "file system for mkfs -t (default ext4)"),
        ("label", "file system label"),
        (
            "command",
            "shell command that creates the file $disk (of about $size bytes); \
             any other KEY=VALUE is in its environment",
        ),
    ],
    description: "a fresh private scratch disk (mkfs'd) for every connection",
    callbacks: &["dump_plugin", "pwrite", "flush", "trim", "zero", "extents", "cache"],
    make,
};

/// nbdkit's default command (default-command.sh), word for word.
const DEFAULT_COMMAND: &str = r#"labelopt='-L'
case "$type" in
    ext?)
        extra='-F' ;;
    *fat|msdos)
        extra='-I' ;;
    ntfs)
        extra='-Q -F'
        labelopt='-n' ;;
    xfs)
        extra='-f' ;;
esac

# Create the output disk.
truncate -s "$size" "$disk"

if [ "x$label" = "x" ]; then
    mkfs -t "$type" $extra "$disk"
else
    mkfs -t "$type" $extra $labelopt "$label" "$disk"
fi
"#;

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    Ok(Arc::new(build(p)?))
}

fn build(p: &Params) -> std::result::Result<TmpDisk, ConfigError> {
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new("tmpdisk: the parameter size= is required, e.g. size=1G")
    })?;
    let typ = p.get("type").unwrap_or("ext4").to_string();
    if typ.is_empty() || !typ.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ConfigError::new(format!(
            "tmpdisk: type={typ}: expected a file system name for mkfs -t, e.g. ext4, xfs, vfat"
        )));
    }
    let command = p.get("command");
    let mut env: Vec<(String, String)> = vec![
        ("size".into(), size.to_string()),
        ("type".into(), typ.clone()),
        ("label".into(), p.get("label").unwrap_or("").to_string()),
    ];
    for (k, v) in &p.items {
        if ["size", "type", "label", "command"].contains(&k.as_str()) {
            continue;
        }
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if command.is_none() || !valid || k == "disk" {
            return Err(ConfigError::new(format!(
                "tmpdisk: unknown parameter {k}={v}; accepted: size, type, label, command, \
                 and, with command=, other KEY=VALUE words whose KEY is a shell variable name \
                 (not disk)"
            )));
        }
        env.push((k.clone(), v.clone()));
    }
    let dir = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    Ok(TmpDisk {
        command: command.unwrap_or(DEFAULT_COMMAND).to_string(),
        custom: command.is_some(),
        env,
        dir,
    })
}

/// The process-wide plugin: how to make a disk.
pub struct TmpDisk {
    command: String,
    custom: bool,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A private directory for one disk, removed with what is left in it.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(parent: &Path) -> Result<TmpDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let p = parent.join(format!("tmpdisk-{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TmpDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(BackendError::from_io(
                        &format!("tmpdisk: cannot make a directory in {}", parent.display()),
                        &e,
                    ))
                }
            }
        }
        Err(BackendError::io(
            "tmpdisk: cannot find a free temporary name",
        ))
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TmpDisk {
    fn run(&self, disk: &Path) -> Result<()> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("disk", disk)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BackendError::from_io("tmpdisk: cannot run sh", &e))?;
        let err = String::from_utf8_lossy(&out.stderr);
        tracing::debug!(
            "tmpdisk command output: {}{}",
            String::from_utf8_lossy(&out.stdout),
            err
        );
        if !out.status.success() {
            return Err(BackendError::io(format!(
                "tmpdisk: the {} failed ({}): {}",
                if self.custom {
                    "command="
                } else {
                    "mkfs command"
                },
                out.status,
                err.trim()
            )));
        }
        Ok(())
    }
}

impl Plugin for TmpDisk {
    fn name(&self) -> String {
        "tmpdisk".into()
    }

    fn open(&self, readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        let dir = TmpDir::new(&self.dir)?;
        let disk = dir.0.join("disk");
        self.run(&disk)?;
        if !disk.is_file() {
            return Err(BackendError::io(format!(
                "tmpdisk: the command did not create the file $disk ({})",
                disk.display()
            )));
        }
        let path = disk.to_string_lossy().into_owned();
        let file = (super::file::DEF.make)(&Params::new(vec![("file".into(), path)]))
            .map_err(|e| BackendError::io(format!("tmpdisk: {e}")))?;
        let inner = file.open(readonly, "")?;
        // The open descriptor keeps the data; the name goes now, so the disk
        // vanishes when the connection ends, however it ends.
        drop(dir);
        Ok(Arc::new(TmpDiskHandle { inner }))
    }

    fn dump(&self) -> Vec<(String, String)> {
        vec![("tmpdir".into(), self.dir.display().to_string())]
    }
}

/// One connection's private disk: a file handle whose name is gone.
struct TmpDiskHandle {
    inner: Arc<dyn Backend>,
}

impl Backend for TmpDiskHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(self.inner.as_ref())
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(false)
    }
    /// The disk is always a regular file, and the `file` layer zeroes with
    /// fallocate only (PUNCH_HOLE when holes are allowed, else
    /// ZERO_RANGE): metadata work, never a write of zeros, so fast zero is
    /// advertised (as nbdkit's tmpdisk does). Where the file system cannot
    /// do it that way the zero fails with ENOTSUP at once, and only a zero
    /// without FAST_ZERO falls back to writing zeros (plugin layer).
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &[(&str, &str)]) -> Params {
        Params::new(
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    fn plugin_in(dir: &Path, v: &[(&str, &str)]) -> TmpDisk {
        let mut p = build(&params(v)).expect("build");
        p.dir = dir.to_path_buf();
        p
    }

    #[test]
    fn ext4_per_connection_and_gone() {
        let d = tempfile::tempdir().unwrap();
        let p = plugin_in(d.path(), &[("size", "16M"), ("label", "scratch")]);
        let a = p.open(false, "").expect("open a");
        let b = p.open(false, "").expect("open b");
        assert_eq!(a.get_size().unwrap(), 16 << 20);
        assert!(!a.can_multi_conn().unwrap());
        let mut magic = [0u8; 2];
        a.pread(&mut magic, 1080, 0).unwrap();
        assert_eq!(u16::from_le_bytes(magic), 0xEF53, "ext4 superblock magic");
        // Private: a write on one is not seen on the other.
        a.pwrite(&[0xAA; 512], 8 << 20, 0).unwrap();
        let mut buf = [0u8; 512];
        b.pread(&mut buf, 8 << 20, 0).unwrap();
        assert_ne!(buf, [0xAA; 512]);
        // Nothing is left in the directory, even while connected.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        a.close();
        b.close();
    }

    #[test]
    fn fast_zero_is_fallocate_and_keeps_the_rest() {
        use crate::backend::flags::{FAST_ZERO, MAY_TRIM};
        let d = tempfile::tempdir().unwrap();
        let p = plugin_in(
            d.path(),
            &[("size", "64M"), ("command", "truncate -s \"$size\" \"$disk\"")],
        );
        let h = p.open(false, "").expect("open");
        assert!(h.can_fast_zero().unwrap());
        h.pwrite(&[0xAA; 8192], 1 << 20, 0).unwrap();
        for f in [FAST_ZERO | MAY_TRIM, FAST_ZERO] {
            h.pwrite(&[0xAA; 8192], 1 << 20, 0).unwrap();
            // Zero [1M+4K, 1M+4K+32M): the first 4 KiB written stay.
            h.zero(32 << 20, (1 << 20) + 4096, f).expect("fast zero");
            let mut buf = vec![1u8; 8192];
            h.pread(&mut buf, 1 << 20, 0).unwrap();
            assert_eq!(&buf[..4096], &[0xAA; 4096][..], "flags {f}");
            assert_eq!(&buf[4096..], &[0; 4096][..], "flags {f}");
        }
        h.close();
    }

    #[test]
    fn custom_command_with_variables() {
        let d = tempfile::tempdir().unwrap();
        let p = plugin_in(
            d.path(),
            &[
                ("size", "1M"),
                (
                    "command",
                    "printf '%s' \"$greeting\" > \"$disk\"; truncate -s \"$size\" \"$disk\"",
                ),
                ("greeting", "hello"),
            ],
        );
        let h = p.open(false, "").expect("open");
        assert_eq!(h.get_size().unwrap(), 1 << 20);
        let mut b = [0u8; 5];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(&b, b"hello");
        assert!(make(&params(&[
            ("size", "1M"),
            ("command", "true"),
            ("greeting", "x")
        ]))
        .is_ok());
    }

    #[test]
    fn failures_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = plugin_in(
            d.path(),
            &[("size", "1M"), ("command", "echo boom >&2; exit 3")],
        );
        let e = p.open(false, "").err().expect("fails");
        assert!(e.message.contains("boom"), "{}", e.message);
        let p = plugin_in(d.path(), &[("size", "1M"), ("command", "true")]);
        let e = p.open(false, "").err().expect("no file");
        assert!(e.message.contains("did not create"), "{}", e.message);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        assert!(make(&params(&[])).is_err());
        assert!(make(&params(&[("size", "1M"), ("type", "ext4; rm")])).is_err());
        let e = make(&params(&[("size", "1M"), ("foo", "bar")]))
            .err()
            .unwrap();
        assert!(e.0.contains("foo=bar"), "{e}");
    }
}
