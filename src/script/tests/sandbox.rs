//! What a script may reach: the sandbox's refusals and the host
//! functions it is given.

use super::*;

#[test]
fn sandbox() {
    let e = ScriptPlugin::load(
        &text("fn get_size(h) { eval(\"1\") }\nfn pread(h,c,o) { blob(c) }"),
        &Params::default(),
        &opts(),
    )
    .err()
    .unwrap();
    assert!(e.0.contains("eval"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rhai"), "fn size() { 777 }").unwrap();
    let main = dir.path().join("main.rhai");
    std::fs::write(
        &main,
        "fn get_size(h) { import \"lib\" as lib; lib::size() }\nfn pread(h,c,o) { blob(c) }",
    )
    .unwrap();
    let p = ScriptPlugin::load(
        &ScriptSource::File(main.clone()),
        &Params::default(),
        &opts(),
    )
    .unwrap();
    assert_eq!(open(&p).get_size().unwrap(), 777);
    for bad in ["../lib", "/etc/passwd"] {
        std::fs::write(
            &main,
            format!(
                "import \"{bad}\" as x;\nfn get_size(h) {{ 1 }}\nfn pread(h,c,o) {{ blob(c) }}"
            ),
        )
        .unwrap();
        let e = ScriptPlugin::load(
            &ScriptSource::File(main.clone()),
            &Params::default(),
            &opts(),
        )
        .err()
        .unwrap();
        assert!(e.0.contains("directory"), "{e}");
    }
    // A script from standard input may import nothing from the filesystem.
    let e = ScriptPlugin::load(
        &text("import \"lib\" as x;\nfn get_size(h) { 1 }\nfn pread(h,c,o) { blob(c) }"),
        &Params::default(),
        &opts(),
    )
    .err()
    .unwrap();
    assert!(e.0.contains("std/"), "{e}");
}

#[test]
fn host_functions() {
    let p = plugin(
        r#"
fn get_size(h) { parse_size("1M") }
fn pread(h, count, offset) {
    let b = pattern(count, blob(2, 0xAB));
    if offset == 1 { b.fill(0); }
    if offset == 2 { b.write_blob(1, blob(2, 0x11)); }
    if offset == 3 { b.write_blob(3, blob(2, 0x11)); }
    if offset == 4 { b = blob(count); if !b.is_zero() { throw "not zero" } }
    if offset == 5 { return data("1 2 3 4") }
    b
}
"#,
        &[],
    );
    let c = open(&p);
    assert_eq!(c.get_size().unwrap(), 1 << 20);
    assert_eq!(c.pread_owned(4, 0, 0).unwrap(), vec![0xAB; 4]);
    assert_eq!(c.pread_owned(4, 1, 0).unwrap(), vec![0; 4]);
    assert_eq!(
        c.pread_owned(4, 2, 0).unwrap(),
        vec![0xAB, 0x11, 0x11, 0xAB]
    );
    assert_eq!(c.pread_owned(4, 3, 0).unwrap_err().errno, Errno::Inval);
    assert_eq!(c.pread_owned(4, 4, 0).unwrap(), vec![0; 4]);
    assert_eq!(c.pread_owned(4, 5, 0).unwrap(), vec![1, 2, 3, 4]);
}
