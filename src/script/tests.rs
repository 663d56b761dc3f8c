//! Unit tests of the script host: call the Backend methods directly.

use super::*;
use crate::backend::{Backend, Errno};

pub(super) fn opts() -> ScriptOptions {
    ScriptOptions {
        watch: false,
        ..ScriptOptions::default()
    }
}

pub(super) fn text(s: &str) -> ScriptSource {
    ScriptSource::Text {
        name: "t.rhai".into(),
        text: s.into(),
    }
}

pub(super) fn plugin(s: &str, params: &[(&str, &str)]) -> ScriptPlugin {
    let p = Params::new(
        params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    match ScriptPlugin::load(&text(s), &p, &opts()) {
        Ok(p) => p,
        Err(e) => panic!("load failed: {e}"),
    }
}

#[test]
fn ramdisk_roundtrip() {
    let p = plugin(
        r#"#!/usr/bin/env nbdscript
fn config(params) { #{ disk: disk(params.size ?? "1M") } }
fn open(state, readonly) { state }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset, flags) { h.disk.pwrite(buf, offset) }
"#,
        &[("size", "64k")],
    );
    let c = crate::backend::Plugin::open(&p, false, "").unwrap();
    assert_eq!(c.get_size().unwrap(), 65536);
    assert!(c.can_write().unwrap());
    assert!(!c.can_trim().unwrap());
    assert!(c.sparse_reads(), "no extents function: nothing to call");
    c.pwrite_owned(vec![7u8; 512], 1024, 0).unwrap();
    let b = c.pread_owned(1024, 512, 0).unwrap();
    assert_eq!(&b[..512], &[0u8; 512][..]);
    assert_eq!(&b[512..], &[7u8; 512][..]);
    // A second connection sees the same disk.
    let c2 = crate::backend::Plugin::open(&p, false, "").unwrap();
    assert_eq!(c2.pread_owned(1, 1024, 0).unwrap(), vec![7]);
    // Past the end: EINVAL / ENOSPC from disk().
    assert_eq!(c.pread_owned(2, 65535, 0).unwrap_err().errno, Errno::Inval);
    assert_eq!(
        c.pwrite_owned(vec![1; 2], 65535, 0).unwrap_err().errno,
        Errno::NoSpc
    );
}

fn open(p: &ScriptPlugin) -> std::sync::Arc<dyn Backend> {
    crate::backend::Plugin::open(p, false, "").unwrap()
}

#[test]
fn state_and_handle_persist() {
    let p = plugin(
        r#"
fn config(params) { #{ calls: 0, stats: #{ reads: 0 } } }
fn open(state, readonly) { #{ state: state, mine: 0 } }
fn get_size(h) { 4096 }
fn pread(h, count, offset) {
    h.state.calls += 1;
    h.state.stats.reads += 1;
    if h.state.stats.reads != h.state.calls { throw "nested write-back lost" }
    if !("calls" in h.state) || h.state.keys().len() != 2 { throw "map functions" }
    h.mine += 1;
    let b = blob(count);
    b[0] = h.state.calls;
    b[1] = h.mine;
    b
}
"#,
        &[],
    );
    let a = open(&p);
    let b = open(&p);
    assert_eq!(a.pread_owned(2, 0, 0).unwrap(), vec![1, 1]);
    assert_eq!(a.pread_owned(2, 0, 0).unwrap(), vec![2, 2]);
    // The state is shared by connections, the handle is not.
    assert_eq!(b.pread_owned(2, 0, 0).unwrap(), vec![3, 1]);
    assert_eq!(a.pread_owned(2, 0, 0).unwrap(), vec![4, 3]);
}

#[test]
fn default_state_is_params_and_handle_is_state() {
    let p = plugin(
        r#"
fn get_size(h) { h.size }
fn pread(h, count, offset, flags) { pattern(count, h.fill.to_blob()) }
"#,
        &[("size", "1M"), ("fill", "ab")],
    );
    let c = open(&p);
    assert_eq!(c.get_size().unwrap(), 1 << 20);
    assert_eq!(c.pread_owned(5, 0, 0).unwrap(), b"ababa".to_vec());
    assert!(!c.can_write().unwrap());
    assert!(!c.can_extents().unwrap());
}

#[test]
fn capabilities_follow_functions_and_can_overrides() {
    let p = plugin(
        r#"
fn get_size(h) { "8k" }
fn pread(h, count, offset) { blob(count) }
fn pwrite(h, buf, offset) { }
fn trim(h, count, offset) { }
fn zero(h, count, offset, flags) { if (flags & nbd::MAY_TRIM) != 0 { nbd_error("ENOTSUP", "no") } }
fn flush(h) { }
fn extents(h, count, offset) { [[offset, count, nbd::HOLE | nbd::ZERO]] }
fn can_trim(h) { false }
fn can_multi_conn(h) { true }
fn block_size(h) { [512, 4096, 65536] }
fn export_description(h) { "hello" }
fn can_cache(h) { "emulate" }
"#,
        &[],
    );
    let c = open(&p);
    assert_eq!(c.get_size().unwrap(), 8192);
    assert!(c.can_write().unwrap());
    assert!(!c.can_trim().unwrap());
    assert!(c.can_zero().unwrap());
    assert!(c.can_flush().unwrap());
    assert!(c.can_extents().unwrap());
    assert!(c.can_multi_conn().unwrap());
    assert_eq!(c.can_fua().unwrap(), crate::backend::FuaMode::Emulate);
    assert_eq!(c.can_cache().unwrap(), crate::backend::CacheMode::Emulate);
    assert_eq!(c.block_size().unwrap().unwrap().preferred, 4096);
    assert_eq!(c.export_description().unwrap().as_deref(), Some("hello"));
    assert!(c.is_blocking());
    assert!(!c.waits(), "a script only computes");
    assert!(c.prefers_owned_reads());
    assert!(!c.sparse_reads(), "a script's extents cost a call");
    assert_eq!(
        c.thread_model(),
        crate::backend::ThreadModel::SerializeAllRequests
    );
    let e = c.extents(100, 50, 0).unwrap();
    assert_eq!(e.as_slice().len(), 1);
    assert_eq!(
        (
            e.as_slice()[0].offset,
            e.as_slice()[0].length,
            e.as_slice()[0].typ
        ),
        (50, 100, 3)
    );
    c.zero(10, 0, 0).unwrap();
    assert_eq!(
        c.zero(10, 0, crate::backend::flags::MAY_TRIM)
            .unwrap_err()
            .errno,
        Errno::NotSup
    );
}

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

#[test]
fn disk_extents_trim_zero() {
    let p = plugin(
        r#"
fn config(p) { #{ d: disk(1048576) } }
fn get_size(h) { h.d.size() }
fn pread(h, count, offset) { h.d.pread(count, offset) }
fn pwrite(h, buf, offset) { h.d.pwrite(buf, offset) }
fn trim(h, count, offset) { h.d.trim(count, offset) }
fn zero(h, count, offset) { h.d.zero(count, offset) }
fn extents(h, count, offset) { h.d.extents(count, offset) }
fn flush(h) { h.d.flush() }
fn thread_model() { "parallel" }
"#,
        &[],
    );
    let c = open(&p);
    assert_eq!(c.thread_model(), crate::backend::ThreadModel::Parallel);
    c.pwrite_owned(vec![1; 65536], 65536, 0).unwrap();
    let e = c.extents(1 << 20, 0, 0).unwrap();
    let v: Vec<_> = e
        .as_slice()
        .iter()
        .map(|x| (x.offset, x.length, x.typ))
        .collect();
    assert_eq!(
        v,
        vec![(0, 65536, 3), (65536, 65536, 0), (131072, 917504, 3)]
    );
    c.zero(65536, 65536, 0).unwrap();
    assert!(c
        .pread_owned(65536, 65536, 0)
        .unwrap()
        .iter()
        .all(|b| *b == 0));
    c.flush(0).unwrap();
}

fn memory(size: u64) -> std::sync::Arc<dyn Backend> {
    let a = crate::alloc::AllocSpec::Sparse.create(size).unwrap();
    std::sync::Arc::new(crate::storage::AllocDisk::new(a, size))
}

fn filter(s: &str) -> ScriptFilter {
    match ScriptFilter::load(&text(s), &Params::default(), &opts()) {
        Ok(f) => f,
        Err(e) => panic!("load failed: {e}"),
    }
}

#[test]
fn filter_offset_and_passthrough() {
    let f = filter(
        r#"
fn get_size(next, h) { next.get_size() - 512 }
fn pread(next, h, count, offset, flags) { next.pread(count, offset + 512, flags) }
fn pwrite(next, h, buf, offset) { next.pwrite(buf, offset + 512) }
"#,
    );
    let low = memory(4096);
    low.pwrite(&[9; 4], 512, 0).unwrap();
    let c = crate::backend::Filter::open(&f, low.clone(), false).unwrap();
    assert_eq!(c.get_size().unwrap(), 3584);
    assert_eq!(c.pread_owned(4, 0, 0).unwrap(), vec![9; 4]);
    c.pwrite_owned(vec![5; 2], 10, 0).unwrap();
    let mut b = [0u8; 2];
    low.pread(&mut b, 522, 0).unwrap();
    assert_eq!(b, [5, 5]);
    // Not defined by the filter: straight to the layer below.
    assert!(c.can_trim().unwrap() && c.can_extents().unwrap());
    c.trim(4096, 0, 0).unwrap();
    assert_eq!(c.extents(4096, 0, 0).unwrap().as_slice()[0].typ, 3);
    // A request past the end of the layer below fails with its errno.
    assert_eq!(
        c.pwrite_owned(vec![1; 2], 3583, 0).unwrap_err().errno,
        Errno::NoSpc
    );
    assert_eq!(c.pread_owned(2, 3583, 0).unwrap_err().errno, Errno::Inval);
}

#[test]
fn filter_errors_are_catchable_with_errno() {
    let f = filter(
        r#"
fn config(p) { #{ writes: 0 } }
fn can_write(next, h) { true }
fn can_zero(next, h) { false }
fn pwrite(next, h, buf, offset, flags) {
    h.writes += 1;
    try {
        next.pwrite(buf, offset, flags);
    } catch (e) {
        if e.errno == "EPERM" { nbd_error("ENOSPC", "below is read-only: " + e.message) }
        throw e;
    }
}
fn pread(next, h, count, offset) {
    try { next.pread(count, offset + 100000) } catch (e) { nbd_error(e.errno, "rethrown") }
}
"#,
    );
    struct Ro;
    impl Backend for Ro {
        fn get_size(&self) -> crate::backend::Result<u64> {
            Ok(1024)
        }
    }
    let low = std::sync::Arc::new(Ro) as std::sync::Arc<dyn Backend>;
    let c = crate::backend::Filter::open(&f, low, false).unwrap();
    assert!(c.can_write().unwrap());
    let e = c.pwrite_owned(vec![1], 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::NoSpc, "{e}");
    assert!(e.message.contains("read-only"), "{e}");
    let e = c.pread_owned(1, 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Inval, "{e}");
}

#[test]
fn reload_swaps_code_keeps_state_and_refuses_broken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.rhai");
    let v1 = "fn config(p) { #{ d: disk(4096) } }\nfn get_size(h) { h.d.size() }\nfn pwrite(h, b, o) { h.d.pwrite(b, o) }\nfn pread(h, c, o) { if o == 0 { pattern(c, blob(1, 1)) } else { h.d.pread(c, o) } }\n";
    std::fs::write(&path, v1).unwrap();
    let p = ScriptPlugin::load(
        &ScriptSource::File(path.clone()),
        &Params::default(),
        &opts(),
    )
    .unwrap();
    let c = open(&p);
    c.pwrite_owned(vec![7; 16], 1024, 0).unwrap();
    assert_eq!(c.pread_owned(2, 0, 0).unwrap(), vec![1, 1]);
    std::fs::write(&path, v1.replace("blob(1, 1)", "blob(1, 2)")).unwrap();
    p.reload().unwrap();
    assert_eq!(c.pread_owned(2, 0, 0).unwrap(), vec![2, 2]);
    std::fs::write(&path, v1.replace("blob(1, 1)", "blob(1, 3) +")).unwrap();
    let e = p.reload().unwrap_err();
    assert!(e.contains("p.rhai:4:"), "{e}");
    assert_eq!(c.pread_owned(2, 0, 0).unwrap(), vec![2, 2]);
    // Adding config() (which would have to run again) is refused too.
    let v0 = "fn get_size(h) { 4096 }\nfn pread(h, c, o) { blob(c) }\n";
    std::fs::write(&path, v0).unwrap();
    let q = ScriptPlugin::load(
        &ScriptSource::File(path.clone()),
        &Params::default(),
        &opts(),
    )
    .unwrap();
    std::fs::write(&path, format!("fn config(p) {{ 1 }}\n{v0}")).unwrap();
    assert!(q.reload().unwrap_err().contains("config"));
    std::fs::write(&path, v1.replace("blob(1, 1)", "blob(1, 4)")).unwrap();
    p.reload().unwrap();
    assert_eq!(c.pread_owned(2, 0, 0).unwrap(), vec![4, 4]);
    assert_eq!(c.pread_owned(16, 1024, 0).unwrap(), vec![7; 16]);
}

#[test]
fn watcher_reloads_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.rhai");
    let v = |n: u8| {
        format!("fn get_size(h) {{ 4096 }}\nfn pread(h, c, o) {{ pattern(c, blob(1, {n})) }}\n")
    };
    std::fs::write(&path, v(1)).unwrap();
    let o = ScriptOptions {
        watch: true,
        ..opts()
    };
    let p = ScriptPlugin::load(&ScriptSource::File(path.clone()), &Params::default(), &o).unwrap();
    let c = open(&p);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), vec![1]);
    let t = std::time::Instant::now();
    std::fs::write(&path, v(2)).unwrap();
    // The reload is asynchronous: poll for the new behaviour (bounded).
    while c.pread_owned(1, 0, 0).unwrap() != vec![2] {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "no reload after 5 s"
        );
        std::thread::yield_now();
    }
    eprintln!("reload delay: {:?}", t.elapsed());
    assert!(t.elapsed() < std::time::Duration::from_millis(1000));
}

