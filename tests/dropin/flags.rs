//! nbdkit's flags and probes: accepted flags, bare values to the magic
//! key, --dump-plugin, --version probes, IPv6 and IPv4, --mask-
//! handshake, and answering as the nbdkit it follows.

use super::*;

#[test]
fn nbdkit_flags_are_accepted() {
    let o = run(
        bin(),
        &[
            "-D",
            "memory.foo=1",
            "--newstyle",
            "--mask-handshake=3",
            "memory",
            "1M",
            "--run",
            "nbdinfo --size \"$uri\"",
        ],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1048576");
    assert!(
        stderr_of(&o).contains("nbdscript: warning: debug flag -D memory.foo was not used"),
        "{}",
        stderr_of(&o)
    );
    // A malformed flag exits 1 as nbdkit's, naming the flag.
    for (bad, why) in [
        ("memory", "a debug flag must have the format NAME.FLAG=N"),
        ("nonsense", "a debug flag must have the format NAME.FLAG=N"),
        (
            "memory.foo",
            "a debug flag must have the format NAME.FLAG=N",
        ),
        (".foo=1", "a debug flag must have the format NAME.FLAG=N"),
        (
            "memory.foo=x",
            "\"x\" is not an integer (a debug flag must have the format NAME.FLAG=N)",
        ),
    ] {
        let args = ["-D", bad, "memory", "1M", "--run", "true"];
        let o = run(bin(), &args);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", stderr_of(&o));
        assert_eq!(stderr_of(&o), format!("nbdscript: -D {bad}: {why}\n"));
        let k = run("nbdkit", &[&["-U", "-"][..], &args].concat());
        assert_eq!(k.status.code(), Some(1), "nbdkit {bad}");
    }
    let help = run_ok(bin(), &["--help"]);
    assert!(
        help.contains("a malformed one exits 1, as nbdkit"),
        "{help}"
    );
}

#[test]
fn bare_values_go_to_the_magic_key_anywhere() {
    let args = ["data", "size=512", "1 2 3"];
    let ours = nbdscript_bytes(&args).unwrap();
    assert_eq!(ours, nbdkit_bytes(&args).unwrap());
    assert_eq!(&ours[..4], &[1, 2, 3, 0]);
    assert_eq!(ours.len(), 512);
    let o = run(bin(), &["memroy", "1M", "size=2", "--run", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("nbdscript: unknown plugin \"memroy\""),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn dump_plugin_needs_no_parameters_and_has_nbdkit_keys() {
    let out = run_ok(bin(), &["curl", "--dump-plugin"]);
    assert!(out.contains("thread_model=parallel"), "{out}");
    assert!(out.contains("magic_config_key=url"), "{out}");
    assert!(out.contains("param.url="), "{out}");
    let out = run_ok(bin(), &["memory", "--dump-plugin"]);
    for want in [
        "name=memory",
        "mlock=yes",
        "magic_config_key=size",
        "has_pread=1",
        "param.allocator=",
    ] {
        assert!(out.lines().any(|l| l.starts_with(want)), "{want}: {out}");
    }
    let o = run(bin(), &["--dump-plugin", "-s", "null"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(stderr_of(&o).contains("cannot be used in this combination"));
}

/// The `has_*` keys and the `mlock=`/`zstd=`/`data_base64=`/`file_*` probes of
/// `--dump-plugin`, in order.
fn dump_keys(prog: &str, plugin: &str) -> Vec<String> {
    run_ok(prog, &[plugin, "--dump-plugin"])
        .lines()
        .filter(|l| {
            l.starts_with("has_")
                || ["mlock=", "zstd=", "data_base64=", "file_"]
                    .iter()
                    .any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn dump_plugin_has_keys_follow_the_callbacks_as_nbdkit() {
    // Key by key against nbdkit 1.32's, leaving out the hooks nbdkit's C
    // plugins have and ours have no separate callback for (load, unload,
    // get_ready, close, longname, can_*, the v1 `_pread_v1` names).
    let ours_only_lifecycle = |k: &String| {
        [
            "has_longname=",
            "has_load=",
            "has_unload=",
            "has_get_ready=",
            "has_close=",
            "has_can_",
            "has__",
        ]
        .iter()
        .all(|p| !k.starts_with(p))
    };
    // (plugin, keys only ours prints, keys only nbdkit's prints): where
    // the plugins differ, ours says what ours does.
    let differences: [(&str, &[&str], &[&str]); 7] = [
        ("memory", &[], &[]),
        ("data", &[], &[]),
        // Ours checks its parameters once all are given.
        ("null", &["has_config_complete=1"], &[]),
        // Ours uses no block-device ioctls.
        ("file", &[], &["file_blksszget=yes", "file_blkzeroout=yes"]),
        ("pattern", &["has_config_complete=1"], &[]),
        // Ours takes size= (nbdkit's is always empty) and answers block
        // status (all zero).
        (
            "zero",
            &[
                "has_config=1",
                "has_config_complete=1",
                "has_config_help=1",
                "has_extents=1",
            ],
            &[],
        ),
        // nbdkit's is a v1 plugin: `has__pwrite_v1`, `has__flush_v1`.
        (
            "partitioning",
            &["has_pread=1", "has_pwrite=1", "has_flush=1"],
            &[],
        ),
    ];
    for (plugin, only_ours, only_theirs) in differences {
        let ours: Vec<String> = dump_keys(bin(), plugin)
            .into_iter()
            .filter(|k| !only_ours.contains(&k.as_str()))
            .collect();
        let theirs: Vec<String> = dump_keys("nbdkit", plugin)
            .into_iter()
            .filter(ours_only_lifecycle)
            .filter(|k| !only_theirs.contains(&k.as_str()))
            .collect();
        assert_eq!(ours, theirs, "{plugin}");
        let all = dump_keys(bin(), plugin);
        for k in only_ours {
            assert!(all.iter().any(|a| a == k), "{plugin}: {k} in {all:?}");
        }
    }
    let data = dump_keys(bin(), "data");
    assert!(data.iter().any(|k| k == "mlock=yes"), "{data:?}");
    assert!(data.iter().any(|k| k == "has_zero=1"), "{data:?}");
}

#[test]
fn version_probes_layers() {
    let out = run_ok(bin(), &["--filter=log", "null", "--version"]);
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            format!("nbdscript {v}"),
            format!("log {v}"),
            format!("null {v}")
        ]
    );
    let o = run(bin(), &["nosuchplugin", "--version"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("unknown plugin \"nosuchplugin\""));
    let o = run(bin(), &["--filter=nosuchfilter", "null", "--version"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("unknown filter \"nosuchfilter\""));
    let out = run_ok(bin(), &["--dump-config"]);
    assert!(out.lines().any(|l| l == "host_os=linux-gnu"), "{out}");
    assert!(out.lines().any(|l| l == format!("version={v}")), "{out}");
}

#[test]
fn tcp_listens_on_ipv6_and_ipv4() {
    let mut child = nbdscript()
        .args(["-f", "-p", "0", "--print-uri", "memory", "1M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for host in ["[::1]", "127.0.0.1"] {
        let out = run(
            "qemu-img",
            &["info", "--output=json", &format!("nbd://{host}:{port}")],
        );
        assert!(out.status.success(), "{host}: {}", stderr_of(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"virtual-size\": 1048576"));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What libnbd sees of a server: `handshake flags, protocol, structured
/// replies`, then the first bytes after a write (the data path works).
fn handshake_view(prog: &str, mask: &str) -> String {
    let script = r#"export uri; /usr/bin/python3 -c '
import nbd, os
h = nbd.NBD()
h.connect_uri(os.environ["uri"])
print(h.get_handshake_flags(), h.get_protocol(), h.get_structured_replies_negotiated())
h.pwrite(b"ab" * 256, 0)
print(h.pread(4, 0))
'"#;
    let mut args = vec!["-U", "-"];
    if !mask.is_empty() {
        args.push(mask);
    }
    args.extend(["memory", "1M", "--run", script]);
    let o = run(prog, &args);
    assert!(o.status.success(), "{prog} {mask}: {}", stderr_of(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn mask_handshake_masks_global_flags_as_nbdkit() {
    let cases = [
        ("", "3 newstyle-fixed True\n"),
        ("--mask-handshake=0", "0 newstyle False\n"),
        ("--mask-handshake=1", "1 newstyle-fixed True\n"),
        ("--mask-handshake=2", "2 newstyle False\n"),
    ];
    for (mask, want) in cases {
        let ours = handshake_view(bin(), mask);
        assert_eq!(ours, format!("{want}bytearray(b'abab')\n"), "{mask}");
        assert_eq!(
            ours,
            handshake_view("nbdkit", mask),
            "{mask} differs from nbdkit"
        );
    }
    let o = run(
        bin(),
        &["--mask-handshake=x", "memory", "1M", "--run", "true"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).contains("--mask-handshake=x: give an unsigned number"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn run_as_nbdkit_it_answers_version_probes_as_the_nbdkit_it_follows() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("nbdkit");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let link = link.to_str().unwrap();
    let key = |out: &str, k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {k}= in:\n{out}"))
    };
    let ours = run_ok(link, &["--dump-config"]);
    let theirs = run_ok("nbdkit", &["--dump-config"]);
    for k in ["name", "version", "version_major", "version_minor"] {
        assert_eq!(key(&ours, k), key(&theirs, k), "{k}=");
    }
    let bindir = std::path::Path::new(bin()).parent().unwrap();
    assert_eq!(key(&ours, "bindir"), bindir.to_str().unwrap());
    assert_eq!(key(&ours, "nbdscript_version"), env!("CARGO_PKG_VERSION"));
    let v = run_ok(link, &["--filter=offset", "file", "--version"]);
    let want_nbdkit = run_ok("nbdkit", &["--version"]);
    let nbdkit_v = want_nbdkit.trim();
    assert_eq!(
        v,
        format!(
            "{nbdkit_v} (nbdscript {})\noffset {}\nfile {}\n",
            env!("CARGO_PKG_VERSION"),
            &nbdkit_v["nbdkit ".len()..],
            &nbdkit_v["nbdkit ".len()..]
        )
    );
    // Under its own name it is nbdscript.
    let own = run_ok(bin(), &["--dump-config"]);
    assert_eq!(key(&own, "name"), "nbdscript");
    assert_eq!(key(&own, "version"), env!("CARGO_PKG_VERSION"));
    assert!(run_ok(bin(), &["--version"]).starts_with("nbdscript "));
}
