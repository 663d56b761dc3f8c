//! Sizes and offsets past the corpus: the 1.44 `@4k` offset suffixes,
//! the 1.36 overflow rejection, huge sizes and a huge lazy pattern
//! under writes.

use super::*;

/// nbdkit 1.44's size suffixes: compared with nbdkit 1.32 given the
/// expanded number.
#[test]
fn offset_suffixes_like_nbdkit_1_44() {
    let pairs = [
        ("@4k 1", "@4096 1"),
        ("@1M", "@1048576"),
        ("1 @+2k 2", "1 @+2048 2"),
        ("(1 @^4k)", "(1 @^4096)"),
        ("@8k @-4k 1", "@8192 @-4096 1"),
        ("@1s 1", "@512 1"),
        ("(@2K) 1", "(@2048) 1"),
        ("@3b 1", "@3 1"),
        ("@1k\n1", "@1024\n1"),
        ("@^32k", "@^32768"),
    ];
    let fails = par(&pairs, |(new, old)| {
        let want = nbdkit(&case(old)).expect("nbdkit");
        match ours(&case(new)) {
            Ok(g) if g == want => None,
            Ok(g) => Some(format!("{new:?}: {} vs {}", show(&g), show(&want))),
            Err(e) => Some(format!("{new:?}: {e}")),
        }
    });
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    // A suffix must end the argument; hex and octal take none.
    for s in ["@4k2", "@4kB", "@0x10k", "@010k", "@4k\"a\""] {
        let e = datastr::compile(s, &EvalOptions::default())
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("parsing error"), "{s}: {e}");
    }
}

/// Overflow is rejected as in nbdkit ≥ 1.36 (1.32 wraps or hangs), and
/// the largest sizes work lazily.
#[test]
fn overflow_and_huge_sizes() {
    let o = EvalOptions::default();
    for (s, want) in [
        ("0*0x100000000*0x100000000", "overflow"),
        ("(1 2)*0x100000000*0x100000000", "overflow"),
        ("\"ab\"*0x8000000000000000", "2^63-1"),
        ("@0x8000000000000000 1", "2^63-1"),
        ("@+0x7fffffffffffffff @+0x7fffffffffffffff", "2^63-1"),
        ("1*0x7fffffffffffffff 1", "2^63-1"),
        ("@8E", "2^63-1"),
    ] {
        let e = datastr::compile(s, &o).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains(want), "{s}: {e}");
        let e = ours(&case(s)).unwrap_err();
        assert!(e.contains(want), "{s}: {e}");
    }
    // nbdkit saturates @0x8000000000000000 to 2^63-1: a valid, empty disk.
    let srv = common::Server::start(&["data", "data=@0x8000000000000000 @0 (1 2)*0x1000000000000"]);
    let out = common::run_ok("nbdinfo", &["--size", &srv.uri]);
    assert_eq!(out.trim(), (i64::MAX as u64).to_string());
    let got = srv.nbdsh("print(h.pread(4, 0x7ffffffffffffffb).hex(), h.pread(4, 2**46).hex())");
    assert_eq!(got.trim(), "00000000 01020102");
}

/// The 8 GiB pattern of the issue: served lazily, reads correct at both
/// ends, writes land in the overlay, extents never claim zero over data.
#[test]
fn huge_lazy_pattern_with_writes() {
    let srv = common::Server::start(&["data", "( 0x55 0xAA )*4294967296"]);
    let out = srv.nbdsh(
        "print(h.get_size())\n\
         print(h.pread(4, 0).hex(), h.pread(4, 8*2**30 - 4).hex())\n\
         h.pwrite(b'\\x01\\x02\\x03', 5*2**30 + 1)\n\
         h.zero(6, 100)\n\
         print(h.pread(8, 5*2**30).hex(), h.pread(8, 98).hex())",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], (8u64 << 30).to_string());
    assert_eq!(lines[1], "55aa55aa 55aa55aa");
    assert_eq!(lines[2], "5501020355aa55aa 55aa000000000000");
    let map = common::run_ok("nbdinfo", &["--map", &srv.uri]);
    for line in map.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (off, len): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        let typ: u32 = f[2].parse().unwrap();
        if typ & 2 != 0 {
            assert!(
                off >= 100 && off + len <= 106,
                "zero extent over data: {line}"
            );
        }
    }
}
