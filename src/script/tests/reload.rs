//! Reloading: new code keeps state and broken code is refused, and the
//! watcher reloads on a save and when an import changes.

use super::*;

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
