//! TLS as nbdkit offers it, with OpenSSL: the credentials (an X.509
//! directory or a psktool PSK file) loaded once into a server context,
//! and a TLS session on an accepted socket that a connection's workers
//! share. After its handshake the socket is non-blocking: a worker holds
//! the session's lock only while OpenSSL runs, and waits in `poll`
//! without it, so one worker's read never blocks another's write.

use super::socket::Socket;
use openssl::ssl::{
    ErrorCode, SslAcceptor, SslFiletype, SslMethod, SslMode, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::verify::X509VerifyFlags;
use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--tls=off|on|require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Off,
    /// Offered; a client may stay in plain text.
    On,
    /// Every option but STARTTLS (and ABORT) is refused before TLS.
    Require,
}

/// How errors name the TLS settings: the command line's flags, or the
/// library builder's methods (a library user has no flags to give).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsNames {
    #[default]
    Flags,
    Builder,
}

impl TlsNames {
    /// What gives credentials, as a sentence start.
    pub fn credentials_needed(self) -> &'static str {
        match self {
            TlsNames::Flags => "--tls needs --tls-certificates=DIR or --tls-psk=FILE",
            TlsNames::Builder => {
                "TLS needs Server::tls_certificates(dir) or Server::tls_psk(file)"
            }
        }
    }

    /// Peer verification asked for with TLS off.
    pub fn verify_peer_needs_tls(self) -> &'static str {
        match self {
            TlsNames::Flags => "--tls-verify-peer needs --tls=on or --tls=require",
            TlsNames::Builder => {
                "Server::tls_verify_peer(true) needs TLS: give Server::tls_certificates(dir) (or Server::tls_require(true) with certificates in nbdkit's default directories)"
            }
        }
    }

    /// The setting that verifies client certificates.
    pub fn verify_peer(self) -> &'static str {
        match self {
            TlsNames::Flags => "--tls-verify-peer",
            TlsNames::Builder => "Server::tls_verify_peer(true)",
        }
    }
}

/// What a client needs to connect (for `$uri`).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The certificates directory.
    X509(PathBuf),
    /// The PSK file and its first user name.
    Psk(PathBuf, String),
}

/// The server side of TLS, built once at start-up.
pub struct TlsConfig {
    pub mode: TlsMode,
    pub credentials: Credentials,
    acceptor: SslAcceptor,
}

fn ssl_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// nbdkit's default certificate directories, in its order.
pub fn default_certificates_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = std::env::var_os("HOME") {
        let h = PathBuf::from(h);
        v.push(h.join(".pki/nbdkit"));
        v.push(h.join(".config/pki/nbdkit"));
    }
    v.push(PathBuf::from("/etc/pki/nbdkit"));
    v
}

impl TlsConfig {
    /// X.509: `server-cert.pem` and `server-key.pem` in `dir`, with
    /// `ca-cert.pem` (needed to verify clients) and `ca-crl.pem` if there.
    /// `names` words the errors.
    pub fn x509(
        mode: TlsMode,
        dir: &Path,
        verify_peer: bool,
        names: TlsNames,
    ) -> Result<TlsConfig, String> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(|e| ssl_err("cannot set up TLS", e))?;
        let cert = dir.join("server-cert.pem");
        let key = dir.join("server-key.pem");
        b.set_certificate_chain_file(&cert)
            .map_err(|e| ssl_err(&format!("cannot load {}", cert.display()), e))?;
        b.set_private_key_file(&key, SslFiletype::PEM)
            .map_err(|e| ssl_err(&format!("cannot load {}", key.display()), e))?;
        b.check_private_key().map_err(|e| {
            ssl_err(
                &format!("{} does not match {}", key.display(), cert.display()),
                e,
            )
        })?;
        let ca = dir.join("ca-cert.pem");
        if ca.exists() {
            b.set_ca_file(&ca)
                .map_err(|e| ssl_err(&format!("cannot load {}", ca.display()), e))?;
        } else if verify_peer {
            return Err(format!(
                "{} needs {} to check client certificates",
                names.verify_peer(),
                ca.display()
            ));
        }
        let crl = dir.join("ca-crl.pem");
        if crl.exists() {
            // The store's file loader takes CRLs as well as certificates.
            b.set_ca_file(&crl)
                .map_err(|e| ssl_err(&format!("cannot load {}", crl.display()), e))?;
            b.cert_store_mut()
                .set_flags(X509VerifyFlags::CRL_CHECK)
                .map_err(|e| ssl_err("cannot enable CRL checks", e))?;
        }
        if verify_peer {
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(TlsConfig {
            mode,
            credentials: Credentials::X509(dir.to_path_buf()),
            acceptor: finish(b)?,
        })
    }