#[test]
fn watcher_reloads_when_an_import_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rhai"), "fn byte() { 1 }").unwrap();
    let path = dir.path().join("m.rhai");
    std::fs::write(
        &path,
        "fn get_size(h) { 512 }\nfn pread(h, c, o) { import \"lib\" as lib; blob(c, lib::byte()) }\n",
    )
    .unwrap();
    let o = ScriptOptions {
        watch: true,
        ..opts()
    };
    let p = ScriptPlugin::load(&ScriptSource::File(path), &Params::default(), &o).unwrap();
    let c = open(&p);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), vec![1]);
    let t = std::time::Instant::now();
    std::fs::write(dir.path().join("lib.rhai"), "fn byte() { 2 }").unwrap();
    while c.pread_owned(1, 0, 0).unwrap() != vec![2] {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "no reload after 5 s"
        );
        std::thread::yield_now();
    }
}

#[test]
fn filter_declares_its_params() {
    let flags = ScriptOptions {
        watch: false,
        ..ScriptOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.rhai");
    std::fs::write(&path, "fn params() { #{ skip: \"bytes to skip\" } }\nfn config(p) { if \"size\" in p { throw \"sees the plugin's size\" } #{ skip: parse_int(p.skip) } }\nfn get_size(next, h) { next.get_size() - h.skip }\n").unwrap();
    let p = Params::new(vec![
        ("skip".into(), "100".into()),
        ("size".into(), "1M".into()),
    ]);
    let (f, keys) = load_filter(path.to_str().unwrap(), &p, &flags).unwrap();
    assert_eq!(keys, vec!["skip".to_string()]);
    let c = f.open(memory(1000), false).unwrap();
    assert_eq!(c.get_size().unwrap(), 900);
    assert!(load_plugin("no-such-stdlib-name", &p, &flags).is_err());
}

#[test]
fn write_back_after_a_method_call_is_kept_unless_same_object() {
    // `h.list.push(..)` changes a copy that must be written back; `h.d =
    // disk(..)` replaces the disk; `h.d.pwrite(..)` keeps the same disk.
    let p = plugin(
        r#"
fn config(p) { #{ list: [], d: disk(4096) } }
fn get_size(h) { h.d.size() }
fn pread(h, count, offset) {
    h.list.push(offset);
    if offset == 100 { h.d = disk(8192); }
    h.d.pwrite(blob(1, h.list.len()), 0);
    h.d.pread(count, offset)
}
"#,
        &[],
    );
    let c = open(&p);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), vec![1]);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), vec![2]);
    assert_eq!(c.get_size().unwrap(), 4096);
    assert_eq!(c.pread_owned(1, 100, 0).unwrap(), vec![0]);
    assert_eq!(c.get_size().unwrap(), 8192);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), vec![4]);
}

