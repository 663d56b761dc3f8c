//! The NBD wire format: constants, handshake and option frames, requests
//! and replies, errno. Pure: no tokio, no sockets; framing is
//! check → parse → advance over a `BytesMut`.

pub mod consts;
pub mod errno;
pub mod handshake;
pub mod transmission;

pub use errno::Errno;
pub use handshake::ProtocolError;
pub use transmission::{ReplyMode, Request};
