//! Mistakes in the log at the default level: broken contracts and
//! budgets as `file:line:col: callback: message`, bad answers at
//! negotiation, did-you-mean for misspelled callbacks, and colour only
//! on a terminal.

use super::*;

/// Broken contracts, size limits and budgets are logged at the default
/// level as `file:line:col: callback: message` (the callback's own
/// position when the fault is in what it returned); the client gets EIO
/// for a broken contract; a line repeated per request is rate-limited.
#[test]
fn contract_and_budget_errors_are_logged_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "c.rhai",
        r#"fn get_size(h) { 1048576 }
fn pread(h, count, offset) {
  if offset == 0 { return "not a blob" }
  if offset == 512 { return blob(10) }
  if offset == 1024 { return pattern(1 << 40, blob(1)) }
  if offset == 1536 { loop { } }
  blob(count)
}
"#,
    );
    let s = LiveServer::start_default_log(&["--max-operations", "100000", &p]);
    let out = s.nbdsh_errnos(&[
        "h.pread(512, 0)",
        "h.pread(512, 512)",
        "h.pread(512, 1024)",
        "h.pread(512, 1536)",
    ]);
    assert_eq!(out, ["EIO", "EIO", "EINVAL", "EIO"]);
    s.wait_log(&format!(
        "{p}:2:1: pread: returned string; expected a Blob of 512 bytes (the client gets EIO)"
    ));
    s.wait_log(&format!(
        "{p}:2:1: pread: returned 10 bytes for a read of 512 at offset 512; return exactly count bytes (the client gets EIO)"
    ));
    s.wait_log(&format!(
        "{p}:5:30: pread: pattern: 1099511627776 bytes is too large (the client gets EINVAL)"
    ));
    // A budget stops the call where no position is known: the callback's.
    s.wait_log(&format!(
        "{p}:2:1: pread: stopped: too many operations (--max-operations) (the client gets EIO)"
    ));

    // 200 identical failures: a few lines, counted in "(repeated N times)"
    // lines, the last one logged once the failures stop (no further
    // failure, no connection needed): every failure is accounted for.
    let out = s.nbdsh_errnos(&["many(200, 0)"]);
    assert_eq!(out, ["ok"]);
    let msg = format!(
        "{p}:2:1: pread: returned string; expected a Blob of 512 bytes (the client gets EIO)"
    );
    let (mut total, mut lines) = (0u64, Vec::new());
    while total < 200 {
        let l = s
            .log
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{total} of 200 failures logged ({e}): {lines:#?}"));
        if let Some(rest) = l.split_once(&msg).map(|(_, r)| r) {
            total += match rest.strip_prefix(" (repeated ") {
                Some(n) => n.split_whitespace().next().unwrap().parse::<u64>().unwrap(),
                None => {
                    assert_eq!(rest, "", "{l}");
                    1
                }
            };
        }
        lines.push(l);
    }
    assert_eq!(total, 200, "{lines:#?}");
    assert!(lines.len() <= 6, "not rate-limited: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("(repeated ")), "{lines:#?}");
    if let Ok(l) = s.log.recv_timeout(Duration::from_millis(1500)) {
        panic!("more than 200 failures logged: {l}");
    }
}

/// `get_size` returning "1Q" and `can_fua` returning "sometimes": clear
/// messages at the callback, and the client cannot connect.
#[test]
fn bad_answers_at_negotiation_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "q.rhai",
        "fn get_size(h) { \"1Q\" }\nfn pread(h, count, offset) { blob(count) }\n",
    );
    let s = LiveServer::start_default_log(&[&p]);
    let out = run("nbdinfo", &[&s.uri]);
    assert!(!out.status.success());
    s.wait_log(&format!(
        "{p}:1:1: get_size: returned \"1Q\", which is not a size: could not parse size \"1Q\": unknown suffix \"Q\" (use k, M, G, T, P or E) (the client gets EIO)"
    ));
    let p = script(
        dir.path(),
        "f.rhai",
        "fn get_size(h) { 512 }\nfn pread(h, count, offset) { blob(count) }\nfn pwrite(h, b, o) { }\n  fn can_fua(h) { \"sometimes\" }\n",
    );
    let s = LiveServer::start_default_log(&[&p]);
    let out = run("nbdinfo", &[&s.uri]);
    assert!(!out.status.success());
    s.wait_log(&format!(
        "{p}:4:3: can_fua: returned string \"sometimes\"; expected true, false, \"none\", \"emulate\" or \"native\" (the client gets EIO)"
    ));
}

/// A function named like a misspelled callback gets a warning at load.
#[test]
fn misspelled_callbacks_get_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "typo.rhai",
        "fn get_size(h) { 512 }\nfn pread(h, count, offset) { blob(count) }\nfn pwirte(h, buf, offset) { }\nfn pred(h, c, o) { }\nfn get_sise(h) { 1 }\n  fn can_wirte(h) { true }\nfn helper(x) { x }\n",
    );
    let s = LiveServer::start_default_log(&[&p]);
    for (line, bad, good) in [
        ("3:1", "pwirte", "pwrite"),
        ("4:1", "pred", "pread"),
        ("5:1", "get_sise", "get_size"),
        ("6:3", "can_wirte", "can_write"),
    ] {
        s.wait_log(&format!(
            "{p}:{line}: fn {bad} is not a callback, so it is never called; did you mean {good}?"
        ));
    }
    // The export is read-only, as the script says.
    assert_eq!(s.nbdsh_errnos(&["h.pwrite(b'x', 0)"]), ["EPERM"]);
}

/// Colour only on a terminal, and never with NO_COLOR set.
#[test]
fn no_colour_unless_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "n.rhai",
        "fn get_size(h) { 512 }\nfn pread(h, count, offset) { print(\"hi\"); blob(count) }\n",
    );
    let cmd = format!("{} {p} --run 'nbdcopy \"$uri\" - >/dev/null' 2>&1", bin());
    let tty = |no_color: &str| {
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("PATH", sys_path())
            .env("NO_COLOR", no_color)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = tty("");
    assert!(
        coloured.contains("hi") && coloured.contains('\u{1b}'),
        "{coloured:?}"
    );
    let plain = tty("1");
    assert!(
        plain.contains("hi") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}
