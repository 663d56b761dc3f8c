//! The NBD URI a server announces (`--print-uri`, `$uri` for `--run`):
//! `nbd[s]://` for TCP, `nbd[s]+unix://` for a socket, with what a TLS
//! client needs (`tls-certificates=`, or the PSK user and `tls-psk-file=`).

use super::Credentials;
use std::path::Path;

/// Where the server listens, as far as the URI is concerned.
pub enum Address<'a> {
    /// A TCP port (the host is `localhost`).
    Tcp(u16),
    /// A Unix socket.
    Unix(&'a Path),
}

/// Percent-encode for a URI (RFC 3986 unreserved characters and `/` stay).
fn pct(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The URI clients use to reach export `export` at `addr`.
pub fn uri(addr: Address, export: &str, tls: Option<&Credentials>) -> String {
    let s = if tls.is_some() { "s" } else { "" };
    let user = match tls {
        Some(Credentials::Psk(_, u)) => format!("{}@", pct(u)),
        _ => String::new(),
    };
    let mut query = Vec::new();
    let base = match addr {
        Address::Tcp(port) => format!("nbd{s}://{user}localhost:{port}/{}", pct(export)),
        Address::Unix(p) => {
            query.push(format!("socket={}", pct(&p.to_string_lossy())));
            format!("nbd{s}+unix://{user}/{}", pct(export))
        }
    };
    match tls {
        Some(Credentials::X509(d)) => {
            query.push(format!("tls-certificates={}", pct(&d.to_string_lossy())))
        }
        Some(Credentials::Psk(f, _)) => {
            query.push(format!("tls-psk-file={}", pct(&f.to_string_lossy())))
        }
        None => {}
    }
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn uris() {
        let sock = PathBuf::from("/tmp/d ir/socket");
        let x509 = Credentials::X509(PathBuf::from("/etc/pki"));
        let psk = Credentials::Psk(PathBuf::from("/k.psk"), "al ice".into());
        let cases: &[(Address, &str, Option<&Credentials>, &str)] = &[
            (Address::Tcp(10809), "", None, "nbd://localhost:10809/"),
            (Address::Tcp(1), "a/b c", None, "nbd://localhost:1/a/b%20c"),
            (
                Address::Unix(&sock),
                "",
                None,
                "nbd+unix:///?socket=/tmp/d%20ir/socket",
            ),
            (
                Address::Unix(&sock),
                "e?x",
                Some(&x509),
                "nbds+unix:///e%3Fx?socket=/tmp/d%20ir/socket&tls-certificates=/etc/pki",
            ),
            (
                Address::Tcp(7),
                "",
                Some(&psk),
                "nbds://al%20ice@localhost:7/?tls-psk-file=/k.psk",
            ),
        ];
        for (addr, export, tls, want) in cases {
            let addr = match addr {
                Address::Tcp(p) => Address::Tcp(*p),
                Address::Unix(p) => Address::Unix(p),
            };
            assert_eq!(uri(addr, export, *tls), *want);
        }
    }
}
