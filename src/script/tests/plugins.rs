//! Script plugins called directly: a ramdisk round trip, state and
//! handles, capabilities from the functions defined, extents/trim/zero,
//! write-back after method calls, and map caps.

use super::*;

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