    /// PSK: psktool's `username:hexkey` lines.
    pub fn psk(mode: TlsMode, file: &Path) -> Result<TlsConfig, String> {
        let keys = read_psk_file(file)?;
        let first = keys
            .first()
            .map(|(u, _)| u.clone())
            .ok_or_else(|| format!("{}: no `username:hexkey` line", file.display()))?;
        let map: HashMap<Vec<u8>, Vec<u8>> =
            keys.into_iter().map(|(u, k)| (u.into_bytes(), k)).collect();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(|e| ssl_err("cannot set up TLS", e))?;
        // TLS 1.2 PSK suites (GnuTLS clients offer these); TLS 1.3 uses
        // the same callback with its own suites.
        b.set_cipher_list("ECDHE-PSK:DHE-PSK:PSK:!eNULL")
            .map_err(|e| ssl_err("cannot set PSK ciphers", e))?;
        b.set_psk_server_callback(move |_ssl, identity, out| {
            let Some(k) = identity.and_then(|i| map.get(i)) else {
                tracing::warn!(
                    "TLS-PSK: unknown user {:?}",
                    identity.map(String::from_utf8_lossy)
                );
                return Ok(0);
            };
            if k.len() > out.len() {
                return Ok(0);
            }
            out[..k.len()].copy_from_slice(k);
            Ok(k.len())
        });
        Ok(TlsConfig {
            mode,
            credentials: Credentials::Psk(file.to_path_buf(), first),
            acceptor: finish(b)?,
        })
    }
}

fn finish(mut b: openssl::ssl::SslAcceptorBuilder) -> Result<SslAcceptor, String> {
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| ssl_err("cannot set the TLS version", e))?;
    b.set_options(
        SslOptions::NO_RENEGOTIATION
            | SslOptions::IGNORE_UNEXPECTED_EOF
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    // Whole records per read syscall.
    b.set_read_ahead(true);
    Ok(b.build())
}

/// Parse psktool's file: `username:hexkey` per line.
pub fn read_psk_file(file: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the PSK file {}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected `username:hexkey` (as psktool writes)",
                file.display(),
                i + 1
            )
        };
        let (u, hex) = line.split_once(':').ok_or_else(bad)?;
        if u.is_empty() || hex.is_empty() || hex.len() % 2 != 0 {
            return Err(bad());
        }
        let key = (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        out.push((u.to_string(), key));
    }
    Ok(out)
}

/// A TLS session on a socket, shared by a connection's workers.
///
/// Writes are encrypted under the session lock into a buffer (the BIO
/// below never blocks) and sent with one `send` outside it, so one
/// reply is one system call however many records it spans, and a worker
/// sending a long reply does not keep another from decrypting the next
/// requests. Reads decrypt every whole record already received.
pub struct TlsSession {
    ssl: parking_lot::Mutex<SslStream<TlsIo>>,
    /// Held while encrypted bytes go to the socket, so they leave in the
    /// order they were encrypted (taken before `ssl`, never after): a
    /// reused buffer for them, and one for joining a small header to its
    /// data so they share a record.
    send: parking_lot::Mutex<SendBufs>,
    sock: Arc<Socket>,
}

#[derive(Default)]
struct SendBufs {
    wire: Vec<u8>,
    join: Vec<u8>,
}

/// The socket below OpenSSL. During the handshake it is blocking and
/// written directly; afterwards what OpenSSL writes is kept in `out`
/// until the session sends it.
pub struct TlsIo {
    sock: Arc<Socket>,
    out: Vec<u8>,
    buffered: bool,
}

impl io::Read for TlsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let dst = as_uninit(buf);
        self.sock.recv(dst, false)
    }
}

/// `&mut [u8]` as `&mut [MaybeUninit<u8>]` (only initialized bytes are
/// ever written into it).
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: same layout; the callee only writes initialized bytes.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len()) }
}

impl io::Write for TlsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffered {
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        } else {
            send(&self.sock, buf)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket {}", self.sock.fd())
    }
}

