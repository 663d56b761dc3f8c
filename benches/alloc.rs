//! Micro-benchmark of the allocators: 4 KiB random reads and writes from one
//! and two threads over a 256 MiB disk, printed as operations per second.
//! Run with `cargo bench --bench alloc` (ALLOC_BENCH_SECS sets the time per row,
//! ALLOC_BENCH_FILL=zero fills with half-zero blocks, ALLOC_BENCH_IDLE=S
//! waits S seconds after the fill, ALLOC_BENCH_OPS=read|write runs only
//! those rows).

use nbdscript::alloc::{AllocSpec, Allocator};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: u64 = 256 << 20;
const BS: usize = 4096;

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A block that compresses about 2:1: half random bytes, then half text
/// (or, with ALLOC_BENCH_FILL=zero, half zeros: scripts/bench's
/// "compressible" fill).
fn block(seed: u64) -> Vec<u8> {
    let zero = std::env::var("ALLOC_BENCH_FILL").is_ok_and(|f| f == "zero");
    // (scrambled there: xorshift's first outputs from a small seed compress)
    let mut s = if zero {
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
    } else {
        seed | 1
    };
    (0..BS)
        .map(|i| {
            if i < BS / 2 {
                rng(&mut s) as u8
            } else if zero {
                0
            } else {
                b"the quick brown fox jumps over the lazy dog "[i % 44]
            }
        })
        .collect()
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// (ops/s, CPU ns per op): the second shows contention even when the
/// machine is too busy for two threads to run at once.
fn run(a: &Arc<dyn Allocator>, threads: u64, write: bool, secs: f64) -> (f64, f64) {
    let dur = Duration::from_secs_f64(secs);
    let (ops, cpu): (u64, u64) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let a = a.clone();
                s.spawn(move || {
                    let mut st = 0x1234_5678 + t * 7919;
                    let data = block(t + 1);
                    let mut buf = vec![0u8; BS];
                    let start = Instant::now();
                    let cpu0 = thread_cpu_ns();
                    let mut n = 0u64;
                    while !n.is_multiple_of(64) || start.elapsed() < dur {
                        let off = (rng(&mut st) % (SIZE / BS as u64)) * BS as u64;
                        if write {
                            a.write(&data, off).expect("write");
                        } else {
                            a.read(&mut buf, off).expect("read");
                        }
                        n += 1;
                    }
                    (n, thread_cpu_ns() - cpu0)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("thread"))
            .fold((0, 0), |(a, b), (n, c)| (a + n, b + c))
    });
    (ops as f64 / secs, cpu as f64 / ops.max(1) as f64)
}

fn main() {
    let secs: f64 = std::env::var("ALLOC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if let Ok(path) = std::env::var("ALLOC_BENCH_FILE") {
        return store_file(&path, filter.as_deref().unwrap_or("zstd"));
    }
    println!("allocator  op      threads        ops/s  cpu-ns/op");
    for name in ["sparse", "malloc", "zstd"] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let a = AllocSpec::parse(name)
            .expect("spec")
            .create(SIZE)
            .expect("create");
        // Fill the whole disk first so reads hit stored data.
        let fill: Vec<u8> = (0..256).flat_map(|k| block(k + 1000)).collect();
        let mut off = 0;
        while off < SIZE {
            a.write(&fill, off).expect("fill");
            off += fill.len() as u64;
        }
        // ALLOC_BENCH_IDLE=S: let the zstd compactor finish (as between
        // scripts/bench's prefill and its reads) before reading.
        if let Some(s) = std::env::var("ALLOC_BENCH_IDLE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            std::thread::sleep(Duration::from_secs_f64(s));
        }
        // ALLOC_BENCH_OPS=read|write: only those rows.
        let ops = std::env::var("ALLOC_BENCH_OPS").unwrap_or_default();
        for write in [false, true] {
            if (write && ops == "read") || (!write && ops == "write") {
                continue;
            }
            for threads in [1, 2] {
                let (r, ns) = run(&a, threads, write, secs);
                let op = if write { "write" } else { "read" };
                println!("{name:<10} 4k-{op:<5} {threads:>2}  {r:>12.0}  {ns:>9.0}");
            }
        }
        println!("           {}", a.stats());
    }
}

fn rss_mib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// ALLOC_BENCH_FILE=PATH: write PATH into a 1 GiB disk of this allocator in
/// 256 KiB requests; print time, stats and RSS, then again once idle.
fn store_file(path: &str, name: &str) {
    let data = std::fs::read(path).expect("read ALLOC_BENCH_FILE");
    let a = AllocSpec::parse(name)
        .expect("spec")
        .create(1 << 30)
        .expect("create");
    let t = Instant::now();
    for (i, c) in data.chunks(256 << 10).enumerate() {
        a.write(c, (i as u64) << 18).expect("write");
    }
    println!(
        "{name}: wrote {} MiB in {:.2?}",
        data.len() >> 20,
        t.elapsed()
    );
    println!(
        "  {}  (RSS {} MiB, peak {} MiB, file included)",
        a.stats(),
        rss_mib("VmRSS"),
        rss_mib("VmHWM")
    );
    std::thread::sleep(Duration::from_secs(3));
    println!("  idle: {}  (RSS {} MiB)", a.stats(), rss_mib("VmRSS"));
}
