//! The private socket directory of `-U -`: `$TMPDIR/nbdscriptXXXXXXXX`
//! (random name, mode 0700, never an existing path), removed on drop.

use std::path::PathBuf;

/// A private directory holding the server's socket; removed on drop.
pub struct SocketDir {
    dir: PathBuf,
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SocketDir {
    /// Make the directory; the socket's path is [`SocketDir::socket`].
    pub fn new() -> Result<SocketDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "cannot create a private socket directory in {}: {e}",
                base.display()
            )
        };
        for _ in 0..100u32 {
            let mut r = [0u8; 8];
            // SAFETY: getrandom fills the buffer it is given.
            let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
            if n != r.len() as isize {
                return Err(fail(&"cannot get random bytes"));
            }
            let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let dir = base.join(format!("nbdscript{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(SocketDir { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fail(&e)),
            }
        }
        Err(fail(&"every name tried exists"))
    }

    /// The socket's path inside the directory.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }
}
