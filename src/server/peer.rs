//! Who is at the other end of a connection: the TCP address, or a Unix
//! socket peer's credentials (SO_PEERCRED) and security label
//! (SO_PEERSEC), for filters' `preconnect` (the ip filter).

use super::socket::Socket;
use super::transport::Transport;
use crate::backend::Peer;
use std::net::SocketAddr;

/// The peer of `t` (before TLS: called on the plain socket).
pub fn of(t: &Transport) -> Peer {
    match t {
        Transport::Plain(s) => of_socket(s),
        Transport::Tls(t) => of_socket(t.socket()),
        Transport::Pipes(_) => Peer::Unknown,
    }
}

fn of_socket(s: &Socket) -> Peer {
    match s {
        Socket::Tcp(t) => match t.peer_addr() {
            Ok(SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(v4) => Peer::Tcp(SocketAddr::new(v4.into(), a.port())),
                None => Peer::Tcp(SocketAddr::V6(a)),
            },
            Ok(a) => Peer::Tcp(a),
            Err(_) => Peer::Unknown,
        },
        Socket::Unix(_) => {
            let (pid, uid, gid) = match peercred(s.fd()) {
                Some(c) => (Some(c.pid), Some(c.uid), Some(c.gid)),
                None => (None, None, None),
            };
            Peer::Unix {
                pid,
                uid,
                gid,
                security: peersec(s.fd()),
            }
        }
    }
}

fn peercred(fd: i32) -> Option<libc::ucred> {
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (r == 0).then_some(cred)
    }
}

fn peersec(fd: i32) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERSEC,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    let b = &buf[..(len as usize).min(buf.len())];
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned())
}
