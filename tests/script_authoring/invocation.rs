//! Running scripts as commands: every example's header command as
//! written, `fn params()` and `fn magic_key()`, and `--dump-plugin` of
//! scripts.

use super::*;

/// Every example's header command (line 2, after the description) runs as
/// written: `./NAME.rhai ...` from `examples/`, `nbdscript ...` from the
/// repository root, with the binary under test first on PATH.
#[test]
fn example_header_commands_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(bin())
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // (file, exit status, what the output must contain)
    let expect: &[(&str, i32, &str)] = &[
        ("bigger.rhai", 0, "1073741824"),
        (
            "corrupt.rhai",
            0,
            "0000000000000000ffffffffffffffffffffffffffffffff",
        ),
        ("count.rhai", 0, "count: reads="),
        ("flaky.rhai", 1, "write failed: No space left on device"),
        ("live.rhai", 0, ""),
        (
            "mbr.rhai",
            0,
            "/tmp/mbr.img1       2048  8191    6144   3M 83 Linux",
        ),
        ("passthrough.rhai", 0, "export-size: 1073741824"),
        (
            "pattern.rhai",
            0,
            "b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x01\\x01",
        ),
        ("ramdisk.rhai", 0, "export-size: 67108864"),
    ];
    let mut names: Vec<String> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".rhai"))
        // The image examples' commands are run (in a scratch directory) by
        // stdlib::examples::image_examples_header_commands_run.
        .filter(|n| !matches!(n.as_str(), "efi.rhai" | "floppy.rhai" | "numbered.rhai"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        expect.iter().map(|e| e.0).collect::<Vec<_>>(),
        "an example without an expectation here"
    );
    for (name, status, want) in expect {
        let text = std::fs::read_to_string(root.join("examples").join(name)).unwrap();
        let header = text.lines().nth(1).unwrap();
        let cmd = &header[header
            .find(".  ")
            .unwrap_or_else(|| panic!("{name}: no command in {header:?}"))
            + 3..];
        let cwd = if cmd.starts_with("./") {
            root.join("examples")
        } else {
            root.to_path_buf()
        };
        let out = client("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&cwd)
            .env("PATH", format!("{bin_dir}:{}", sys_path()))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(*status), "{name}: {cmd}\n{all}");
        assert!(all.contains(want), "{name}: {cmd}\n{all}");
    }
}

/// A script declaring `fn params()` refuses unknown parameters with the
/// accepted list; `fn magic_key()` takes a bare value (`./disk.rhai 2M`).
#[test]
fn script_parameters_and_magic_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "disk.rhai",
        "#!/usr/bin/env nbdscript\nfn params() { #{ size: \"the disk size\", fill: \"a byte\" } }\nfn magic_key() { \"size\" }\nfn config(p) { #{ d: disk(p.size ?? \"1M\") } }\nfn get_size(h) { h.d.size() }\nfn pread(h, count, offset) { h.d.pread(count, offset) }\n",
    );
    let out = nbdscript()
        .args([p.as_str(), "2M", "--run", "nbdinfo --size \"$uri\""])
        .env("PATH", sys_path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2097152",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nbdscript()
        .args([p.as_str(), "sise=2M", "--run", "true"])
        .env("PATH", sys_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{p}: unknown parameter sise=2M; accepted: "))
            && err.contains("size")
            && err.contains("fill"),
        "{err}"
    );
}

