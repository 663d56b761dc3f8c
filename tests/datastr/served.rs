//! What the `data` plugin serves: the magic key, `<FILE` relative to
//! the working directory, and extents compared with nbdkit.

use super::*;

/// Data strings are served by the plugin with the magic key, and `<FILE`
/// paths relative to the working directory work.
#[test]
fn magic_key_and_relative_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("blob"), b"xyz").expect("write");
    let srv =
        common::Server::try_start_in(&["data", "1 <blob 2"], Some(dir.path())).expect("start");
    assert_eq!(common::read_all(&srv.uri), b"\x01xyz\x02");
}

/// Extents (`nbdinfo --map`) match nbdkit's for small strings, which are
/// written into the allocator the way nbdkit writes them. Our sparse
/// allocator frees pages written with zeros, so an allocated zero page of
/// nbdkit's (ZERO) may be a hole here (HOLE|ZERO): compare zero-ness.
#[test]
fn extents_match_nbdkit() {
    let strings = [
        "@131072 0",
        "@131072 0 0",
        "1 @32768 1 @32768 0",
        "@32767 1 2",
        "(0x55)*100000",
        "1 2 3 @0 (@3)",
        "@100000 (1 @40000 2)",
        "@1048576 1 @^4194304",
        "0*200000 @65536 \"x\"",
    ];
    let map = |prog: &str, pre: &[&str], s: &str| {
        let out = Command::new(prog)
            .env("PATH", sys_path())
            .args(pre)
            .arg("data")
            .arg(format!("data={s}"))
            .arg("--run")
            .arg("nbdinfo --map \"$uri\"")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{prog} {s:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // (offset, length, reads-as-zero), merged.
        let mut v: Vec<(u64, u64, bool)> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<u64> = line
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            let zero = f[2] & 2 != 0;
            match v.last_mut() {
                Some(l) if l.2 == zero => l.1 += f[1],
                _ => v.push((f[0], f[1], zero)),
            }
        }
        v
    };
    let fails = par(&strings, |s| {
        let want = map("nbdkit", &["-U", "-"], s);
        let got = map(common::bin(), &[], s);
        (got != want).then(|| format!("{s:?}:\n nbdkit: {want:?}\n ours:   {got:?}"))
    });
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
