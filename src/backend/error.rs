//! `BackendError`: an NBD errno plus a message for the log.
//! Must not import tokio or rhai.

use crate::protocol::Errno;
use std::fmt;

/// The error every backend call returns: the errno the client receives and a
/// message that goes to the log (and, with structured replies, to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// What the client receives.
    pub errno: Errno,
    /// What the log (and a structured reply) says.
    pub message: String,
}

/// A backend call's result.
pub type Result<T> = std::result::Result<T, BackendError>;

impl BackendError {
    /// An error with `errno` and `message`.
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        BackendError {
            errno,
            message: message.into(),
        }
    }
    /// EIO with `message`.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Errno::Io, message)
    }
    /// EINVAL with `message`.
    pub fn inval(message: impl Into<String>) -> Self {
        Self::new(Errno::Inval, message)
    }
    /// From a host I/O error, with what was being done.
    pub fn from_io(what: &str, e: &std::io::Error) -> Self {
        Self::new(Errno::from_io(e), format!("{what}: {e}"))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.errno, self.message)
    }
}

impl std::error::Error for BackendError {}
