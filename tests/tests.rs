//! The one integration-test binary: every module here starts the real
//! `nbdscript` and checks it with real NBD clients.

mod alloc;
mod bounds;
mod common;
mod connections;
mod contain;
mod core;
mod curl;
mod datastr;
mod dropin;
mod examples;
mod file;
mod filters;
mod floor;
mod library;
mod network;
mod partitioning;
mod protocol;
mod remote;
mod s3;
mod script;
mod script_authoring;
mod sparse;
mod sparse_random;
mod stdlib;
mod tls;
mod torrent;
mod zeroes;
