//! curl's connection parameters as nbdkit-curl-plugin has them:
//! `protocols=` (which URL schemes, also after a redirect), `cainfo=` and
//! `capath=` (the CA certificates that verify a server), `proxy=` with
//! `proxy-user=` / `proxy-password=`, and `file:` URLs served from the
//! local file system.

use crate::params::ConfigError;

/// The protocol names nbdkit-curl-plugin knows for `protocols=`.
const KNOWN: &[&str] = &[
    "dict", "file", "ftp", "ftps", "gopher", "gophers", "http", "https", "imap", "imaps", "ldap",
    "ldaps", "mqtt", "pop3", "pop3s", "rtmp", "rtmpe", "rtmps", "rtmpt", "rtmpte", "rtmpts",
    "rtsp", "scp", "sftp", "smb", "smbs", "smtp", "smtps", "telnet", "tftp",
];

/// `protocols=PROTO,PROTO,...`: the schemes allowed (`None`: any).
pub fn parse_protocols(v: Option<&str>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let mut out = Vec::new();
    for p in v.split(',').filter(|p| !p.is_empty()) {
        let p = p.to_ascii_lowercase();
        if !KNOWN.contains(&p.as_str()) {
            return Err(ConfigError::new(format!(
                "http: protocols: protocol name not found: {p} (known: {})",
                KNOWN.join(", ")
            )));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            "http: protocols: empty list of protocols is not allowed",
        ));
    }
    Ok(Some(out))
}

/// The scheme of a URL, lower case (`http`, `file`, ...).
pub fn scheme(url: &str) -> String {
    url.split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Refuse a URL whose scheme `protocols=` leaves out.
pub fn check_protocol(allowed: &Option<Vec<String>>, url: &str) -> Result<(), String> {
    match allowed {
        Some(a) if !a.contains(&scheme(url)) => Err(format!(
            "{url}: protocol {} is not allowed by protocols={}",
            scheme(url),
            a.join(",")
        )),
        _ => Ok(()),
    }
}

/// The local path of a `file:` URL (`file:///p`, `file://localhost/p`,
/// `file:/p`), percent-decoded.
pub fn file_url_path(url: &str) -> Result<String, String> {
    let rest = url
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("file:"))
        .map(|_| &url[5..])
        .ok_or_else(|| format!("{url}: not a file: URL"))?;
    let path = match rest.strip_prefix("//") {
        Some(r) => {
            let (host, path) = r.split_at(r.find('/').unwrap_or(r.len()));
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(format!(
                    "{url}: a file: URL names a local file (file:///PATH), not host {host:?}"
                ));
            }
            path
        }
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(format!("{url}: a file: URL needs an absolute path"));
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    percent_decode(path).ok_or_else(|| format!("{url}: bad %-escape in the path"))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every certificate in a PEM file (DER each).
fn pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    certs
        .iter()
        .map(|c| c.to_der().map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// `cainfo=FILE` and `capath=DIR`: the certificates that verify a server,
/// instead of the system's (`cainfo=` empty: none at all, as curl).
/// `None` when neither is given.
pub fn root_certs(
    cainfo: Option<&str>,
    capath: Option<&str>,
) -> Result<Option<ureq::tls::RootCerts>, ConfigError> {
    if cainfo.is_none() && capath.is_none() {
        return Ok(None);
    }
    let mut ders = Vec::new();
    if let Some(f) = cainfo.filter(|f| !f.is_empty()) {
        let c = pem_certs(std::path::Path::new(f))
            .map_err(|e| ConfigError::new(format!("http: cainfo={f}: {e}")))?;
        if c.is_empty() {
            return Err(ConfigError::new(format!(
                "http: cainfo={f}: no PEM certificate in the file"
            )));
        }
        ders.extend(c);
    }
    if let Some(d) = capath {
        let rd =
            std::fs::read_dir(d).map_err(|e| ConfigError::new(format!("http: capath={d}: {e}")))?;
        // Every file holding certificates (hashed links, *.pem, *.crt);
        // keys and other files are passed over.
        for e in rd.flatten() {
            if let Ok(c) = pem_certs(&e.path()) {
                ders.extend(c);
            }
        }
    }
    let certs = ders
        .iter()
        .map(|d| ureq::tls::Certificate::from_der(d).to_owned())
        .collect::<Vec<_>>();
    Ok(Some(ureq::tls::RootCerts::Specific(std::sync::Arc::new(
        certs,
    ))))
}

/// Percent-encode what may not appear raw in a URL's user info.
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `proxy=URL` with `proxy-user=` / `proxy-password=` (the password as
/// `password=` takes it: a value, `-`, `+FILE`, `-FD`). Requests go
/// through it with HTTP CONNECT.
pub fn proxy(
    url: Option<&str>,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<Option<ureq::Proxy>, ConfigError> {
    let Some(url) = url else {
        if user.is_some() || password.is_some() {
            return Err(ConfigError::new(
                "http: proxy-user= and proxy-password= need proxy= as well",
            ));
        }
        return Ok(None);
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_string(), r),
        None => ("http".to_string(), url),
    };
    let mut full = format!("{scheme}://");
    if let Some(u) = user {
        let pw = match password {
            Some(v) => super::auth::read_password(v)
                .map_err(|e| ConfigError::new(format!("http: proxy-password=: {e}")))?,
            None => String::new(),
        };
        full.push_str(&format!("{}:{}@", userinfo(u), userinfo(&pw)));
    } else if password.is_some() {
        return Err(ConfigError::new(
            "http: proxy-password= needs proxy-user= as well",
        ));
    }
    full.push_str(rest);
    ureq::Proxy::new(&full)
        .map(Some)
        .map_err(|e| ConfigError::new(format!("http: proxy={url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_schemes() {
        assert_eq!(
            parse_protocols(Some("http,HTTPS")).unwrap(),
            Some(vec!["http".into(), "https".into()])
        );
        assert!(parse_protocols(Some("gopherz")).is_err());
        assert!(parse_protocols(Some("")).is_err());
        let a = parse_protocols(Some("http")).unwrap();
        assert!(check_protocol(&a, "http://x/").is_ok());
        assert!(check_protocol(&a, "file:///x").is_err());
        assert!(check_protocol(&None, "file:///x").is_ok());
    }

    #[test]
    fn file_urls() {
        assert_eq!(file_url_path("file:///tmp/a%20b").unwrap(), "/tmp/a b");
        assert_eq!(file_url_path("file://localhost/x").unwrap(), "/x");
        assert_eq!(file_url_path("file:/x").unwrap(), "/x");
        assert_eq!(file_url_path("FILE:/x").unwrap(), "/x");
        // Short or non-ASCII input is an error, not a panic.
        assert!(file_url_path("fil").is_err());
        assert!(file_url_path("fé:/x").is_err());
        assert!(file_url_path("file://example.com/x").is_err());
        assert!(file_url_path("file:x").is_err());
    }
}
