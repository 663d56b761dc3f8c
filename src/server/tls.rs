//! TLS as nbdkit offers it, with OpenSSL: the credentials (an X.509
//! directory or a psktool PSK file) loaded once into a server context,
//! and a TLS session on an accepted socket that a connection's workers
//! share. After its handshake the socket is non-blocking: a worker holds
//! the session's lock only while OpenSSL runs, and waits in `poll`
//! without it, so one worker's read never blocks another's write.

use super::transport::{SharedSocket, Socket};
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
    pub fn x509(mode: TlsMode, dir: &Path, verify_peer: bool) -> Result<TlsConfig, String> {
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
                "--tls-verify-peer needs {} to check client certificates",
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
pub struct TlsSession {
    ssl: parking_lot::Mutex<SslStream<SharedSocket>>,
    sock: Arc<Socket>,
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

impl TlsSession {
    /// The TLS handshake on a blocking socket (a timeout or shutdown ends
    /// it by shutting the socket down).
    pub fn accept(sock: Arc<Socket>, cfg: &TlsConfig) -> io::Result<TlsSession> {
        let ssl = cfg
            .acceptor
            .accept(SharedSocket(sock.clone()))
            .map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("TLS handshake: {e}"))
            })?;
        tracing::debug!(
            version = ssl.ssl().version_str(),
            cipher = ssl.ssl().current_cipher().map(|c| c.name()),
            "TLS session"
        );
        sock.set_nonblocking(true)?;
        Ok(TlsSession {
            ssl: parking_lot::Mutex::new(ssl),
            sock,
        })
    }

    pub fn socket(&self) -> &Arc<Socket> {
        &self.sock
    }

    /// Decrypted bytes into `dst`; 0 at end of session.
    pub fn read(&self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            let want = {
                let mut s = self.ssl.lock();
                match s.ssl_read_uninit(dst) {
                    Ok(n) => return Ok(n),
                    Err(e) => match e.code() {
                        ErrorCode::WANT_READ => Want::Read,
                        ErrorCode::WANT_WRITE => Want::Write,
                        ErrorCode::ZERO_RETURN => return Ok(0),
                        ErrorCode::SYSCALL if e.io_error().is_none() => return Ok(0),
                        _ => return Err(tls_io(e)),
                    },
                }
            };
            wait(self.sock.fd(), want)?;
        }
    }

    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let want = {
                let mut s = self.ssl.lock();
                match s.ssl_write(buf) {
                    Ok(n) => {
                        buf = &buf[n..];
                        continue;
                    }
                    Err(e) => match e.code() {
                        ErrorCode::WANT_READ => Want::Read,
                        ErrorCode::WANT_WRITE => Want::Write,
                        _ => return Err(tls_io(e)),
                    },
                }
            };
            wait(self.sock.fd(), want)?;
        }
        Ok(())
    }

    /// `a` then `b`; small pairs go out as one record.
    pub fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        if !a.is_empty() && !b.is_empty() && a.len() + b.len() <= 16 * 1024 {
            let mut v = Vec::with_capacity(a.len() + b.len());
            v.extend_from_slice(a);
            v.extend_from_slice(b);
            return self.write_all(&v);
        }
        self.write_all(a)?;
        self.write_all(b)
    }
}

fn tls_io(e: openssl::ssl::Error) -> io::Error {
    match e.into_io_error() {
        Ok(io) => io,
        Err(e) => io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")),
    }
}
