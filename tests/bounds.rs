//! Requests bounded whatever their length (issue 12): 2^62-byte zero,
//! trim, cache and block status over extended headers answer promptly
//! (or fail with EIO at the time budget when they must be emulated), other
//! connections are served meanwhile, RSS stays small, `--hexdump` of a 7E
//! hole is instant, and SIGTERM ends the process within the grace period.

use crate::common::*;
use crate::protocol::raw;
use std::time::{Duration, Instant};

/// Python for the raw client (after `protocol::RAW`): `conn()` opens an
/// extended-headers connection with `base:allocation`; `huge(cmd, flags)`
/// sends one 2^62-byte request and, while it runs, a write+read on a
/// second connection; it returns (seconds, reply chunks, seconds the
/// other connection took, whether it finished before the huge reply).
const HUGE: &str = r#"
import time, threading
def conn():
    c = C(); assert c.last(11) == (11, 1)
    c.opt(10, struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation"); c.reps(); c.go()
    return c
def huge(cmd, flags=0, ln=1 << 62):
    c = conn(); d = conn(); other = {}
    def side():
        t = time.time()
        d.req(1, 8192, 4096, 2, data=b"q" * 4096, ext=True); assert types(d.chunks()) == [0]
        d.req(0, 8192, 4096, 3, ext=True); cs = d.chunks()
        assert cs[0]["data"][8:] == b"q" * 4096, cs
        other["t"] = time.time() - t; other["at"] = time.time()
    t0 = time.time()
    c.req(cmd, 0, ln, 1, flags=flags, ext=True)
    time.sleep(0.2)  # the huge request is running
    th = threading.Thread(target=side); th.start()
    cs = c.chunks(); done = time.time(); th.join()
    return done - t0, cs, other["t"], other["at"] <= done
def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"): return int(l.split()[1]) // 1024
"#;

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

/// A script RAM disk of 7E with pwrite and no zero (nor extents).
const DISK_NO_ZERO: &str = r#"
fn config(params) { #{ disk: disk("7E") } }
fn get_size(h) { h.disk.size() }
fn pread(h, count, offset, flags) { h.disk.pread(count, offset) }
fn pwrite(h, buf, offset, flags) { h.disk.pwrite(buf, offset) }
"#;

#[test]
fn emulated_zero_runs_in_chunks_and_stops_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(dir.path(), "nozero.rhai", DISK_NO_ZERO);
    let s = Server::start(&["--script-timeout=2000", &p]);
    let pid = s.child.id();
    let out = raw(
        &s,
        &format!(
            r#"{HUGE}
t, cs, other, first = huge(6)
assert errs(cs) == [5], cs                      # EIO
assert 1.5 < t < 6, t                          # the 2 s budget, not minutes
assert first and other < 1.5, (other, first)   # the lock is released between chunks
assert rss({pid}) < 200, rss({pid})
# the connection and the server go on
c = conn(); c.req(0, 8192, 8, 9, ext=True); assert c.chunks()[0]["data"][8:] == b"q" * 8
print("zero", round(t, 2), "other", round(other, 3))
"#
        ),
    );
    assert!(out.contains("zero"), "{out}");
    let (_, err) = s.stop();
    assert!(
        err.contains("write zeroes (emulated with pwrite: the plugin has no zero): stopped after ")
            && err.contains("the request ran past its time limit of 2s (--script-timeout)"),
        "{err}"
    );
}

#[test]
fn emulated_zero_skips_what_reads_as_zeros() {
    // With extents, the emulation writes only where there is data.
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{DISK_NO_ZERO}\nfn extents(h, count, offset, flags) {{ h.disk.extents(count, offset) }}\n"
    );
    let p = script(dir.path(), "ext.rhai", &body);
    let s = Server::start(&[&p]);
    raw(
        &s,
        &format!(
            r#"{HUGE}
c = conn()
c.req(1, 3 << 40, 8, 1, data=b"abcdefgh", ext=True); assert types(c.chunks()) == [0]
t, cs, other, first = huge(6)
assert types(cs) == [0] and t < 3, (t, cs)
c.req(0, 3 << 40, 8, 2, ext=True); assert c.chunks()[0]["data"][8:] == bytes(8)
"#
        ),
    );
}