/// One `send` (no SIGPIPE).
fn send(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: send reads at most buf.len() bytes from buf.
        let n = unsafe {
            libc::send(
                sock.fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What OpenSSL waits for.
enum Want {
    Read,
    Write,
}

fn wait(fd: i32, want: Want) -> io::Result<()> {
    let events = match want {
        Want::Read => libc::POLLIN,
        Want::Write => libc::POLLOUT,
    };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, -1) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Records carry at most this much data.
const RECORD: usize = 16 * 1024;

impl TlsSession {
    /// The TLS handshake on a blocking socket (a timeout or shutdown ends
    /// it by shutting the socket down).
    pub fn accept(sock: Arc<Socket>, cfg: &TlsConfig) -> io::Result<TlsSession> {
        let io = TlsIo {
            sock: sock.clone(),
            out: Vec::new(),
            buffered: false,
        };
        let mut ssl = cfg.acceptor.accept(io).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("TLS handshake: {e}"))
        })?;
        tracing::debug!(
            version = ssl.ssl().version_str(),
            cipher = ssl.ssl().current_cipher().map(|c| c.name()),
            "TLS session"
        );
        sock.set_nonblocking(true)?;
        ssl.get_mut().buffered = true;
        Ok(TlsSession {
            ssl: parking_lot::Mutex::new(ssl),
            send: parking_lot::Mutex::new(SendBufs::default()),
            sock,
        })
    }

    pub fn socket(&self) -> &Arc<Socket> {
        &self.sock
    }

    /// Decrypted bytes into `dst`: every whole record already received
    /// that fits, waiting only for the first; 0 at end of session.
    pub fn read(&self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let mut got = 0;
        loop {
            let (want, flush) = {
                let mut s = self.ssl.lock();
                let r = loop {
                    match s.ssl_read_uninit(&mut dst[got..]) {
                        Ok(n) => {
                            got += n;
                            if got == dst.len() {
                                break Ok(None);
                            }
                        }
                        Err(e) => match e.code() {
                            ErrorCode::WANT_READ if got > 0 => break Ok(None),
                            ErrorCode::WANT_READ => break Ok(Some(Want::Read)),
                            ErrorCode::WANT_WRITE => break Ok(Some(Want::Write)),
                            ErrorCode::ZERO_RETURN => break Ok(None),
                            ErrorCode::SYSCALL if e.io_error().is_none() => break Ok(None),
                            _ if got > 0 => break Ok(None),
                            _ => break Err(tls_io(e)),
                        },
                    }
                };
                (r?, !s.get_ref().out.is_empty())
            };
            if flush {
                // The read made OpenSSL answer (a key update, an alert).
                self.flush()?;
            }
            match want {
                None => return Ok(got),
                Some(w) => wait(self.sock.fd(), w)?,
            }
        }
    }

    /// Send what OpenSSL has written, in order.
    fn flush(&self) -> io::Result<()> {
        let mut bufs = self.send.lock();
        self.encrypt(&mut bufs.wire, &[])?;
        self.send_wire(&mut bufs.wire)
    }

    /// Encrypt `parts` in order and take every byte OpenSSL has written
    /// so far into `wire` (empty; the caller holds the send lock).
    fn encrypt(&self, wire: &mut Vec<u8>, parts: &[&[u8]]) -> io::Result<()> {
        let mut s = self.ssl.lock();
        for mut data in parts.iter().copied() {
            while !data.is_empty() {
                match s.ssl_write(data) {
                    Ok(n) => data = &data[n..],
                    // The BIO takes everything: only a renegotiation
                    // could want more, and it is disabled.
                    Err(e) => return Err(tls_io(e)),
                }
            }
        }
        std::mem::swap(wire, &mut s.get_mut().out);
        Ok(())
    }

    /// Send all of `wire` on the non-blocking socket, then empty it
    /// (keeping its capacity).
    fn send_wire(&self, wire: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        let r = loop {
            if at == wire.len() {
                break Ok(());
            }
            match send(&self.sock, &wire[at..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait(self.sock.fd(), Want::Write) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        wire.clear();
        r
    }

    /// `a` then `b`, sent with one system call; a small pair shares one
    /// record.
    pub fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let mut bufs = self.send.lock();
        let SendBufs { wire, join } = &mut *bufs;
        if !a.is_empty() && !b.is_empty() && a.len() + b.len() <= RECORD {
            join.clear();
            join.extend_from_slice(a);
            join.extend_from_slice(b);
            self.encrypt(wire, &[join])?;
        } else {
            self.encrypt(wire, &[a, b])?;
        }
        self.send_wire(wire)
    }
}

fn tls_io(e: openssl::ssl::Error) -> io::Error {
    match e.into_io_error() {
        Ok(io) => io,
        Err(e) => io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")),
    }
}
