//! Script errors: errno mapping with file:line:col, syntax errors
//! keeping line numbers, and runaway scripts stopped.

use super::*;

#[test]
fn errors_map_to_errno_with_file_line_col() {
    let p = plugin(
        "#!/usr/bin/env nbdscript\n\
fn get_size(h) { 1024 }\n\
fn pread(h, count, offset) {\n\
    if offset == 0 { nbd_error(\"ENOSPC\", \"full\") }\n\
    if offset == 1 { let x = 1 / 0; }\n\
    if offset == 2 { throw \"oops\" }\n\
    if offset == 3 { return blob(count - 1) }\n\
    if offset == 4 { return 42 }\n\
    blob(count)\n\
}\n",
        &[],
    );
    let c = open(&p);
    let e = c.pread_owned(1, 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::NoSpc);
    assert!(e.message.contains("full"), "{e}");
    let e = c.pread_owned(1, 1, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Io);
    assert!(e.message.contains("t.rhai:5:"), "{e}");
    let e = c.pread_owned(1, 2, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Io);
    assert!(
        e.message.contains("t.rhai:6:") && e.message.contains("oops"),
        "{e}"
    );
    assert_eq!(c.pread_owned(4, 3, 0).unwrap_err().errno, Errno::Io);
    assert_eq!(c.pread_owned(4, 4, 0).unwrap_err().errno, Errno::Io);
    // The layer still works after errors.
    assert_eq!(c.pread_owned(4, 8, 0).unwrap(), vec![0; 4]);
}

#[test]
fn syntax_errors_keep_line_numbers() {
    let p = Params::default();
    let src =
        "#!/usr/bin/env nbdscript\nfn get_size(h) { 1 }\n\nfn pread(h, c, o) { blob(c) +* }\n";
    let e = ScriptPlugin::load(&text(src), &p, &opts()).err().unwrap();
    assert!(e.0.contains("t.rhai:4:"), "{e}");
    let e = ScriptPlugin::load(&text("fn get_size(h) { 1 }"), &p, &opts())
        .err()
        .unwrap();
    assert!(e.0.contains("pread"), "{e}");
    let e = ScriptPlugin::load(
        &text("fn get_size(h) { 1 }\nfn pread(h) { 1 }"),
        &p,
        &opts(),
    )
    .err()
    .unwrap();
    assert!(e.0.contains("fn pread(h, count, offset[, flags])"), "{e}");
}

#[test]
fn runaway_scripts_are_stopped() {
    let o = ScriptOptions {
        max_operations: 100_000,
        ..opts()
    };
    let src = r#"
fn get_size(h) { 1024 }
fn deep(n) { deep(n + 1) }
fn pread(h, count, offset) {
    if offset == 0 { loop { } }
    if offset == 1 { deep(0) }
    if offset == 2 { let s = "x"; loop { s += s; } }
    blob(count)
}
"#;
    let p = ScriptPlugin::load(&text(src), &Params::default(), &o).unwrap();
    let c = open(&p);
    for off in 0..3 {
        let e = c.pread_owned(1, off, 0).unwrap_err();
        assert_eq!(e.errno, Errno::Io, "{e}");
    }
    assert!(c
        .pread_owned(1, 0, 0)
        .unwrap_err()
        .message
        .contains("too many operations"));
    // The time limit stops it too.
    let o = ScriptOptions {
        max_operations: 0,
        timeout: Some(std::time::Duration::from_millis(50)),
        ..opts()
    };
    let p = ScriptPlugin::load(&text(src), &Params::default(), &o).unwrap();
    let e = open(&p).pread_owned(1, 0, 0).unwrap_err();
    assert!(e.message.contains("time limit"), "{e}");
}
