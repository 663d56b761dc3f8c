//! The script call path: the cost of one call into a Rhai plugin or filter
//! through the `Backend` trait (what the server does per request).
//! `cargo bench --bench script` (harness = false: prints ns per call).

use nbdscript::backend::Backend;
use nbdscript::params::Params;
use nbdscript::script::{load_filter_from, load_plugin_from, ScriptOptions, ScriptSource};
use std::sync::Arc;
use std::time::Instant;

fn src(name: &str, text: &str) -> ScriptSource {
    ScriptSource::Text {
        name: name.into(),
        text: text.into(),
    }
}

fn bench(label: &str, iters: u32, mut f: impl FnMut()) {
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        if !label.contains(&only) {
            return;
        }
    }
    for _ in 0..iters / 10 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    println!("{label:<55} {best:>10.0} ns/call");
}

fn main() {
    let opts = ScriptOptions {
        watch: false,
        ..ScriptOptions::default()
    };
    let ramdisk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ramdisk.rhai"
    ))
    .expect("examples/ramdisk.rhai");
    let p = load_plugin_from(
        &src("ramdisk.rhai", &ramdisk),
        &Params::new(vec![("size".into(), "64M".into())]),
        &opts,
    )
    .expect("load ramdisk");
    let c = p.open(false, "").expect("open");
    c.pwrite_owned(vec![1u8; 1 << 20], 0, 0).expect("fill");
    bench("plugin get_size (trivial call)", 200_000, || {
        c.get_size().unwrap();
    });
    for size in [4096u32, 65536] {
        bench(&format!("ramdisk.rhai pread_owned {size}"), 50_000, || {
            let b = c.pread_owned(size, 8192, 0).unwrap();
            assert_eq!(b.len(), size as usize);
        });
        let buf = vec![7u8; size as usize];
        bench(
            &format!("ramdisk.rhai pwrite_owned {size} (incl. buffer alloc)"),
            50_000,
            || {
                c.pwrite_owned(buf.clone(), 8192, 0).unwrap();
            },
        );
    }
    // The same RAM disk copying the received buffer (no take(buf)).
    let copied = ramdisk.replace(
        "h.disk.pwrite(take(buf), offset)",
        "h.disk.pwrite(buf, offset)",
    );
    assert!(copied != ramdisk);
    let p2 = load_plugin_from(
        &src("ramdisk-copy.rhai", &copied),
        &Params::new(vec![("size".into(), "64M".into())]),
        &opts,
    )
    .expect("load ramdisk-copy");
    let c2 = p2.open(false, "").expect("open");
    for size in [4096u32, 65536] {
        let buf = vec![7u8; size as usize];
        bench(
            &format!("ramdisk.rhai without take(buf) pwrite_owned {size}"),
            50_000,
            || {
                c2.pwrite_owned(buf.clone(), 8192, 0).unwrap();
            },
        );
    }
    let mem = nbdscript::plugins::find("memory").unwrap();
    let m = (mem.make)(&Params::new(vec![("size".into(), "64M".into())])).unwrap();
    let mc = m.open(false, "").unwrap();
    for size in [4096u32, 65536] {
        bench(
            &format!("native memory pread_owned {size} (baseline)"),
            50_000,
            || {
                mc.pread_owned(size, 8192, 0).unwrap();
            },
        );
    }
    let f = load_filter_from(
        &src(
            "pass.rhai",
            "fn thread_model() { \"parallel\" }\nfn pread(next, h, count, offset, flags) { next.pread(count, offset, flags) }\n",
        ),
        &Params::default(),
        &opts,
    )
    .expect("load filter");
    let fc: Arc<dyn Backend> = f.open(mc.clone(), false).unwrap();
    for size in [4096u32, 65536] {
        bench(
            &format!("pass-through filter pread over memory {size}"),
            50_000,
            || {
                fc.pread_owned(size, 8192, 0).unwrap();
            },
        );
    }
}
