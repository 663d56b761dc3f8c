//! Forking into the background as nbdkit does: the parent returns once the
//! server accepts connections (exit 0), or with the server's status when it
//! fails before that; the daemon runs in a new session with standard input
//! and output on /dev/null (and standard error too unless `-v`).
//! `--exit-with-parent` (PR_SET_PDEATHSIG) lives here as well.

use std::io::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The daemon's end of the readiness pipe.
pub struct Daemon {
    ready: Option<OwnedFd>,
    verbose: bool,
}

/// Fork. Only the child returns (with its `Daemon`); the parent waits until
/// the child calls [`Daemon::ready`] (exit 0) or exits (its status). Call it
/// before any thread starts: only the calling thread survives a fork.
pub fn fork(verbose: bool) -> Result<Daemon> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned here only.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the caller's contract).
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(Error::last_os_error());
    }
    if pid == 0 {
        drop(r);
        // SAFETY: plain syscall; fails only when already a group leader.
        unsafe { libc::setsid() };
        return Ok(Daemon {
            ready: Some(w),
            verbose,
        });
    }
    drop(w);
    let mut b = [0u8; 1];
    // SAFETY: reading into a one-byte buffer from a descriptor we own.
    let n = loop {
        let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n == -1 && Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n == 1 {
        std::process::exit(0);
    }
    // The daemon ended before it was ready: its status is ours.
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let got = unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = if got == pid && libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    std::process::exit(code)
}

impl Daemon {
    /// The server accepts connections: let the parent return, and detach
    /// from its standard input and output (and error, unless verbose).
    pub fn ready(&mut self) {
        let Some(w) = self.ready.take() else { return };
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let mut fds = vec![0, 1];
            if !self.verbose {
                fds.push(2);
            }
            for fd in fds {
                // SAFETY: dup2 onto the standard descriptors.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        // SAFETY: writing one byte from a live buffer to our pipe.
        unsafe { libc::write(w.as_raw_fd(), b"r".as_ptr().cast(), 1) };
    }
}

/// `--exit-with-parent`: get SIGTERM when the parent process dies (and
/// right away if it already has).
pub fn exit_with_parent() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    let parent = unsafe { libc::getppid() };
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) } == -1 {
        return Err(Error::last_os_error());
    }
    // The parent may have died before prctl.
    if unsafe { libc::getppid() } != parent {
        unsafe { libc::raise(libc::SIGTERM) };
    }
    Ok(())
}