/// `--dump-plugin` of a script plugin (option before or after the path)
/// and of a script filter: nbdkit's keys from the compiled script, the
/// capabilities its callbacks imply, its thread model as written, its
/// parameters and magic key. `config` never runs (here it would print and
/// throw), and no parameter is needed.
#[test]
fn dump_plugin_describes_scripts_without_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "disk.rhai",
        "#!/usr/bin/env nbdscript\nfn params() { #{ size: \"the disk size\", fill: \"a byte\" } }\nfn magic_key() { \"size\" }\nfn thread_model() { \"serialize_requests\" }\nfn config(p) { print(\"config ran\"); throw \"config must not run\"; }\nfn get_size(h) { h.d.size() }\nfn pread(h, count, offset) { h.d.pread(count, offset) }\nfn pwrite(h, buf, offset) { h.d.pwrite(buf, offset) }\nfn flush(h) { }\nfn can_multi_conn(h) { true }\n",
    );
    let f = script(
        dir.path(),
        "f.rhai",
        "fn params() { [\"skip\"] }\nfn config(p) { print(\"config ran\"); throw \"config must not run\" }\nfn pread(next, h, count, offset, flags) { next.pread(count, offset) }\nfn can_write(next, h) { false }\n",
    );
    let real = |p: &str| std::fs::canonicalize(p).unwrap().display().to_string();
    let plugin = format!(
        "name={p}\nversion={}\npath={}\napi_version=2\nmax_thread_model=parallel\nthread_model=serialize_requests\nerrno_is_preserved=1\nmagic_config_key=size\nhas_config=1\nhas_params=1\nhas_thread_model=1\nhas_get_size=1\nhas_can_multi_conn=1\nhas_pread=1\nhas_pwrite=1\nhas_flush=1\ncan_write=1\ncan_flush=1\ncan_trim=0\ncan_zero=emulate\ncan_fast_zero=1\ncan_extents=0\ncan_fua=emulate\ncan_multi_conn=fn can_multi_conn()\ncan_cache=none\nis_rotational=0\nparam.fill=a byte\nparam.size=the disk size\nreload=true\n",
        env!("CARGO_PKG_VERSION"),
        real(&p)
    );
    let filter = format!(
        "filter={f}\nfilter.path={}\nfilter.thread_model=serialize_all_requests\nfilter.has_config=1\nfilter.has_params=1\nfilter.has_can_write=1\nfilter.has_pread=1\nfilter.can_write=fn can_write()\nfilter.param.skip=\nfilter.reload=true\n",
        real(&f)
    );
    let dump = |args: &[&str]| {
        let out = nbdscript()
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(!err.contains("config ran"), "config ran: {err}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(dump(&[&p, "--dump-plugin"]), plugin);
    assert_eq!(dump(&["--dump-plugin", &p]), plugin);
    // A bare value goes to the magic key; it is not needed, nor used.
    assert_eq!(dump(&["--dump-plugin", &p, "2M"]), plugin);
    let null = dump(&["null", "--dump-plugin"]);
    assert_eq!(
        dump(&[&format!("--filter={f}"), "null", "--dump-plugin"]),
        format!("{null}{filter}")
    );
    assert_eq!(
        dump(&[&format!("--filter={f}"), &p, "--dump-plugin"]),
        format!("{plugin}{filter}")
    );
    // Without fn thread_model the default, spelled as nbdkit does.
    let q = script(
        dir.path(),
        "q.rhai",
        "fn get_size(h) { 512 }\nfn pread(h, count, offset) { blob(count) }\n",
    );
    let out = dump(&[&q, "--dump-plugin", "--no-watch"]);
    assert!(
        out.contains("\nthread_model=serialize_all_requests\n")
            && out.contains("\ncan_write=0\n")
            && out.contains("\ncan_zero=none\n")
            && out.ends_with("\nreload=false\n"),
        "{out}"
    );
    // can_zero= is what the server does with WRITE_ZEROES: the script's
    // zero (native), or pwrite of zeros when it has pwrite and no zero
    // (emulate: advertised, and it zeroes).
    let ramdisk = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ramdisk.rhai");
    assert!(dump(&[ramdisk, "--dump-plugin"]).contains("\ncan_zero=native\n"));
    let w = script(
        dir.path(),
        "w.rhai",
        "fn config(p) { #{ d: disk(65536) } }\nfn get_size(h) { h.d.size() }\nfn pread(h, count, offset) { h.d.pread(count, offset) }\nfn pwrite(h, buf, offset) { h.d.pwrite(buf, offset) }\n",
    );
    assert!(dump(&[&w, "--dump-plugin"]).contains("\ncan_zero=emulate\n"));
    let served = run_ok(
        bin(),
        &[
            &w,
            "-U",
            "-",
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pwrite(b\"\\xff\" * 4096, 512); print(h.can_zero()); h.zero(4096, 512); print(h.pread(8192, 0) == bytes(8192))'",
        ],
    );
    assert_eq!(served, "True\nTrue\n");
}
