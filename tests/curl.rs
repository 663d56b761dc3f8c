//! nbdkit-curl-plugin's parameters on the http plugin, against in-test
//! servers on 127.0.0.1: `file:` URLs, `protocols=`, `followlocation=`,
//! `cookiefile=` / `cookiejar=`, `proxy=` with proxy credentials, and
//! `tcp-keepalive=`; bytes compared with nbdkit's where curl behaves the
//! same. (cainfo=/capath= are in `remote`, beside the HTTPS server.)

use crate::common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::remote::httpd;

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn server(data: &[u8], cfg: httpd::Config) -> httpd::HttpServer {
    let mut cfg = cfg;
    cfg.files
        .insert("/disk.img".into(), Arc::new(data.to_vec()));
    httpd::HttpServer::start(cfg)
}

fn refused(args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["--run", "true"]);
    let o = run(bin(), &a);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn curl_file_urls_and_protocols_like_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let data = sample(300_000);
    let f = d.path().join("disk image.raw");
    std::fs::write(&f, &data).unwrap();
    let url = format!("file://{}", f.display().to_string().replace(' ', "%20"));
    let ours = nbdscript_bytes(&["curl", &url]).expect("file: URL");
    assert!(ours == data, "file: URL bytes differ from the file");
    let theirs = nbdkit_bytes(&["curl", &url]).expect("nbdkit file: URL");
    assert!(ours == theirs, "file: URL bytes differ from nbdkit's");
    // protocols= allows file: ...
    let ours = nbdscript_bytes(&["curl", &url, "protocols=file,http"]).expect("protocols=file");
    assert!(ours == data);
    // ... or refuses it, naming why.
    let e = refused(&["curl", &url, "protocols=http,https"]);
    assert!(
        e.contains("protocol file is not allowed by protocols=http,https"),
        "{e}"
    );
    let e = refused(&["curl", &url, "protocols=http,nosuch"]);
    assert!(
        e.contains("protocols: protocol name not found: nosuch"),
        "{e}"
    );
    let srv = server(&data, Default::default());
    let e = refused(&["curl", &srv.url("/disk.img"), "protocols=https"]);
    assert!(e.contains("protocol http is not allowed"), "{e}");
}

#[test]
fn curl_followlocation_false_refuses_a_redirect() {
    let data = sample(100_000);
    let srv = server(
        &data,
        httpd::Config {
            redirects: HashMap::from([("/r".to_string(), "/disk.img".to_string())]),
            ..Default::default()
        },
    );
    let r = srv.url("/r");
    assert!(nbdscript_bytes(&["curl", &r]).expect("followed") == data);
    assert!(nbdscript_bytes(&["curl", &r, "followlocation=true"]).expect("followed") == data);
    let e = refused(&["curl", &r, "followlocation=false"]);
    assert!(
        e.contains("the server redirects (302) to ")
            && e.contains("/disk.img, and followlocation=false"),
        "{e}"
    );
    // Without a redirect, followlocation=false changes nothing.
    let u = srv.url("/disk.img");
    assert!(nbdscript_bytes(&["curl", &u, "followlocation=false"]).expect("direct") == data);
}

