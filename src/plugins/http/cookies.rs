//! Cookie processing for `cookiefile=` and `cookiejar=` (curl's
//! CURLOPT_COOKIEFILE / CURLOPT_COOKIEJAR as nbdkit-curl-plugin uses
//! them): cookies start from Netscape-format files, are sent to the
//! hosts and paths they match, and `Set-Cookie` answers (on a redirect
//! too) are kept; with `cookiejar=` they are written back to that file
//! whenever they change.

use crate::params::ConfigError;
use parking_lot::Mutex;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
struct Cookie {
    domain: String,
    /// Sent to subdomains of `domain` as well.
    subdomains: bool,
    path: String,
    secure: bool,
    /// Unix time it expires; 0 for a session cookie.
    expires: u64,
    name: String,
    value: String,
}

/// The cookies of the whole process.
pub struct Jar {
    cookies: Mutex<Vec<Cookie>>,
    save: Option<PathBuf>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(https, host, path)` of a URL.
fn parts(url: &str) -> (bool, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (auth, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = auth.rsplit('@').next().unwrap_or(auth);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    (
        scheme.eq_ignore_ascii_case("https"),
        host.to_ascii_lowercase(),
        path.to_string(),
    )
}

/// Parse a Netscape cookie file (curl's format).
fn parse_file(text: &str) -> Vec<Cookie> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.strip_prefix("#HttpOnly_").unwrap_or(line);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 {
            continue;
        }
        out.push(Cookie {
            domain: f[0].trim_start_matches('.').to_ascii_lowercase(),
            subdomains: f[1].eq_ignore_ascii_case("TRUE"),
            path: f[2].to_string(),
            secure: f[3].eq_ignore_ascii_case("TRUE"),
            expires: f[4].parse().unwrap_or(0),
            name: f[5].to_string(),
            value: f[6].to_string(),
        });
    }
    out
}

impl Jar {
    /// Cookie processing when `cookiefile=` (empty: start with none) or
    /// `cookiejar=` is given; both files are read if they exist.
    pub fn new(file: Option<&str>, jar: Option<&str>) -> Result<Option<Jar>, ConfigError> {
        if file.is_none() && jar.is_none() {
            return Ok(None);
        }
        let mut cookies = Vec::new();
        if let Some(f) = file.filter(|f| !f.is_empty()) {
            let text = std::fs::read_to_string(f)
                .map_err(|e| ConfigError::new(format!("http: cookiefile={f}: {e}")))?;
            cookies.extend(parse_file(&text));
        }
        if let Some(j) = jar {
            // The jar need not exist yet.
            if let Ok(text) = std::fs::read_to_string(j) {
                cookies.extend(parse_file(&text));
            }
        }
        Ok(Some(Jar {
            cookies: Mutex::new(cookies),
            save: jar.map(PathBuf::from),
        }))
    }

    /// The `Cookie` header for a request to `url`, if any cookie matches.
    pub fn header(&self, url: &str) -> Option<String> {
        let (https, host, path) = parts(url);
        let t = now();
        let c = self.cookies.lock();
        let v: Vec<String> = c
            .iter()
            .filter(|c| {
                (c.domain == host || (c.subdomains && host.ends_with(&format!(".{}", c.domain))))
                    && path.starts_with(&c.path)
                    && (https || !c.secure)
                    && (c.expires == 0 || c.expires > t)
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    }

    /// Keep the cookies of `Set-Cookie` headers from an answer for `url`.
    pub fn store<'a>(&self, url: &str, set_cookies: impl Iterator<Item = &'a str>) {
        let (_, host, _) = parts(url);
        let mut changed = false;
        let mut jar = self.cookies.lock();
        for sc in set_cookies {
            let mut attrs = sc.split(';');
            let Some((name, value)) = attrs.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let mut c = Cookie {
                domain: host.clone(),
                subdomains: false,
                path: "/".into(),
                secure: false,
                expires: 0,
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            };
            let mut delete = false;
            for a in attrs {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "domain" if !v.trim().is_empty() => {
                        c.domain = v.trim().trim_start_matches('.').to_ascii_lowercase();
                        c.subdomains = true;
                    }
                    "path" if v.trim().starts_with('/') => c.path = v.trim().to_string(),
                    "secure" => c.secure = true,
                    "max-age" => match v.trim().parse::<i64>() {
                        Ok(n) if n <= 0 => delete = true,
                        Ok(n) => c.expires = now() + n as u64,
                        Err(_) => {}
                    },
                    _ => {}
                }
            }
            jar.retain(|o| !(o.domain == c.domain && o.path == c.path && o.name == c.name));
            if !delete {
                jar.push(c);
            }
            changed = true;
        }
        if changed {
            if let Some(p) = &self.save {
                let mut text = String::from("# Netscape HTTP Cookie File\n");
                for c in jar.iter() {
                    let b = |x: bool| if x { "TRUE" } else { "FALSE" };
                    text.push_str(&format!(
                        "{}{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        if c.subdomains { "." } else { "" },
                        c.domain,
                        b(c.subdomains),
                        c.path,
                        b(c.secure),
                        c.expires,
                        c.name,
                        c.value
                    ));
                }
                if let Err(e) = std::fs::write(p, text) {
                    tracing::warn!("http: cookiejar={}: {e}", p.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_match_and_set_cookie() {
        let j = Jar {
            cookies: Mutex::new(parse_file(
                "# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\ta\tb\n\
                 .example.com\tTRUE\t/x\tTRUE\t0\ts\tt\n",
            )),
            save: None,
        };
        assert_eq!(j.header("http://127.0.0.1:80/disk").as_deref(), Some("a=b"));
        assert_eq!(j.header("http://www.example.com/x/y"), None);
        assert_eq!(
            j.header("https://www.example.com/x/y").as_deref(),
            Some("s=t")
        );
        j.store("http://127.0.0.1:8/", ["c=d; Path=/; HttpOnly"].into_iter());
        assert_eq!(j.header("http://127.0.0.1/").as_deref(), Some("a=b; c=d"));
        j.store("http://127.0.0.1:8/", ["a=x; Max-Age=0"].into_iter());
        assert_eq!(j.header("http://127.0.0.1/").as_deref(), Some("c=d"));
    }
}