#[test]
fn passthrough_example_changes_nothing() {
    let f = filter(include_str!("../../examples/passthrough.rhai"));
    let low = memory(1 << 20);
    let c = crate::backend::Filter::open(&f, low.clone(), false).unwrap();
    assert_eq!(c.get_size().unwrap(), 1 << 20);
    assert_eq!(c.can_write().unwrap(), low.can_write().unwrap());
    assert_eq!(c.can_trim().unwrap(), low.can_trim().unwrap());
    assert_eq!(c.can_zero().unwrap(), low.can_zero().unwrap());
    assert_eq!(c.can_extents().unwrap(), low.can_extents().unwrap());
    assert_eq!(c.can_fua().unwrap(), low.can_fua().unwrap());
    assert_eq!(c.can_cache().unwrap(), low.can_cache().unwrap());
    assert_eq!(c.can_multi_conn().unwrap(), low.can_multi_conn().unwrap());
    assert_eq!(c.block_size().unwrap(), low.block_size().unwrap());
    c.pwrite_owned(vec![7; 8192], 4096, 0).unwrap();
    assert_eq!(c.pread_owned(8192, 4096, 0).unwrap(), vec![7; 8192]);
    c.zero(4096, 4096, 0).unwrap();
    c.trim(4096, 8192, 0).unwrap();
    c.flush(0).unwrap();
    c.cache(4096, 0, 0).unwrap();
    assert_eq!(c.pread_owned(8192, 4096, 0).unwrap(), vec![0; 8192]);
    let a = c.extents(1 << 20, 0, 0).unwrap();
    let b = low.extents(1 << 20, 0, 0).unwrap();
    assert_eq!(a.as_slice().len(), b.as_slice().len());
    assert_eq!(
        c.pread_owned(2, (1 << 20) - 1, 0).unwrap_err().errno,
        Errno::Inval
    );
    c.close();
}