#[test]
fn cow_over_a_7e_null_answers_huge_requests_promptly() {
    let s = Server::start(&["--filter=cow", "null", "size=7E"]);
    let pid = s.child.id();
    raw(
        &s,
        &format!(
            r#"{HUGE}
for cmd in (6, 4, 5):   # zero, trim, cache
    t, cs, other, first = huge(cmd)
    assert types(cs) == [0] and t < 3, (cmd, t, cs)
    assert other < 3, other
c = conn()
# data at a few far-apart places, then zero a huge range over some of it
for i, off in enumerate((0, 1 << 40, 5 << 50, 3 << 60)):
    c.req(1, off + 100, 4, 10 + i, data=b"data", ext=True); assert types(c.chunks()) == [0]
c.req(6, 1 << 39, 1 << 51, 20, ext=True); assert types(c.chunks()) == [0]
c.req(0, (1 << 40) + 100, 4, 21, ext=True); assert c.chunks()[0]["data"][8:] == bytes(4)
c.req(0, (3 << 60) + 100, 4, 22, ext=True); assert c.chunks()[0]["data"][8:] == b"data"
# block status of 2^62 without REQ_ONE: one prompt reply describing a prefix
t = time.time(); c.req(7, 0, 1 << 62, 23, ext=True); cs = c.chunks(); t = time.time() - t
assert types(cs) == [6] and t < 3, (t, cs)
d = cs[0]["data"]; n = struct.unpack(">I", d[4:8])[0]
e = [struct.unpack(">QQ", d[8 + 16 * i:24 + 16 * i]) for i in range(n)]
assert e[0][1] == 0 and e[0][0] <= 65536 and e[1][1] == 3, e   # the written block, then zeros
assert 0 < sum(l for l, _ in e) <= 1 << 62, e
# with REQ_ONE: zeros (the huge zero, then trim) up to the next data
c.req(7, 1 << 39, 1 << 62, 24, flags=8, ext=True); cs = c.chunks(); d = cs[0]["data"]
assert struct.unpack(">IIQQ", d[:24]) == (1, 1, (5 << 50) - (1 << 39), 3), d
assert rss({pid}) < 200, rss({pid})
"#
        ),
    );
}

#[test]
fn blocksize_cow_offset_over_a_7e_memory_disk() {
    let s = Server::start(&[
        "--filter=blocksize",
        "--filter=cow",
        "--filter=offset",
        "memory",
        "7E",
        "offset=1M",
    ]);
    let pid = s.child.id();
    raw(
        &s,
        &format!(
            r#"{HUGE}
c = conn()
c.req(1, 1 << 50, 4, 1, data=b"abcd", ext=True); assert types(c.chunks()) == [0]
for cmd in (6, 4, 5):
    t, cs, other, first = huge(cmd)
    assert types(cs) == [0] and t < 3, (cmd, t, cs)
c.req(0, 1 << 50, 4, 2, ext=True); assert c.chunks()[0]["data"][8:] == bytes(4)
t = time.time(); c.req(7, 0, 1 << 62, 3, ext=True); cs = c.chunks(); t = time.time() - t
assert types(cs) == [6] and t < 3, (t, cs)
assert rss({pid}) < 200, rss({pid})
"#
        ),
    );
}

