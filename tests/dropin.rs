//! nbdkit's command line as scripts written for nbdkit use it: forking
//! into the background, --exit-with-parent, -D, bare values anywhere,
//! --dump-plugin, --version probes, --dump-config, IPv6, -v backend
//! debugging, -D data.AST=1. One submodule each for process life, flags
//! and probes, and debugging output.

use crate::common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

mod daemon;
mod debug;
mod flags;

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
