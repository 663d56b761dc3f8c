//! Transports: the byte stream one connection runs over — a socket (TCP
//! or Unix), a TLS session on a socket (`tls.rs`), or a pipe pair (`-s`
//! with stdin and stdout). Blocking I/O shared by a connection's workers
//! (reads under the read lock, writes under the write lock), and a
//! [`Closer`] that another thread uses to end a blocked read or write
//! (shutdown, handshake timeout, eviction). No tokio here.

use super::socket::Socket;
use super::tls::TlsSession;
use bytes::{BufMut, BytesMut};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// `-s` over two descriptors (stdin, stdout). Reads wait in `poll` with a
/// wake-up pipe, so shutdown can end them.
pub struct Pipes {
    rd: OwnedFd,
    wr: OwnedFd,
    wake: Arc<WakePipe>,
}

/// The two ends of a pipe that, once written, wakes every read.
pub struct WakePipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl WakePipe {
    fn new() -> io::Result<WakePipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both were just created by pipe2.
        unsafe {
            Ok(WakePipe {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            })
        }
    }

    fn wake(&self) {
        // SAFETY: one byte to a descriptor we own.
        unsafe { libc::write(self.w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

impl Pipes {
    /// Standard input and output (duplicated: closing ours leaves theirs).
    pub fn stdio() -> io::Result<Pipes> {
        Ok(Pipes {
            rd: dup(0)?,
            wr: dup(1)?,
            wake: Arc::new(WakePipe::new()?),
        })
    }

    fn read(&self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            let mut p = [
                libc::pollfd {
                    fd: self.rd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if p[1].revents != 0 {
                return Ok(0);
            }
            // SAFETY: read writes at most dst.len() bytes into dst.
            let n = unsafe { libc::read(self.rd.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                return Err(e);
            }
        }
    }

    fn writev(&self, bufs: &[IoSlice]) -> io::Result<usize> {
        // SAFETY: IoSlice is ABI-compatible with iovec.
        let n = unsafe {
            libc::writev(
                self.wr.as_raw_fd(),
                bufs.as_ptr().cast(),
                bufs.len() as libc::c_int,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// The byte stream of one connection.
pub enum Transport {
    Plain(Arc<Socket>),
    Tls(TlsSession),
    Pipes(Pipes),
}

/// Ends a connection's blocked reads (and writes) from another thread.
#[derive(Clone)]
pub enum Closer {
    Socket(Arc<Socket>),
    Pipes(Arc<WakePipe>),
}

impl Closer {
    /// Reads see end of file: the connection finishes what it has.
    pub fn shutdown_read(&self) {
        match self {
            Closer::Socket(s) => s.shutdown(std::net::Shutdown::Read),
            Closer::Pipes(w) => w.wake(),
        }
    }

    /// Reads and writes fail: the connection ends now.
    pub fn shutdown_both(&self) {
        match self {
            Closer::Socket(s) => s.shutdown(std::net::Shutdown::Both),
            Closer::Pipes(w) => w.wake(),
        }
    }
}

impl Transport {
    pub fn closer(&self) -> Closer {
        match self {
            Transport::Plain(s) => Closer::Socket(s.clone()),
            Transport::Tls(t) => Closer::Socket(t.socket().clone()),
            Transport::Pipes(p) => Closer::Pipes(p.wake.clone()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Read what is available (at least one byte) into `dst`, waiting for
    /// all of it when `all`; 0 at end of file.
    pub fn read(&self, dst: &mut [MaybeUninit<u8>], all: bool) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.recv(dst, all),
            Transport::Tls(t) => t.read(dst),
            Transport::Pipes(p) => p.read(dst),
        }
    }

    /// Read up to `want` bytes into the spare capacity of `buf` (no
    /// zero-fill); 0 at end of file.
    pub fn recv_into(&self, buf: &mut BytesMut, want: usize, all: bool) -> io::Result<usize> {
        buf.reserve(want);
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(want);
        let n = self.read(&mut spare[..len], all)?;
        // SAFETY: the transport initialized the first n bytes.
        unsafe { buf.advance_mut(n) };
        Ok(n)
    }

    /// Fill `out` exactly (the handshake).
    pub fn read_exact(&self, out: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        while at < out.len() {
            let rest = &mut out[at..];
            // SAFETY: &mut [u8] is a valid &mut [MaybeUninit<u8>]; only
            // initialized bytes are written into it.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(rest.as_mut_ptr().cast(), rest.len()) };
            match self.read(dst, true)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => at += n,
            }
        }
        Ok(())
    }

    /// Write all of `a` then `b`, in one writev where the stream takes it.
    pub fn write2(&self, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
        if let Transport::Tls(t) = self {
            return t.write2(a, b);
        }
        while !a.is_empty() || !b.is_empty() {
            let bufs = [IoSlice::new(a), IoSlice::new(b)];
            let r = match self {
                Transport::Plain(s) => s.writev(&bufs),
                Transport::Pipes(p) => p.writev(&bufs),
                Transport::Tls(_) => unreachable!(),
            };
            let n = match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n >= a.len() {
                b = &b[n - a.len()..];
                a = &[];
            } else {
                a = &a[n..];
            }
        }
        Ok(())
    }

    pub fn write_all(&self, a: &[u8]) -> io::Result<()> {
        self.write2(a, &[])
    }

    /// Skip `n` bytes without keeping them.
    pub fn discard(&self, mut n: u64) -> io::Result<()> {
        let mut scratch = BytesMut::with_capacity(64 * 1024);
        while n > 0 {
            scratch.clear();
            let got = self.recv_into(&mut scratch, n.min(64 * 1024) as usize, false)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            n -= got as u64;
        }
        Ok(())
    }
}
