//! Script plugins and filters against real clients: the examples, every
//! callback of DESIGN.md §3, errors and limits, shebang and stdin scripts,
//! and live reload on a connection kept open across three rewrites.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[test]
fn ramdisk_example_with_every_client() {
    let s = Server::start(&[&example("ramdisk.rhai"), "size=8M"]);
    s.nbdsh(
        r#"
h.pwrite(b"\xab" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\xab" * 65536
h.zero(4096, 0)
assert h.pread(4096, 0) == bytes(4096)
h.trim(4096, 4096)
assert h.pread(4096, 4096) == bytes(4096)
h.flush()
h.cache(4096, 0)
assert h.can_multi_conn()
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let back = dir.path().join("back.img");
    let data: Vec<u8> = (0..(8u32 << 20))
        .map(|i| if i < (2 << 20) { (i % 251) as u8 } else { 0 })
        .collect();
    std::fs::write(&src, &data).unwrap();
    run_ok("nbdcopy", &[src.to_str().unwrap(), &s.uri]);
    run_ok("nbdcopy", &[&s.uri, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let opts = s.qemu_opts();
    let out = run_ok(
        "qemu-io",
        &[
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x5a 4M 64k",
            "-c",
            "read -P 0x5a 4M 64k",
        ],
    );
    assert!(!out.contains("fail"), "{out}");
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][2], "0", "{map}");
    assert!(rows.iter().any(|r| r[2] == "3"), "{map}");
}

const ALL_CALLBACKS: &str = r#"
fn config(p) { print("cb config"); #{ d: disk(1048576) } }
fn open(state, readonly) { print(`cb open readonly=${readonly}`); state }
fn close(h) { print("cb close") }
fn get_size(h) { print("cb get_size"); h.d.size() }
fn can_write(h) { print("cb can_write"); true }
fn can_flush(h) { print("cb can_flush"); true }
fn can_trim(h) { print("cb can_trim"); true }
fn can_zero(h) { print("cb can_zero"); true }
fn can_fast_zero(h) { print("cb can_fast_zero"); true }
fn can_extents(h) { print("cb can_extents"); true }
fn can_fua(h) { print("cb can_fua"); "native" }
fn can_multi_conn(h) { print("cb can_multi_conn"); true }
fn can_cache(h) { print("cb can_cache"); "native" }
fn is_rotational(h) { print("cb is_rotational"); true }
fn block_size(h) { print("cb block_size"); [1, 4096, 1048576] }
fn export_description(h) { print("cb export_description"); "a script disk" }
fn pread(h, count, offset, flags) { print("cb pread"); h.d.pread(count, offset) }
fn pwrite(h, buf, offset, flags) { print(`cb pwrite fua=${(flags & nbd::FUA) != 0}`); h.d.pwrite(buf, offset) }
fn flush(h, flags) { print("cb flush"); }
fn trim(h, count, offset, flags) { print("cb trim"); h.d.trim(count, offset) }
fn zero(h, count, offset, flags) { print(`cb zero may_trim=${(flags & nbd::MAY_TRIM) != 0}`); h.d.zero(count, offset) }
fn extents(h, count, offset, flags) { print("cb extents"); h.d.extents(count, offset) }
fn cache(h, count, offset, flags) { print("cb cache"); }
"#;

#[test]
fn every_callback_is_reached_by_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.rhai");
    std::fs::write(&path, ALL_CALLBACKS).unwrap();
    let p = path.to_str().unwrap();
    let s = Server::start(&["-v", "--no-watch", p]);
    let info = run_ok("nbdinfo", &["--json", &s.uri]);
    for want in [
        "\"a script disk\"",
        "\"is_rotational\": true",
        "\"can_multi_conn\": true",
        "\"block_size_preferred\": 4096",
    ] {
        assert!(info.contains(want), "{want} in {info}");
    }
    s.nbdsh(
        r#"
h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA)
assert h.pread(512, 0) == b"x" * 512
h.flush()
h.trim(512, 0)
h.zero(512, 512)
h.cache(512, 0)
"#,
    );
    run_ok("nbdinfo", &["--map", &s.uri]);
    let (_, err) = s.stop();
    for cb in [
        "config",
        "open readonly=false",
        "close",
        "get_size",
        "can_write",
        "can_flush",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_extents",
        "can_fua",
        "can_multi_conn",
        "can_cache",
        "is_rotational",
        "block_size",
        "export_description",
        "pread",
        "pwrite fua=true",
        "flush",
        "trim",
        "zero may_trim=true",
        "extents",
        "cache",
    ] {
        assert!(
            err.contains(&format!("cb {cb}")),
            "callback {cb} not reached:\n{err}"
        );
    }
    assert_eq!(
        err.matches("cb config").count(),
        1,
        "config runs once per process"
    );
}

#[test]
fn shebang_script_runs_directly_and_stdin_script() {
    let bin_dir = Path::new(bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), sys_path());
    let out = Command::new(example("pattern.rhai"))
        .env("PATH", &path)
        .args(["-U", "-", "size=64k", "--run", "nbdcopy \"$uri\" -"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 65536);
    for n in [0u64, 1, 77, 127] {
        let s = &out.stdout[(n * 512) as usize..(n * 512 + 512) as usize];
        assert_eq!(&s[..8], &n.to_be_bytes());
        assert!(s[8..].iter().all(|b| *b == n as u8));
    }
    let mut child = nbdscript()
        .env("PATH", sys_path())
        .args(["-", "size=4k", "--run", "nbdcopy \"$uri\" -"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"#!/usr/bin/env nbdscript\nfn get_size(h) { h.size }\nfn pread(h, c, o) { pattern(c, \"ab\".to_blob()) }\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ab".repeat(2048));
}

#[test]
fn errors_give_the_errno_and_keep_the_connection() {
    let s = Server::start(&[&example("flaky.rhai"), "every=3", "errno=ENOSPC"]);
    s.nbdsh(
        r#"
import errno
h.pwrite(b"a" * 512, 0)
h.pwrite(b"b" * 512, 512)
try:
    h.pwrite(b"c" * 512, 1024)
    assert False, "third write should fail"
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
h.pwrite(b"d" * 512, 1536)
assert h.pread(2048, 0) == b"a" * 512 + b"b" * 512 + bytes(512) + b"d" * 512
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.rhai");
    std::fs::write(
        &path,
        "fn get_size(h) { 1048576 }\nfn pread(h, count, offset) {\n  if offset == 0 { let x = [1][5]; }\n  if offset == 512 { loop {} }\n  blob(count)\n}\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let s = Server::start(&["--max-operations", "100000", p]);
    s.nbdsh(
        r#"
import errno
for off in (0, 512):
    try:
        h.pread(512, off)
        assert False
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
assert h.pread(512, 1024) == bytes(512)
"#,
    );
    let (_, err) = s.stop();
    assert!(
        err.contains("bad.rhai:3:"),
        "file:line:col in the log:\n{err}"
    );
    assert!(err.contains("too many operations"), "{err}");
}

#[test]
fn mbr_example_has_a_partition_table() {
    let s = Server::start(&[&example("mbr.rhai")]);
    let b = read_all(&s.uri);
    assert_eq!(b.len(), 4 << 20);
    assert_eq!(&b[510..512], &[0x55, 0xAA]);
    assert_eq!(b[446 + 4], 0x83);
    assert_eq!(u32::from_le_bytes(b[454..458].try_into().unwrap()), 2048);
    assert_eq!(
        u32::from_le_bytes(b[458..462].try_into().unwrap()),
        8192 - 2048
    );
    assert_eq!(&b[2048 * 512..2048 * 512 + 15], b"hello partition");
}

/// Reads `expect` at offset 0 (polling until the reload shows it, at most
/// 5 s) and checks the bytes written at 4096 survived; prints the delay.
const DRIVER: &str = r#"
import sys, time
h.pwrite(b"keep", 4096)
for line in sys.stdin:
    cmd, arg = line.split()
    t = time.time()
    if cmd == "expect":
        while h.pread(4, 0) != arg.encode():
            if time.time() - t > 5:
                print("timeout", h.pread(4, 0), flush=True); sys.exit(1)
    elif cmd == "still":
        assert h.pread(4, 0) == arg.encode(), h.pread(4, 0)
    assert h.pread(4, 4096) == b"keep"
    print("ok %.1f" % ((time.time() - t) * 1000), flush=True)
"#;

#[test]
fn live_reload_on_one_connection_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.rhai");
    let v = |word: &str| {
        format!(
            "fn config(p) {{ #{{ d: disk(65536) }} }}\nfn get_size(h) {{ h.d.size() }}\nfn pwrite(h, b, o) {{ h.d.pwrite(b, o) }}\n\
             fn pread(h, c, o) {{\n  if o < 4096 {{ return pattern(c, \"{word}\".to_blob()) }}\n  h.d.pread(c, o)\n}}\n"
        )
    };
    std::fs::write(&path, v("AAAA")).unwrap();
    let s = LiveServer::start(&["-v", path.to_str().unwrap()]);
    let mut c = Client::start(&s.uri, DRIVER);
    c.step("still AAAA");
    let mut delays = Vec::new();
    std::fs::write(&path, v("BBBB")).unwrap();
    delays.push(c.step("expect BBBB"));
    // A syntax error is refused with file:line:col; the old code keeps serving.
    std::fs::write(
        &path,
        v("CCCC").replace("return pattern", "return +* pattern"),
    )
    .unwrap();
    let l = s.wait_log("refused");
    let _ = l;
    c.step("still BBBB");
    std::fs::write(&path, v("DDDD")).unwrap();
    delays.push(c.step("expect DDDD"));
    eprintln!("reload delays (ms, write to new bytes seen): {delays:?}");
    let _ = s;
}

#[test]
fn refused_reload_logs_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rhai");
    std::fs::write(
        &path,
        "fn get_size(h) { 512 }\nfn pread(h, c, o) { blob(c, 1) }\n",
    )
    .unwrap();
    let s = LiveServer::start(&[path.to_str().unwrap()]);
    std::fs::write(
        &path,
        "fn get_size(h) { 512 }\n\nfn pread(h, c, o) { blob(c, 2) +* }\n",
    )
    .unwrap();
    let l = s.wait_log("r.rhai:3:");
    assert!(l.contains("syntax error"), "{l}");
    assert_eq!(read_all(&s.uri), vec![1u8; 512]);
}

#[test]
fn example_filters() {
    let corrupt = example("corrupt.rhai");
    let s = Server::start(&[
        "--filter",
        &corrupt,
        "memory",
        "size=64k",
        "corrupt-offset=100",
        "corrupt-length=10",
        "corrupt-byte=7",
    ]);
    s.nbdsh(
        r#"
h.pwrite(b"\x01" * 4096, 0)
b = h.pread(4096, 0)
assert b[:100] == b"\x01" * 100 and b[100:110] == b"\x07" * 10 and b[110:] == b"\x01" * 3986, b[90:120]
assert h.pread(5, 105) == b"\x07" * 5
"#,
    );
    let bigger = example("bigger.rhai");
    let s = Server::start(&["--filter", &bigger, "memory", "size=64k", "bigger-size=1M"]);
    let out = run_ok("nbdinfo", &["--size", &s.uri]);
    assert_eq!(out.trim(), "1048576");
    s.nbdsh(
        r#"
import errno
h.pwrite(b"\x09" * 8192, 65536 - 4096 - 4096)
assert h.pread(8192, 65536 - 4096) == b"\x09" * 4096 + bytes(4096)
try:
    h.pwrite(b"\x01", 70000)
    assert False
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
h.pwrite(bytes(512), 70000)
"#,
    );
    let map = run_ok("nbdinfo", &["--map", &s.uri]);
    assert!(map.lines().last().unwrap().contains("hole"), "{map}");
    let count = example("count.rhai");
    let s = Server::start(&["-v", "--filter", &count, "memory", "size=64k"]);
    s.nbdsh("h.pread(512, 0)\nh.pread(512, 0)\nh.pwrite(b'x', 0)\nh.flush()\n");
    let (_, err) = s.stop();
    assert!(
        err.contains("count: reads=2 writes=1 zeros=0 trims=0 flushes=1"),
        "{err}"
    );
}

#[test]
fn filter_reloads_live_too() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("f.rhai");
    let v = |word: &str| {
        format!("fn pread(next, h, c, o) {{ if o < 4096 {{ pattern(c, \"{word}\".to_blob()) }} else {{ next.pread(c, o) }} }}\n")
    };
    std::fs::write(&path, v("AAAA")).unwrap();
    let s = LiveServer::start(&["--filter", path.to_str().unwrap(), "memory", "size=64k"]);
    let mut c = Client::start(&s.uri, DRIVER);
    c.step("still AAAA");
    std::fs::write(&path, v("BBBB")).unwrap();
    c.step("expect BBBB");
}

/// `data()` in a script gives the data plugin's bytes; `data_disk()` is lazy
/// (8 GiB without the RAM); `<FILE` is refused unless `--allow-files`.
#[test]
fn data_in_scripts_matches_the_data_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let pat = r#"( 0x55 0xAA )*100 @300 "hello" le32:0x01020304 ( 1 2 3 )*5[2:9] @^512"#;
    let script = dir.path().join("d.rhai");
    std::fs::write(
        &script,
        format!(
            "fn config(p) {{ #{{ b: data({pat:?}) }} }}\nfn get_size(h) {{ h.b.len() }}\nfn pread(h, count, offset) {{ h.b.extract(offset, count) }}\n"
        ),
    )
    .unwrap();
    let ours = nbdscript_bytes(&[script.to_str().unwrap()]).unwrap();
    let theirs = nbdkit_bytes(&["data", pat]).unwrap();
    assert_eq!(ours.len(), 512);
    assert_eq!(ours, theirs);

    let lazy = dir.path().join("lazy.rhai");
    std::fs::write(
        &lazy,
        "fn config(p) { #{ d: data_disk(\"( 0x55 0xAA )*4294967296\") } }\nfn get_size(h) { h.d.size() }\nfn pread(h, count, offset) { h.d.pread(count, offset) }\n",
    )
    .unwrap();
    let s = Server::start(&[lazy.to_str().unwrap()]);
    let out = s.nbdsh("print(h.get_size()); print(h.pread(4, (8 << 30) - 4).hex())");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["8589934592", "55aa55aa"]
    );

    let file = dir.path().join("f.bin");
    std::fs::write(&file, b"xyz").unwrap();
    let sf = dir.path().join("f.rhai");
    std::fs::write(
        &sf,
        format!(
            "fn config(p) {{ #{{ b: data(\"<{}\") }} }}\nfn get_size(h) {{ h.b.len() }}\nfn pread(h, count, offset) {{ h.b.extract(offset, count) }}\n",
            file.display()
        ),
    )
    .unwrap();
    let refused = nbdscript()
        .args([sf.to_str().unwrap(), "--hexdump"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("allow"), "{err}");
    let allowed = nbdscript()
        .args([sf.to_str().unwrap(), "--allow-files", "--hexdump"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&allowed.stdout).contains("|xyz|"),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}
