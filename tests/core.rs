//! The server core against real clients: nbdinfo, nbdsh, nbdcopy, qemu-img,
//! qemu-io, fio; memory, null and file plugins; bad input of every kind.
//! One submodule each for the clients, concurrent load, and the process.

use crate::common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

mod clients;
mod load;
mod process;
