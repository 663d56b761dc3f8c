//! The command line: clap flags (`args`) → a validated `Config`
//! (`config`: the stack of plugin and filters, where to listen, what to
//! run), and what it prints and exits with (`info`).

mod args;
mod config;
mod info;

pub use args::{parse, Args};
pub use config::Config;
pub use info::{invoked_as_nbdkit, NBDKIT_COMPAT_VERSION};

// What the binary needs from the crate besides the command line.
pub use crate::backend::{budget, debug as backend_debug};
pub use crate::hexdump::print_export;
