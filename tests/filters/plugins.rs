//! The native data plugins `pattern`, `zero`, `full` and `random`
//! against nbdkit's.

use super::*;

#[test]
fn pattern_zero_full_random_match_nbdkit() {
    let b = same_bytes(&["pattern", "size=1048579"]);
    assert_eq!(&b[0x28..0x30], &0x28u64.to_be_bytes());
    same_bytes(&[
        "--filter=offset",
        "pattern",
        "size=1M",
        "offset=5",
        "range=1001",
    ]);
    let b = same_bytes(&["random", "size=1048577", "seed=42"]);
    assert!(b.iter().any(|&x| x != 0));
    same_bytes(&["random", "size=4096", "seed=4294967295"]);
    let b = same_bytes(&["full", "size=65536"]);
    assert!(b.iter().all(|&x| x == 0));
    // zero: nbdkit's takes no parameters and is empty.
    let (k, o) = both_run(&["zero"], "nbdinfo --size \"$uri\"");
    assert_eq!(k, o);
    assert_eq!(o.trim(), "0");
    // Errors as nbdkit gives them.
    let script =
        "for f in [lambda: h.pwrite(b\"x\", 0), lambda: h.trim(512, 0), lambda: h.zero(512, 0)]:
    try:
        f()
        print(\"ok\")
    except nbd.Error as e:
        print(e.errnum)";
    let (k, o) = both_run(&["full", "size=1M"], &nbdsh_cmd(script));
    assert_eq!(k, o);
    assert_eq!(o.lines().collect::<Vec<_>>(), vec!["28", "28", "28"]);
    let rw = "b = h.pread(4096, 8192)
h.pwrite(b, 8192)
print(\"same ok\")
try:
    h.pwrite(bytes(16), 0)
except nbd.Error as e:
    print(e.errnum)";
    let (k, o) = both_run(&["random", "size=1M", "seed=7"], &nbdsh_cmd(rw));
    assert_eq!(k, o);
    assert!(o.contains("same ok") && o.contains("5"), "{o}");
    // Flags nbdinfo reports.
    let flags = "nbdinfo --json \"$uri\" | grep -E \"can_(write|trim|zero|cache|multi_conn)|is_read_only\" | sort";
    for p in [
        &["pattern", "size=1M"][..],
        &["full", "size=1M"][..],
        &["random", "size=1M"][..],
    ] {
        let (k, o) = both_run(p, flags);
        assert_eq!(k, o, "{p:?}");
    }
}