#[test]
fn curl_cookiefile_sends_cookies_like_nbdkit() {
    let data = sample(100_000);
    let srv = server(
        &data,
        httpd::Config {
            cookie: Some("sess=abc123".into()),
            ..Default::default()
        },
    );
    let u = srv.url("/disk.img");
    let e = refused(&["curl", &u]);
    assert!(e.contains("403"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let cf = d.path().join("cookies.txt");
    std::fs::write(
        &cf,
        "# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsess\tabc123\n\
         other.example\tFALSE\t/\tFALSE\t0\tnot\tsent\n",
    )
    .unwrap();
    let arg = format!("cookiefile={}", cf.display());
    let ours = nbdscript_bytes(&["curl", &u, &arg]).expect("cookiefile=");
    assert!(ours == data);
    let theirs = nbdkit_bytes(&["-r", "curl", &u, &arg]).expect("nbdkit cookiefile=");
    assert!(ours == theirs, "bytes differ from nbdkit's");
}

#[test]
fn curl_cookiejar_keeps_a_cookie_set_on_a_redirect() {
    let data = sample(100_000);
    let srv = server(
        &data,
        httpd::Config {
            redirects: HashMap::from([("/login".to_string(), "/disk.img".to_string())]),
            set_cookie: Some("token=xyz; Path=/; HttpOnly".into()),
            cookie: Some("token=xyz".into()),
            ..Default::default()
        },
    );
    let u = srv.url("/login");
    // Without cookie processing the redirect's cookie is lost: 403.
    assert!(refused(&["curl", &u]).contains("403"));
    let ours = nbdscript_bytes(&["curl", &u, "cookiefile="]).expect("cookiefile= empty");
    assert!(ours == data);
    let d = tempfile::tempdir().unwrap();
    let jar = d.path().join("jar.txt");
    let arg = format!("cookiejar={}", jar.display());
    assert!(nbdscript_bytes(&["curl", &u, &arg]).expect("cookiejar=") == data);
    let text = std::fs::read_to_string(&jar).expect("the jar was written");
    assert!(
        text.lines()
            .any(|l| l.starts_with("127.0.0.1\t") && l.ends_with("\ttoken\txyz")),
        "{text}"
    );
    let theirs = nbdkit_bytes(&["-r", "curl", &u, "cookiefile="]).expect("nbdkit cookiefile=");
    assert!(theirs == data);
}

/// A CONNECT proxy on 127.0.0.1: records each request head, then relays.
fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().unwrap().push(head.clone());
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let Ok(up) = TcpStream::connect(&target) else {
                    return;
                };
                let mut c2 = c.try_clone().unwrap();
                c2.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let mut up2 = up.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut r, &mut up2);
                });
                let _ = std::io::copy(&mut &up, &mut c2);
            });
        }
    });
    (port, seen)
}

#[test]
fn curl_proxy_with_credentials_goes_through_the_proxy() {
    let data = sample(150_000);
    let srv = server(&data, Default::default());
    let (pport, seen) = connect_proxy();
    let d = tempfile::tempdir().unwrap();
    let pwf = d.path().join("pw");
    std::fs::write(&pwf, "s3cret:x\n").unwrap();
    let ours = nbdscript_bytes(&[
        "curl",
        &srv.url("/disk.img"),
        &format!("proxy=http://127.0.0.1:{pport}"),
        "proxy-user=alice",
        &format!("proxy-password=+{}", pwf.display()),
    ])
    .expect("through the proxy");
    assert!(ours == data);
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the proxy saw no request");
    for h in seen.iter() {
        assert!(
            h.starts_with(&format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n", srv.port)),
            "{h}"
        );
        // alice:s3cret:x in base64.
        assert!(
            h.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0Ong="),
            "{h}"
        );
    }
    // A proxy that is not there: a clear start-up error.
    let e = refused(&["curl", &srv.url("/disk.img"), "proxy=http://127.0.0.1:1"]);
    assert!(e.contains("http: url="), "{e}");
    let e = refused(&["curl", &srv.url("/disk.img"), "proxy-user=alice"]);
    assert!(
        e.contains("proxy-user= and proxy-password= need proxy="),
        "{e}"
    );
}

#[test]
fn curl_tcp_keepalive_sets_keepalive_on_the_connections() {
    let data = sample(100_000);
    let srv = server(&data, Default::default());
    let u = srv.url("/disk.img");
    // ss shows a keepalive timer on the pooled connection to the server.
    let probe = |extra: &[&str]| {
        let mut args = vec!["-U", "-", "curl", u.as_str()];
        args.extend(extra);
        let cmd = format!(
            "nbdsh -u \"$uri\" -c 'h.pread(512, 0)' && ss -tnoH state established '( dport = :{} )'",
            srv.port
        );
        args.extend(["--run", cmd.as_str()]);
        let o = run(bin(), &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let on = probe(&["tcp-keepalive=true", "tcp-nodelay=false"]);
    assert!(on.contains("timer:(keepalive"), "{on}");
    let off = probe(&[]);
    assert!(!off.trim().is_empty(), "no connection to the server seen");
    assert!(!off.contains("keepalive"), "{off}");
    let e = refused(&["curl", &u, "tcp-keepalive=maybe"]);
    assert!(e.contains("tcp-keepalive=maybe"), "{e}");
}
