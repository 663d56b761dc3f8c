//! The library's `Server` builder used as a Rust user would, in this
//! process: a built-in plugin by name, `start()` (a test server in one
//! line) and its stop, `serve()` with a shutdown future, and TLS (PSK and
//! X.509) — each checked with real clients (nbdinfo, nbdsh).

use crate::common::*;
use crate::tls::{make_psk, make_x509};
use nbdscript::Server;
use std::time::{Duration, Instant};

/// `nbdsh` on `uri` (TLS URIs name local files: allowed) running `script`.
fn nbdsh(uri: &str, script: &str) -> String {
    let prog = format!("h.set_uri_allow_local_file(True)\nh.connect_uri({uri:?})\n{script}");
    run_ok("nbdsh", &["-c", &prog])
}

#[test]
fn builtin_plugin_started_in_process_serves_and_stops() {
    let s = Server::builtin("memory", &[("size", "1M")])
        .unwrap()
        .start()
        .unwrap();
    let uri = s.uri().to_string();
    assert!(uri.starts_with("nbd+unix:///?socket="), "{uri}");
    assert_eq!(run_ok("nbdinfo", &["--size", &uri]).trim(), "1048576");
    let out = nbdsh(
        &uri,
        "h.pwrite(b'library' * 1000, 4096)\nprint(bytes(h.pread(7, 4096 + 6993)), bytes(h.pread(4, 0)))",
    );
    assert_eq!(out.trim(), "b'library' b'\\x00\\x00\\x00\\x00'");
    assert_eq!(s.stop().unwrap(), 0);
    // Stopped: the socket is gone.
    let o = run("nbdinfo", &["--size", &uri]);
    assert!(!o.status.success(), "still served after stop");
}

#[test]
fn dropping_the_handle_stops_the_server() {
    let uri = {
        let s = Server::builtin("pattern", &[("size", "64k")])
            .unwrap()
            .readonly(true)
            .start()
            .unwrap();
        let out = nbdsh(s.uri(), "print(h.is_read_only(), h.pread(8, 8).hex())");
        assert_eq!(out.trim(), "True 0000000000000008");
        s.uri().to_string()
    };
    assert!(!run("nbdinfo", &["--size", &uri]).status.success());
}

#[test]
fn builtin_errors_name_what_was_wrong() {
    let e = Server::builtin("memory", &[("colour", "red")])
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("memory: unknown parameter colour=red"),
        "{e}"
    );
    let e = Server::builtin("no-such-plugin", &[]).err().unwrap();
    assert!(
        e.to_string().contains("unknown plugin \"no-such-plugin\""),
        "{e}"
    );
    // A listener that cannot be bound fails start(), it does not hang.
    let e = Server::builtin("null", &[])
        .unwrap()
        .unix_socket("/nonexistent-dir/nbd.sock")
        .start()
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("cannot listen on /nonexistent-dir/nbd.sock"),
        "{e}"
    );
}

#[test]
fn serve_runs_until_the_shutdown_future() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Captive mode on the caller's runtime: the command's status.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("size");
    let cmd = format!("nbdinfo --size \"$uri\" > {}", out.display());
    let status = rt
        .block_on(
            Server::builtin("memory", &[("size", "3M")])
                .unwrap()
                .run_command(&cmd)
                .serve(std::future::pending()),
        )
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "3145728");
    // The shutdown future completing stops the server (and its captive
    // command, killed: status 1) long before the command would end.
    let t = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let status = rt
        .block_on(async {
            let server = Server::builtin("null", &[])
                .unwrap()
                .run_command("sleep 60")
                .serve(async {
                    let _ = stopped.await;
                });
            stop.send(()).unwrap();
            server.await
        })
        .unwrap();
    assert_eq!(status, 1);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn tls_psk_required_through_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let psk = make_psk(dir.path(), "alice");
    let s = Server::builtin("memory", &[("size", "1M")])
        .unwrap()
        .tls_psk(&psk)
        .tls_require(true)
        .start()
        .unwrap();
    let uri = s.uri().to_string();
    assert!(uri.starts_with("nbds+unix://alice@/?socket="), "{uri}");
    assert!(
        uri.contains(&format!("tls-psk-file={}", psk.display())),
        "{uri}"
    );
    let out = nbdsh(
        &uri,
        "print(h.get_tls_negotiated())\nh.pwrite(b'psk', 0)\nprint(bytes(h.pread(3, 0)))",
    );
    assert_eq!(out.trim(), "True\nb'psk'");
    // In plain text the export is refused (TLS is required).
    let socket = uri
        .split("socket=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let o = run(
        "nbdinfo",
        &["--size", &format!("nbd+unix:///?socket={socket}")],
    );
    assert!(!o.status.success(), "plain text client was served");
}

#[test]
fn tls_errors_name_the_builder_methods() {
    // Verifying clients needs the CA certificate: the error names the
    // builder method, not the command line's --tls-verify-peer.
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_x509(&pki);
    std::fs::remove_file(pki.join("ca-cert.pem")).unwrap();
    let e = Server::builtin("memory", &[("size", "1M")])
        .unwrap()
        .tls_certificates(&pki)
        .tls_verify_peer(true)
        .start()
        .err()
        .expect("served without the CA certificate");
    assert_eq!(
        e.message,
        format!(
            "Server::tls_verify_peer(true) needs {}/ca-cert.pem to check client certificates",
            pki.display()
        )
    );
}

#[test]
fn tls_certificates_offered_through_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_x509(&pki);
    let s = Server::builtin("memory", &[("size", "1M")])
        .unwrap()
        .tls_certificates(&pki)
        .start()
        .unwrap();
    let uri = s.uri().to_string();
    assert!(uri.starts_with("nbds+unix:///?socket="), "{uri}");
    assert!(uri.contains("tls-certificates="), "{uri}");
    let out = nbdsh(&uri, "print(h.get_tls_negotiated(), h.get_size())");
    assert_eq!(out.trim(), "True 1048576");
    // Offered, not required: a plain text client is served too.
    let socket = uri
        .split("socket=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let plain = format!("nbd+unix:///?socket={socket}");
    assert_eq!(run_ok("nbdinfo", &["--size", &plain]).trim(), "1048576");
}
