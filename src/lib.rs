//! nbdscript: a Network Block Device server whose plugins and filters can be
//! Rhai scripts, reloaded live — and a library to serve your own block
//! device over NBD from Rust.
//!
//! Implement [`Plugin`] (a few verbs, one [`Capabilities`] value, one
//! [`Behaviour`]), optionally [`Filter`]s, and serve them with a
//! [`Server`]:
//!
//! ```no_run
//! use nbdscript::{Capabilities, Plugin, Result, Server};
//! use std::sync::RwLock;
//!
//! /// A 16 MiB RAM disk shared by every client.
//! struct RamDisk(RwLock<Vec<u8>>);
//!
//! impl Plugin for RamDisk {
//!     type Handle = ();
//!     fn open(&self, _readonly: bool, _export_name: &str) -> Result<()> {
//!         Ok(())
//!     }
//!     fn get_size(&self, _: &()) -> Result<u64> {
//!         Ok(self.0.read().unwrap().len() as u64)
//!     }
//!     fn capabilities(&self, _: &()) -> Result<Capabilities> {
//!         Ok(Capabilities { write: true, flush: true, multi_conn: true, ..Default::default() })
//!     }
//!     fn pread(&self, _: &(), buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
//!         let o = offset as usize;
//!         buf.copy_from_slice(&self.0.read().unwrap()[o..o + buf.len()]);
//!         Ok(())
//!     }
//!     fn pwrite(&self, _: &(), buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
//!         let o = offset as usize;
//!         self.0.write().unwrap()[o..o + buf.len()].copy_from_slice(buf);
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> Result<()> {
//!     let disk = RamDisk(RwLock::new(vec![0; 16 << 20]));
//!     let status = Server::new(disk).run_command("nbdinfo $uri").run()?;
//!     std::process::exit(status.into())
//! }
//! ```
//!
//! Everything else is internal. The layers (DESIGN.md): `protocol` (wire
//! format) ← `server` → `backend` (the layer chain) → `plugins`/`filters`/
//! `script` → `alloc`, `datastr`.

#![warn(missing_docs)]

mod api;

pub use api::{
    extent_type, flags, Behaviour, BlockSize, CacheMode, Capabilities, Errno, Error, Extent,
    Filter, FuaMode, Next, Plugin, Result, Running, Server,
};

/// Parse a size as nbdkit does: a decimal number with an optional suffix
/// `b` (1), `s` (512), `k K M G T P E` (powers of 1024).
///
/// ```
/// assert_eq!(nbdscript::parse_size("64M"), Ok(64 << 20));
/// assert_eq!(nbdscript::parse_size("2s"), Ok(1024));
/// assert!(nbdscript::parse_size("lots").is_err());
/// ```
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    params::parse_size(s)
}

/// Modules private to the crate, made public (hidden from the docs) with
/// the `internals` feature for the project's own tests and benches, which
/// turn it on. Not a stable API.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "internals")]
            #[doc(hidden)]
            pub mod $name;
            #[cfg(not(feature = "internals"))]
            #[allow(dead_code, unused_imports)]
            pub(crate) mod $name;
        )*
    };
}

internal!(
    alloc, backend, datastr, filters, hexdump, ondisk, params, plugins, protocol, script, server,
    storage
);

mod cli;
mod daemon;
mod program;

/// The `nbdscript` program on this process's arguments, for the binary's
/// `main` (not a stable API): parse, fork unless told otherwise, serve;
/// returns the exit status.
#[doc(hidden)]
pub fn run_cli() -> std::process::ExitCode {
    program::main()
}
