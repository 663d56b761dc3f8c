//! Debugging output as nbdkit's: -v logging every layer call, and -D
//! data.AST=1 printing the optimized tree.

use super::*;

#[test]
fn verbose_logs_every_layer_call_as_nbdkit() {
    let cases = [
        (None, true, true),
        (Some("nbdkit.backend.controlpath=0"), false, true),
        (Some("nbdkit.backend.datapath=0"), true, false),
    ];
    for (flag, open, pread) in cases {
        let mut a = vec!["-U", "-", "-v"];
        if let Some(f) = flag {
            a.extend(["-D", f]);
        }
        a.extend([
            "--filter=noextents",
            "memory",
            "1M",
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pread(512, 0)'",
        ]);
        let out = run(bin(), &a);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        let has = |what: &str| {
            err.lines()
                .any(|l| l.starts_with("nbdscript: debug: ") && l.contains(what))
        };
        for layer in ["noextents", "memory"] {
            let o = format!("debug: {layer}: open readonly=0 exportname=\"\" tls=0");
            assert_eq!(has(&o), open, "{flag:?} {o}\n{err}");
            let p = format!("debug: {layer}: pread count=512 offset=0 flags=0x0");
            assert_eq!(has(&p), pread, "{flag:?} {p}\n{err}");
        }
        assert!(!err.contains("was not used"), "{err}");
    }
}

/// The lines between `BEGIN AST` and `END AST` of a `-fv -D data.AST=1`
/// run of `prog`, each without the `PREFIX: debug: ` that must start it.
fn data_ast(prog: &str, prefix: &str, data: &str) -> Vec<String> {
    let out = run(
        prog,
        &[
            "-U",
            "-",
            "-fv",
            "-D",
            "data.AST=1",
            "data",
            data,
            "--run",
            "true",
        ],
    );
    let err = stderr_of(&out);
    assert!(out.status.success(), "{prog} data {data:?}: {err}");
    let mut lines = err.lines();
    let begin = format!("{prefix}: debug: BEGIN AST (-D data.AST=1)");
    assert!(lines.any(|l| l == begin), "no {begin:?} in:\n{err}");
    let end = format!("{prefix}: debug: END AST");
    lines
        .take_while(|l| *l != end)
        .map(|l| {
            l.strip_prefix(&format!("{prefix}: debug: "))
                .unwrap_or_else(|| panic!("{l:?} in:\n{err}"))
                .to_string()
        })
        .collect()
}

#[test]
fn data_ast_debug_flag_prints_the_optimized_tree_as_nbdkit() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("nbdkit");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let link = link.to_str().unwrap();
    // Cases of nbdkit's test-data-optimum.sh and the other node kinds.
    let cases: &[(&str, &[&str])] = &[
        ("1", &["1"]),
        ("\"1111\" 0x31", &["fill(49*5)"]),
        (
            "(0x31 0x32 0x33)*4*4",
            &[&format!("\"{}\"", "123".repeat(16))],
        ),
        (
            "(((2 2 2) 2)) (1 1 1 (1 3))",
            &[
                "(",
                "    fill(2*4)",
                "    fill(1*3)",
                "    \"\\x01\\x03\"",
                ")",
            ],
        ),
        ("\"123456\"[1:2]", &["50"]),
        ("(1 1 1 1 1 1)[1:6]", &["fill(1*5)"]),
        ("()[6:]*0", &["null"]),
        (
            "\"a b\\\\\" 0xff (1 2)*5 @^4 @+3 @-1 (4 5) -> \\x \\x",
            &[
                "(",
                "    \"a b\\\\xff\"",
                "    (",
                "        \"\\x01\\x02\"",
                "    ) *5",
                "    @^4",
                "    @3",
                "    @-1",
                "    (",
                "        \"\\x04\\x05\"",
                "    ) -> \\x",
                "    \\x",
                ")",
            ],
        ),
    ];
    for (data, want) in cases {
        let ours = data_ast(bin(), "nbdscript", data);
        assert_eq!(ours, *want, "data {data:?}");
        // Run as `nbdkit`, the lines are nbdkit's own.
        assert_eq!(data_ast(link, "nbdkit", data), ours, "data {data:?}");
        assert_eq!(data_ast("nbdkit", "nbdkit", data), ours, "data {data:?}");
    }
    // Only with -v; with another plugin the flag is not used (a warning).
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "-f",
            "-D",
            "data.AST=1",
            "data",
            "1",
            "--run",
            "true",
        ],
    );
    assert!(out.status.success());
    assert!(!stderr_of(&out).contains("AST"), "{}", stderr_of(&out));
    let out = run(
        bin(),
        &[
            "-U",
            "-",
            "-v",
            "-D",
            "data.AST=1",
            "memory",
            "1M",
            "--run",
            "true",
        ],
    );
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(!err.contains("BEGIN AST"), "{err}");
    assert!(
        err.contains("nbdscript: warning: debug flag -D data.AST was not used"),
        "{err}"
    );
}
