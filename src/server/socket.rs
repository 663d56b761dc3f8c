//! A connected stream socket (TCP or Unix), blocking: what a listener
//! accepts and a transport (plain or TLS) runs over.

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::unix::io::{AsRawFd, RawFd};

/// A connected stream socket, blocking.
pub enum Socket {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Socket {
    pub fn fd(&self) -> RawFd {
        match self {
            Socket::Unix(u) => u.as_raw_fd(),
            Socket::Tcp(t) => t.as_raw_fd(),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Unix(u) => u.set_nonblocking(on),
            Socket::Tcp(t) => t.set_nonblocking(on),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) {
        let _ = match self {
            Socket::Unix(u) => u.shutdown(how),
            Socket::Tcp(t) => t.shutdown(how),
        };
    }

    /// One `recv` into `dst`; `all` waits for all of it (MSG_WAITALL).
    pub fn recv(&self, dst: &mut [MaybeUninit<u8>], all: bool) -> io::Result<usize> {
        self.recv_flags(dst, if all { libc::MSG_WAITALL } else { 0 })
    }

    /// One `recv` with these flags (retried when interrupted).
    pub fn recv_flags(&self, dst: &mut [MaybeUninit<u8>], flags: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: recv writes at most dst.len() bytes into dst.
            let n = unsafe { libc::recv(self.fd(), dst.as_mut_ptr().cast(), dst.len(), flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn writev(&self, bufs: &[IoSlice]) -> io::Result<usize> {
        match self {
            Socket::Unix(u) => (&*u).write_vectored(bufs),
            Socket::Tcp(t) => (&*t).write_vectored(bufs),
        }
    }
}