#[test]
fn hexdump_of_7e_skips_holes() {
    for args in [&["null", "7E"][..], &["memory", "7E"][..]] {
        let t = Instant::now();
        let out = run(bin(), &[args, &["--hexdump"]].concat());
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{args:?}: {:?}",
            t.elapsed()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             7000000000000000\n"
        );
    }
    // Data among zeros prints as hexdump -C would print the bytes.
    let out = run_ok(
        bin(),
        &["data", "@0x100000000 \"hello\" @0x300000000 1", "--hexdump"],
    );
    assert_eq!(
        out,
        "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         *\n\
         100000000  68 65 6c 6c 6f 00 00 00  00 00 00 00 00 00 00 00  |hello...........|\n\
         100000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         *\n\
         300000000  01                                                |.|\n\
         300000001\n"
    );
}

/// Send SIGTERM to `s` and return how long it took to exit, and stderr.
fn term_and_time(mut s: Server) -> (Duration, Option<i32>, String) {
    let t = Instant::now();
    sh(&format!("kill -TERM {}", s.child.id()));
    let deadline = t + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            break st.code();
        }
        if Instant::now() > deadline {
            panic!("still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let el = t.elapsed();
    let err = s
        .stderr
        .take()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    (el, code, err)
}

#[test]
fn sigterm_during_a_huge_emulated_zero() {
    // No time budget: only shutdown stops the emulation.
    let dir = tempfile::tempdir().unwrap();
    let p = script(dir.path(), "nozero.rhai", DISK_NO_ZERO);
    let log = dir.path().join("log.txt");
    let logfile = format!("logfile={}", log.display());
    let s = Server::start(&["--script-timeout=0", &p, "--filter=log", &logfile]);
    let sock = s.sock.clone();
    let client = std::thread::spawn(move || {
        let prog = format!(
            "{}\n{HUGE}\nc = conn(); c.req(6, 0, 1 << 62, 1, ext=True)\ntry:\n    cs = c.chunks(); print('reply', errs(cs))\nexcept Exception as e:\n    print('closed', e)\n",
            crate::protocol::RAW
        );
        run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()])
    });
    // The zero is running: its first pwrite of zeros reached the plugin.
    wait_file_for(&log, "...Write id=1 return=0", 20);
    let (el, code, err) = term_and_time(s);
    assert!(el < Duration::from_secs(12), "exit took {el:?}");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("stopped after") && err.contains("the server is shutting down"),
        "{err}"
    );
    let out = client.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reply [108]"),
        "ESHUTDOWN: {stdout} {out:?}"
    );
}

#[test]
fn sigterm_with_a_wedged_request_exits_after_the_grace() {
    // A write that never returns (a script loop with no budget): the
    // process still exits 11 s after SIGTERM (the 10 s grace, then a
    // second for connections closed at the grace).
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "wedge.rhai",
        "fn get_size(h) { 1048576 }\nfn pread(h, count, offset) { blob(count) }\n\
         fn pwrite(h, buf, offset) { let i = 0; loop { i += 1; } }\n",
    );
    let log = dir.path().join("log.txt");
    let logfile = format!("logfile={}", log.display());
    let s = Server::start(&[
        "--script-timeout=0",
        "--max-operations=0",
        &p,
        "--filter=log",
        &logfile,
    ]);
    let sock = s.sock.clone();
    let _client = std::thread::spawn(move || {
        let prog = format!(
            "{}\n{HUGE}\nc = conn(); c.req(1, 0, 4, 1, data=b'abcd', ext=True)\ntry: c.chunks()\nexcept Exception: pass\n",
            crate::protocol::RAW
        );
        run("/usr/bin/python3", &["-c", &prog, sock.to_str().unwrap()])
    });
    // The write is in the plugin (the log filter logs it on the way in).
    wait_file_for(&log, "Write id=1 offset=0x0 count=0x4", 20);
    let (el, code, err) = term_and_time(s);
    assert!(
        el >= Duration::from_secs(10) && el < Duration::from_secs(12),
        "exit took {el:?}"
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("shutdown: requests still running after the 10s grace; exiting anyway"),
        "{err}"
    );
}
