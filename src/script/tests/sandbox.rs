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

/// Read reply buffers the server recycles reach scripts again (no
/// allocation per read): each is charged to the script that gets it, so
/// reads the server sends and recycles never open room under
/// `--script-memory` for blobs the script keeps. `reads` is how the script
/// is driven; it returns what it kept before the budget stopped it.
fn kept_under_budget(reads: &dyn Fn(u64) -> crate::backend::Result<Vec<u8>>) -> usize {
    // 2000 reads of 4 KiB sent and recycled, as the server does.
    for _ in 0..2000 {
        crate::backend::recycle(reads(0).unwrap());
    }
    // Each read at 4096 keeps a 4 KiB Blob: 1 MiB stops it before 256
    // (the script also holds its state, and write-back copies it).
    for kept in 0..400 {
        match reads(4096) {
            Ok(v) => crate::backend::recycle(v),
            Err(e) => {
                assert_eq!(e.errno, Errno::NoMem, "{}", e.message);
                return kept;
            }
        }
    }
    panic!("400 Blobs of 4 KiB kept under a 1 MiB budget");
}

fn one_mib() -> ScriptOptions {
    ScriptOptions {
        max_memory: 1 << 20,
        ..opts()
    }
}

#[test]
fn recycled_read_buffers_count_in_a_plugins_budget() {
    let src = r#"
fn config(p) { #{ disk: disk("1M"), keep: [] } }
fn open(state, readonly) { state }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) {
    if offset == 4096 { h.keep.push(h.disk.pread(count, 0)); }
    h.disk.pread(count, offset)
}
"#;
    let p = ScriptPlugin::load(&text(src), &Params::default(), &one_mib()).unwrap();
    let c = open(&p);
    let kept = kept_under_budget(&|o| c.pread_owned(4096, o, 0));
    assert!(kept >= 64, "stopped after {kept} Blobs");
}

/// A filter over `below` keeping a Blob from `next.pread` on every read at
/// 4096: how many it kept before the 1 MiB budget stopped it.
fn kept_by_a_filter_over(below: std::sync::Arc<dyn Backend>) -> usize {
    let keeper = r#"
fn config(p) { #{ keep: [] } }
fn open(next, state, readonly) { state }
fn pread(next, h, count, offset, flags) {
    if offset == 4096 { h.keep.push(next.pread(count, 0, flags)); }
    next.pread(count, offset, flags)
}
"#;
    let f = ScriptFilter::load(&text(keeper), &Params::default(), &one_mib()).unwrap();
    let c = crate::backend::Filter::open(&f, below, false).unwrap();
    kept_under_budget(&|o| c.pread_owned(4096, o, 0))
}

#[test]
fn recycled_read_buffers_count_in_a_filters_budget() {
    let kept = kept_by_a_filter_over(memory(1 << 20));
    assert!(kept >= 64, "stopped after {kept} Blobs");
}

#[test]
fn recycled_read_buffers_count_through_a_filter_without_pread() {
    // A filter between them that leaves reads to the layer below.
    let g = filter("fn flush(next, h, flags) { next.flush(flags) }");
    let mid = crate::backend::Filter::open(&g, memory(1 << 20), false).unwrap();
    let kept = kept_by_a_filter_over(mid);
    assert!(kept >= 64, "stopped after {kept} Blobs");
}