/// Where the map cap (`max_map_size`) holds: a map a method is called on
/// (`m.len()`, `m.mixin(..)`), built by an operator (`+`, `+=`), returned
/// by a callback, or stored in state is checked (the last with the
/// position and the caps named); a map only filled by `m[k] = v` and read
/// by index is not (Rhai checks only the new entry), as README says.
#[test]
fn map_cap_where_it_is_checked() {
    let o = ScriptOptions {
        max_map_size: 4,
        ..opts()
    };
    let src = r#"
fn config(p) { #{ n: 0 } }
fn get_size(h) { 1048576 }
fn pread(h, count, offset) {
    let m = #{};
    for i in 0..10 { m["k" + i] = i; }
    if m["k9"] != 9 { throw "not filled" }
    if offset == 256 { m.len(); }
    if offset == 512 { let z = m + #{}; }
    if offset == 1024 { m.mixin(#{ x: 1 }); }
    if offset == 1536 { m += #{ x: 1 }; }
    if offset == 2048 { h.m = m; }
    blob(count)
}
fn can_multi_conn(h) { let m = #{}; for i in 0..10 { m["k" + i] = i; } m }
"#;
    let p = ScriptPlugin::load(&text(src), &Params::default(), &o).unwrap();
    let c = open(&p);
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), [0]);
    for off in [256, 512, 1024, 1536] {
        let e = match c.pread_owned(1, off, 0) {
            Ok(_) => panic!("{off}: not checked"),
            Err(e) => e,
        };
        assert_eq!(e.errno, Errno::Io, "{off}: {e}");
        assert_eq!(
            e.message, "t.rhai:4:1: pread: Size of object map too large",
            "{off}"
        );
    }
    let e = c.pread_owned(1, 2048, 0).unwrap_err();
    assert_eq!(e.errno, Errno::Io);
    assert_eq!(
        e.message,
        "t.rhai:12:27: pread: storing .m: Size of object map too large: a map holds at most 4 entries, an array or Blob 67108864 elements, a string 16777216 bytes"
    );
    let e = c.can_multi_conn().unwrap_err();
    assert_eq!(
        e.message,
        "t.rhai:15:1: can_multi_conn: the result: Size of object map too large"
    );
    // Still serving.
    assert_eq!(c.pread_owned(1, 0, 0).unwrap(), [0]);
}
