//! The NBD wire format: constants, handshake and option frames, requests
//! and replies, errno. Pure: no tokio, no sockets; framing is
//! check → parse → advance over a byte buffer.

pub mod consts;
pub mod errno;

pub use errno::Errno;
