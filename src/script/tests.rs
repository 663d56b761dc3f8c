//! Unit tests of the script host: call the Backend methods directly.

use super::*;
use crate::backend::{Backend, Errno};

pub(super) fn opts() -> ScriptOptions {
    ScriptOptions { watch: false, ..ScriptOptions::default() }
}

pub(super) fn text(s: &str) -> ScriptSource {
    ScriptSource::Text { name: "t.rhai".into(), text: s.into() }
}

pub(super) fn plugin(s: &str, params: &[(&str, &str)]) -> ScriptPlugin {
    let p = Params::new(params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
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
    c.pwrite_owned(vec![7u8; 512], 1024, 0).unwrap();
    let b = c.pread_owned(1024, 512, 0).unwrap();
    assert_eq!(&b[..512], &[0u8; 512][..]);
    assert_eq!(&b[512..], &[7u8; 512][..]);
    // A second connection sees the same disk.
    let c2 = crate::backend::Plugin::open(&p, false, "").unwrap();
    assert_eq!(c2.pread_owned(1, 1024, 0).unwrap(), vec![7]);
    // Past the end: EINVAL / ENOSPC from disk().
    assert_eq!(c.pread_owned(2, 65535, 0).unwrap_err().errno, Errno::Inval);
    assert_eq!(c.pwrite_owned(vec![1; 2], 65535, 0).unwrap_err().errno, Errno::NoSpc);
}
