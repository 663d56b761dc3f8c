//! Data-string benchmark (`cargo bench --bench datastr`): evaluation time
//! of large data strings in-process (`datastr::compile`), and start-up of
//! `nbdkit data ... --run true` against `nbdscript data ... --run true`
//! on the same strings. Large expressions are passed as `$VAR`
//! parameters of under 128 KiB each (the kernel's limit per argument).

use nbdscript::datastr::{self, EvalOptions};
use std::process::Command;
use std::time::{Duration, Instant};

/// A named workload: the top string and its `$VAR` chunks.
struct Work {
    name: &'static str,
    data: String,
    vars: Vec<(String, String)>,
}

/// Split a long space-separated expression into `$vN` chunks.
fn chunked(name: &'static str, items: &[String]) -> Work {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut cur = String::new();
    for it in items {
        if cur.len() + it.len() + 1 > 100_000 {
            vars.push((format!("v{}", vars.len()), std::mem::take(&mut cur)));
        }
        cur.push_str(it);
        cur.push(' ');
    }
    if !cur.is_empty() {
        vars.push((format!("v{}", vars.len()), cur));
    }
    let data = vars
        .iter()
        .map(|(k, _)| format!("${k}"))
        .collect::<Vec<_>>()
        .join(" ");
    Work { name, data, vars }
}

fn workloads() -> Vec<Work> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // ~1.5 MB of plain bytes.
    let bytes: Vec<String> = (0..300_000)
        .map(|_| format!("0x{:02x}", rnd() as u8))
        .collect();
    // ~1.5 MB of mixed constructs.
    let mixed: Vec<String> = (0..100_000)
        .map(|i| match i % 6 {
            0 => format!("\"str{i}\\x41\""),
            1 => format!("le32:{:#x} be16:{}", rnd() as u32, rnd() as u16),
            2 => format!("@+{} {}", rnd() % 64, rnd() as u8),
            3 => format!("( {} {} @^8 )*{}", rnd() as u8, rnd() as u8, 1 + rnd() % 4),
            4 => format!("\"abcdefgh\"[{}:]", rnd() % 8),
            _ => "@^16 0xff*7".to_string(),
        })
        .collect();
    let deep = 3000;
    vec![
        chunked("1.5 MB of bytes", &bytes),
        chunked("1.5 MB mixed constructs", &mixed),
        Work {
            name: "nesting depth 3000 with offsets",
            data: format!("{}9{}", "(@1 ".repeat(deep), ")".repeat(deep)),
            vars: vec![],
        },
        Work {
            name: "nesting depth 3000 of repeats",
            data: format!("{}1 2{}", "(".repeat(deep), ")*1".repeat(deep)),
            vars: vec![],
        },
        Work {
            name: "8 MiB repeat (0x55 0xAA)*4M",
            data: "( 0x55 0xAA )*4194304".into(),
            vars: vec![],
        },
        Work {
            name: "256 MiB repeat of a 4 KiB group",
            data: "( \"sector\" @^512 le64:42 @^4096 )*65536".into(),
            vars: vec![],
        },
    ]
}

fn time_eval(w: &Work) -> (Duration, u64) {
    let opts = EvalOptions {
        allow_files: false,
        vars: w.vars.clone(),
        use_env: false,
    };
    let mut best = Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let p = datastr::compile(&w.data, &opts).expect("compile");
        best = best.min(t.elapsed());
        size = p.size();
    }
    (best, size)
}

fn time_server(prog: &str, pre: &[&str], w: &Work) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(prog)
            .args(pre)
            .arg("data")
            .arg(format!("data={}", w.data))
            .args(w.vars.iter().map(|(k, v)| format!("{k}={v}")))
            .arg("--run")
            .arg("true")
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "  {prog} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            return None;
        }
        let d = t.elapsed();
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    best
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:9.1} ms", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "    failed".into())
}

fn main() {
    let ours = env!("CARGO_BIN_EXE_nbdscript");
    println!(
        "{:34} {:>10} {:>12} {:>12} {:>12}",
        "workload (best of runs)", "expr size", "eval", "nbdscript", "nbdkit"
    );
    for w in workloads() {
        let expr = w.data.len() + w.vars.iter().map(|(_, v)| v.len()).sum::<usize>();
        let (eval, size) = time_eval(&w);
        let us = time_server(ours, &[], &w);
        let them = time_server("nbdkit", &["-U", "-"], &w);
        println!(
            "{:34} {:>10} {} {} {}   (disk {} bytes)",
            w.name,
            expr,
            ms(Some(eval)),
            ms(us),
            ms(them),
            size
        );
    }
}
