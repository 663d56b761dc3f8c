//! The sparse-random plugin against real clients, and byte for byte and
//! extent for extent against nbdkit-sparse-random-plugin with the same
//! seed.

use crate::common::*;

const ARGS: &[&str] = &[
    "sparse-random",
    "size=8M",
    "seed=42",
    "percent=30",
    "runlength=262144",
];

#[test]
fn same_bytes_and_map_as_nbdkit() {
    let b = same_bytes(ARGS);
    assert_eq!(b.len(), 8 << 20);
    let data = b.chunks(4096).filter(|c| c[0] != 0).count();
    assert!((200..1000).contains(&data), "{data} data blocks of 2048");
    // Each data block is one non-zero byte repeated.
    assert!(b.chunks(4096).all(|c| c.iter().all(|&x| x == c[0])));
    let mut rc = ARGS.to_vec();
    rc.push("random-content=true");
    let b = same_bytes(&rc);
    assert!(b.chunks(4096).any(|c| c[0] != c[1]));
    let (k, o) = both_run(ARGS, "nbdinfo --map \"$uri\"");
    assert_eq!(k, o);
    assert!(o.contains("hole,zero") && o.contains("data"), "{o}");
    let (k, o) = both_run(
        &["sparse-random", "size=1G", "seed=7"],
        "nbdinfo --map --totals \"$uri\"",
    );
    assert_eq!(k, o);
}

/// nbdkit's test-sparse-random-copy.sh: one instance as both source and
/// target (writes are checked), and a copy out and back in with qemu-img.
#[test]
fn copies_onto_itself_and_back() {
    let out = nbdscript()
        .env("PATH", sys_path())
        .args(["-U", "-", "sparse-random", "size=2G", "seed=3"])
        .args(["--run", "timeout 120 nbdcopy \"$uri\" \"$uri\""])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("copy.img");
    let img = img.to_str().unwrap();
    let s = Server::start(&[
        "-v",
        "sparse-random",
        "size=64M",
        "seed=11",
        "percent=20",
        "runlength=1M",
    ]);
    let url = format!("nbd+unix:///?socket={}", s.sock.display());
    run_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &url, img],
    );
    let bytes = std::fs::read(img).unwrap();
    assert_eq!(bytes, read_all(&s.uri));
    // Written back unchanged: every write matches, trim/zero of holes pass.
    run_ok(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", img, &url],
    );
    // A byte changed: EIO naming the block.
    let script = "import errno
b = bytearray(h.pread(4096, 0))
b[0] ^= 1
try:
    h.pwrite(bytes(b), 0)
    print(\"written\")
except nbd.Error as e:
    print(e.errnum == errno.EIO)";
    assert_eq!(s.nbdsh(script).trim(), "True");
    let (_, err) = s.stop();
    assert!(
        err.contains("sparse-random: data written at block 0 (offset 0) does not match expected"),
        "{err}"
    );
}

#[test]
fn bad_parameters_and_dump_plugin() {
    for (arg, want) in [
        (
            "percent=150",
            "sparse-random: percent=150: expected a number from 0 to 100",
        ),
        (
            "runlength=0",
            "sparse-random: runlength=0: must be greater than 0",
        ),
        (
            "seed=x",
            "sparse-random: seed=x: expected an unsigned 32-bit number",
        ),
        ("random-content=perhaps", "random-content=perhaps"),
    ] {
        let out = nbdscript()
            .args(["-U", "-", "sparse-random", "size=1M", arg, "--run", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{arg}: {err}");
    }
    let out = nbdscript()
        .args(["-U", "-", "sparse-random", "1P", "--run", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("size=1125899906842624 is too large"),
        "{err}"
    );
    let out = nbdscript()
        .args(["sparse-random", "--dump-plugin"])
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains("name=sparse-random\n") && o.contains("magic_config_key=size\n"),
        "{o}"
    );
    let out = nbdscript()
        .args(["sparse-random", "1M", "seed=99", "--dump-plugin"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("seed=99\n"));
    let help =
        String::from_utf8_lossy(&nbdscript().arg("--help").output().unwrap().stdout).into_owned();
    assert!(
        help.contains("sparse-random") && help.contains("runlength="),
        "{help}"
    );
}
