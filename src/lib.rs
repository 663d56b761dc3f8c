//! nbdscript: a Network Block Device server whose plugins and filters can be
//! Rhai scripts, reloaded live. See README.md and DESIGN.md for the layers:
//! `protocol` (wire format) ← `server` (tokio) → `backend` (Plugin/Filter
//! chain) → `plugins`/`filters`/`script` → `alloc`, `datastr`.

pub mod alloc;
pub mod backend;
pub mod cli;
pub mod datastr;
pub mod filters;
pub mod hexdump;
pub mod params;
pub mod plugins;
pub mod protocol;
pub mod script;
pub mod server;
pub mod storage;
