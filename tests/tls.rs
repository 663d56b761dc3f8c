//! TLS (STARTTLS with X.509 and PSK) against real clients: libnbd
//! (nbdsh, nbdcopy, nbdinfo with `tls-certificates=` / `tls-psk-file=`
//! URIs), qemu-img/qemu-io (`tls-creds-x509`, `tls-creds-psk`), and a raw
//! python client with its own TLS to pin TLS 1.2 and 1.3 and to see that
//! nothing leaks before STARTTLS. Each test makes its own CA, certificates
//! (openssl CLI) and PSK file (psktool).

use crate::common::*;
use crate::protocol::RAW;
use std::path::{Path, PathBuf};

/// A CA and a server certificate for `localhost` in `dir` (nbdkit's
/// names), plus the CA's key, so a client certificate can be signed.
pub(crate) fn make_x509(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let script = format!(
        r#"set -e
cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
  -keyout ca-key.pem -out ca-cert.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' > ext
openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
  -extfile ext -out server-cert.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client-key.pem -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > cext
openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
  -extfile cext -out client-cert.pem 2>/dev/null
"#
    );
    let o = sh(&script);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A psktool key file for `user` in `dir/keys.psk`.
pub(crate) fn make_psk(dir: &Path, user: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("keys.psk");
    run_ok("psktool", &["-u", user, "-p", f.to_str().unwrap()]);
    f
}

/// nbdsh connected to a TLS URI (which names local files: allowed).
fn nbdsh_tls(uri: &str, script: &str) -> String {
    let prog = format!("h.set_uri_allow_local_file(True)\nh.connect_uri({uri:?})\n{script}");
    let o = run("nbdsh", &["-c", &prog]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tls_x509_libnbd_reads_writes_and_uri() {
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("pki");
    make_x509(&certs);
    let cdir = format!("--tls-certificates={}", certs.display());
    let s = Server::start(&["--tls=require", &cdir, "memory", "1M"]);
    assert!(
        s.uri.starts_with("nbds+unix:///?socket=")
            && s.uri
                .ends_with(&format!("&tls-certificates={}", certs.display())),
        "{}",
        s.uri
    );
    let out = nbdsh_tls(
        &s.uri,
        "h.pwrite(b'\\x5a' * 4096 + b'tls!', 65536)\nprint(h.get_tls_negotiated(), h.get_size())",
    );
    assert_eq!(out.trim(), "True 1048576");
    let data = read_all(&s.uri);
    assert_eq!(data.len(), 1 << 20);
    assert!(data[65536..69632].iter().all(|&b| b == 0x5a));
    assert_eq!(&data[69632..69636], b"tls!");
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    assert!(info.contains("\"export-size\": 1048576"), "{info}");
}

#[test]
fn tls_x509_qemu_and_wrong_ca_refused() {
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("pki");
    make_x509(&certs);
    let other = t.path().join("other");
    make_x509(&other);
    let cdir = format!("--tls-certificates={}", certs.display());
    let s = Server::start(&[
        "--tls=require",
        &cdir,
        "data",
        "\"hello\" @0x10000 \"tls\" @^0x100000",
    ]);
    let img = |dir: &Path| {
        run(
            "qemu-io",
            &[
                "--object",
                &format!(
                    "tls-creds-x509,id=tls0,dir={},endpoint=client",
                    dir.display()
                ),
                "--image-opts",
                &format!(
                    "driver=nbd,path={},tls-creds=tls0,tls-hostname=localhost",
                    s.sock.display()
                ),
                "-r",
                "-c",
                "read -P 0x74 0x10000 1",
                "-c",
                "read -v 0 5",
            ],
        )
    };
    let ok = img(&certs);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("hello"), "{text}");
    // A CA that did not sign the server's certificate: refused.
    let bad = img(&other);
    assert!(!bad.status.success(), "wrong CA accepted");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The server is still there for the good client.
    assert!(img(&certs).status.success());
}

#[test]
fn tls_require_refuses_plaintext_and_leaks_nothing() {
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("pki");
    make_x509(&certs);
    let cdir = format!("--tls-certificates={}", certs.display());
    let s = Server::start(&[
        "--tls=require",
        &cdir,
        "-e",
        "secret-export",
        "memory",
        "1M",
    ]);
    let plain = format!("nbd+unix:///?socket={}", s.sock.display());
    let o = run("nbdinfo", &[&plain]);
    assert!(!o.status.success(), "plaintext client served");
    // Raw: every option but STARTTLS gets ERR_TLS_REQD, EXPORT_NAME ends
    // the session, and no byte of the export name is sent.
    let prog = format!(
        "{RAW}\n{}",
        r#"
ERR_TLS_REQD = ERR + 5
c = C()
for o in (3, 6, 7, 8, 9, 10, 11):
    c.opt(o, struct.pack(">IH", 0, 0) if o in (6, 7) else b"")
    r = c.reps()
    assert [t for _, t, _ in r] == [ERR_TLS_REQD], (o, r)
    assert b"secret" not in r[0][2], r
c.opt(1, b"secret-export"); assert c.closed(), "EXPORT_NAME in plain text closes"
c = C(); c.opt(5, b"x"); r = c.reps(); assert r[-1][1] == ERR + 3, r
print("done")
"#
    );
    let out = run("/usr/bin/python3", &["-c", &prog, s.sock.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --tls=on: plain text is still served.
    let s2 = Server::start(&["--tls=on", &cdir, "memory", "1M"]);
    let plain2 = format!("nbd+unix:///?socket={}", s2.sock.display());
    assert_eq!(read_all(&plain2).len(), 1 << 20);
}

/// A raw python client: STARTTLS, then python's own TLS pinned to one
/// version, verifying with `ca`; prints the version or the error.
fn raw_tls(s: &Server, ca: &Path, version: &str, cert: Option<&Path>) -> String {
    let client = cert.map_or(String::new(), |d| {
        format!(
            "ctx.load_cert_chain('{0}/client-cert.pem', '{0}/client-key.pem')",
            d.display()
        )
    });
    let body = format!(
        r#"
import ssl
c = C()
c.opt(5); assert c.reps() == [(5, 1, b"")]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations("{ca}")
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.{version}
{client}
try:
    c.s = ctx.wrap_socket(c.s, server_hostname="localhost")
    c.opt(5); r = c.reps(); assert r[-1][1] == ERR + 3, r  # STARTTLS twice
    r = c.go(); assert r[-1][1] == 1, r
    c.req(0, 0, 4096, 7); assert c.simple(4096)[1] == 0
    print("ok", c.s.version())
except (ssl.SSLError, OSError, EOFError, AssertionError) as e:
    print("refused", type(e).__name__, e)
"#,
        ca = ca.display()
    );
    let prog = format!("{RAW}\n{body}");
    let out = run("/usr/bin/python3", &["-c", &prog, s.sock.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tls_versions_and_peer_verification() {
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("pki");
    make_x509(&certs);
    let other = t.path().join("other");
    make_x509(&other);
    let cdir = format!("--tls-certificates={}", certs.display());
    let s = Server::start(&["--tls=require", &cdir, "memory", "1M"]);
    let ca = certs.join("ca-cert.pem");
    assert_eq!(raw_tls(&s, &ca, "TLSv1_3", None), "ok TLSv1.3");
    assert_eq!(raw_tls(&s, &ca, "TLSv1_2", None), "ok TLSv1.2");
    let r = raw_tls(&s, &other.join("ca-cert.pem"), "TLSv1_3", None);
    assert!(r.starts_with("refused SSLCertVerificationError"), "{r}");
    // --tls-verify-peer: a client certificate from the CA is needed.
    let v = Server::start(&["--tls=require", &cdir, "--tls-verify-peer", "memory", "1M"]);
    let r = raw_tls(&v, &ca, "TLSv1_3", None);
    assert!(r.starts_with("refused"), "no client certificate: {r}");
    let r = raw_tls(&v, &ca, "TLSv1_3", Some(&other));
    assert!(
        r.starts_with("refused"),
        "client certificate from another CA: {r}"
    );
    assert_eq!(raw_tls(&v, &ca, "TLSv1_3", Some(&certs)), "ok TLSv1.3");
    assert_eq!(raw_tls(&v, &ca, "TLSv1_2", Some(&certs)), "ok TLSv1.2");
}

#[test]
fn tls_psk_libnbd_qemu_and_wrong_key_refused() {
    let t = tempfile::tempdir().unwrap();
    let psk = make_psk(&t.path().join("good"), "alice");
    let wrong = make_psk(&t.path().join("bad"), "alice");
    let pf = format!("--tls-psk={}", psk.display());
    // Captive --run: $uri carries the user and the key file.
    let out = nbdscript()
        .env("PATH", sys_path())
        .args(["--tls=require", &pf, "-e", "a?b#c", "pattern", "1M"])
        .args(["--run", "echo \"$uri\"; nbdcopy \"$uri\" - | md5sum"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let uri = lines.next().unwrap();
    assert!(
        uri.starts_with("nbds+unix://alice@/a%3Fb%23c?socket=")
            && uri.ends_with(&format!("&tls-psk-file={}", psk.display())),
        "{uri}"
    );
    let md5 = sh("nbdkit -U - pattern 1M --run 'nbdcopy \"$uri\" - | md5sum'");
    assert_eq!(
        lines.next().unwrap(),
        String::from_utf8_lossy(&md5.stdout).trim()
    );

    let s = Server::start(&["--tls=require", &pf, "memory", "1M"]);
    let out = nbdsh_tls(
        &s.uri,
        "h.pwrite(b'psk' * 100, 4096)\nprint(h.get_tls_negotiated())",
    );
    assert_eq!(out.trim(), "True");
    let q = |dir: &Path| {
        run(
            "qemu-io",
            &[
                "--object",
                &format!(
                    "tls-creds-psk,id=tls0,dir={},username=alice,endpoint=client",
                    dir.display()
                ),
                "--image-opts",
                &format!("driver=nbd,path={},tls-creds=tls0", s.sock.display()),
                "-r",
                "-c",
                "read -v 4096 16",
            ],
        )
    };
    let ok = q(psk.parent().unwrap());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("pskpskpskpskpskp"), "{text}");
    let bad = q(wrong.parent().unwrap());
    assert!(!bad.status.success(), "wrong PSK accepted");
    // libnbd with the wrong key is refused too.
    let wrong_uri = s
        .uri
        .replace(psk.to_str().unwrap(), wrong.to_str().unwrap());
    let o = run("nbdinfo", &[&wrong_uri]);
    assert!(!o.status.success(), "wrong PSK accepted by the server");
}

#[test]
fn tls_flag_errors() {
    let o = nbdscript()
        .args(["--tls-certificates=/nonexistent", "memory", "1M"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("need --tls=on or --tls=require"));
    let o = nbdscript()
        .args([
            "--tls=on",
            "--tls-certificates=/nonexistent",
            "-U",
            "-",
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot load /nonexistent/server-cert.pem"),
        "{err}"
    );
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("bad.psk");
    std::fs::write(&f, "alice:xyz\n").unwrap();
    let o = nbdscript()
        .args([
            "--tls=on",
            &format!("--tls-psk={}", f.display()),
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.psk:1: expected `username:hexkey`"),
        "{err}"
    );
}

#[test]
fn tls_without_credentials_names_the_flags() {
    // No credentials given and none in nbdkit's default directories (HOME
    // is an empty directory; /etc/pki/nbdkit has none on a test machine).
    let home = tempfile::tempdir().unwrap();
    assert!(!std::path::Path::new("/etc/pki/nbdkit/server-cert.pem").exists());
    let o = nbdscript()
        .env("HOME", home.path())
        .args(["--tls=require", "-U", "-", "memory", "1M"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let h = home.path().display();
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "nbdscript: --tls needs --tls-certificates=DIR or --tls-psk=FILE (no server-cert.pem in \
             {h}/.pki/nbdkit, {h}/.config/pki/nbdkit, /etc/pki/nbdkit)"
        )
    );
    // --tls-verify-peer without the CA certificate to check clients with.
    let pki = home.path().join("pki");
    make_x509(&pki);
    std::fs::remove_file(pki.join("ca-cert.pem")).unwrap();
    let o = nbdscript()
        .args(["--tls=on", "--tls-verify-peer", "-U", "-", "memory", "1M"])
        .arg(format!("--tls-certificates={}", pki.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "nbdscript: --tls-verify-peer needs {}/ca-cert.pem to check client certificates",
            pki.display()
        )
    );
}

/// nbdcopy between `from` and `to` with `opts`.
fn nbdcopy(opts: &[&str], from: &str, to: &str) {
    let mut args = opts.to_vec();
    args.extend([from, to]);
    run_ok("nbdcopy", &args);
}

#[test]
fn tls_large_and_pipelined_transfers_match_plain() {
    // Replies span many records (1 MiB reads), many replies share a send
    // (4 KiB requests, 64 in flight), and writes of 1 MiB arrive in many
    // records: every byte read over TLS is compared with the source and
    // with the same export read in plain text (--tls=on serves both).
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("pki");
    make_x509(&certs);
    let src = t.path().join("src.raw");
    let mut data = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&src, &data).unwrap();
    let cdir = format!("--tls-certificates={}", certs.display());
    let s = Server::start(&["--tls=on", &cdir, "memory", "8M"]);
    let plain = format!("nbd+unix:///?socket={}", s.sock.display());
    let tls = format!(
        "nbds+unix:///?socket={}&tls-certificates={}",
        s.sock.display(),
        certs.display()
    );
    let src_s = src.to_str().unwrap();
    nbdcopy(&["--request-size=1048576", "--connections=1"], src_s, &tls);
    for (i, size) in ["4096", "65536", "1048576"].into_iter().enumerate() {
        let out = t.path().join(format!("out{i}.raw"));
        let rs = format!("--request-size={size}");
        nbdcopy(
            &[&rs, "--connections=1", "--requests=64"],
            &tls,
            out.to_str().unwrap(),
        );
        assert!(
            std::fs::read(&out).unwrap() == data,
            "TLS read of {size} requests differs"
        );
    }
    assert!(read_all(&plain) == data, "plain read differs");
    // Two TLS connections at once, 64 KiB writes then reads.
    nbdcopy(&["--request-size=65536", "--connections=2"], src_s, &tls);
    let out = t.path().join("out-2.raw");
    nbdcopy(&["--connections=2"], &tls, out.to_str().unwrap());
    assert!(std::fs::read(&out).unwrap() == data);
}
