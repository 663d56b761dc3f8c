//! Script filters called directly: offset and passthrough, catchable
//! errors with errno, declared params, and the passthrough example.

use super::*;

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
fn passthrough_example_changes_nothing() {
    let f = filter(include_str!("../../../examples/passthrough.rhai"));
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
