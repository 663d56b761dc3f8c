//! Differential tests of the data-string language and the `data` plugin:
//! a corpus of accepted strings compared byte for byte (and size) with
//! nbdkit 1.32's data plugin, both in-process (`datastr::evaluate_to_vec`)
//! and through the real binary; a corpus of strings nbdkit rejects, which
//! we must reject with a message naming the problem; and the 1.36/1.44
//! additions (overflow rejection, `@4k` suffixes) checked by reasoning.
//! This module owns the `Case` harness (one string through nbdkit, the
//! binary, or in-process); each kind of check is a submodule.

use crate::common::{self, sys_path};
use nbdscript::datastr::{self, EvalOptions};
use std::process::Command;

mod corpus;
mod random;
mod served;
mod sizes;

/// One case: the `data=` string, extra `KEY=VALUE` parameters (`size=`,
/// `$VAR`s) and environment variables.
struct Case {
    data: String,
    params: Vec<String>,
    env: Vec<(String, String)>,
}

fn case(d: &str) -> Case {
    Case {
        data: d.to_string(),
        params: vec![],
        env: vec![],
    }
}

fn with(d: &str, params: &[&str]) -> Case {
    Case {
        params: params.iter().map(|s| s.to_string()).collect(),
        ..case(d)
    }
}

fn with_env(d: &str, params: &[&str], env: &[(&str, &str)]) -> Case {
    Case {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..with(d, params)
    }
}

/// Run `prog [pre...] data=D PARAMS... --run 'nbdcopy "$uri" -'`.
fn run(prog: &str, pre: &[&str], c: &Case) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(prog);
    cmd.env("PATH", sys_path()).args(pre).arg("data");
    if !c.data.is_empty()
        || c.params
            .iter()
            .all(|p| !p.starts_with("raw=") && !p.starts_with("base64="))
    {
        cmd.arg(format!("data={}", c.data));
    }
    cmd.args(&c.params)
        .arg("--run")
        .arg("nbdcopy \"$uri\" -")
        .envs(c.env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nbdkit(c: &Case) -> Result<Vec<u8>, String> {
    run("nbdkit", &["-U", "-"], c)
}

fn ours(c: &Case) -> Result<Vec<u8>, String> {
    run(common::bin(), &[], c)
}

/// In-process: `$VAR`s from params, no environment (cases using the
/// environment are checked through the binary only).
fn in_process(c: &Case) -> Option<Result<Vec<u8>, String>> {
    if !c.env.is_empty()
        || c.params
            .iter()
            .any(|p| p.starts_with("raw=") || p.starts_with("base64="))
    {
        return None;
    }
    let mut size = None;
    let mut vars = vec![];
    for p in &c.params {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k == "allocator" {
            continue;
        }
        if k == "size" {
            match nbdscript::params::parse_size(v) {
                Ok(n) => size = Some(n),
                Err(e) => return Some(Err(format!("size={v}: {e}"))),
            }
        } else {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    let opts = EvalOptions {
        allow_files: true,
        vars,
        use_env: false,
    };
    Some(datastr::evaluate_to_vec(&c.data, size, &opts).map_err(|e| e.to_string()))
}

/// Run `f` over the cases on a few threads; collect failure messages.
fn par<T: Sync>(items: &[T], f: impl Fn(&T) -> Option<String> + Sync) -> Vec<String> {
    let chunks: Vec<&[T]> = items.chunks(items.len().div_ceil(4).max(1)).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|ch| s.spawn(|| ch.iter().filter_map(&f).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

fn show(b: &[u8]) -> String {
    let n = b.len().min(48);
    format!(
        "{} bytes {:02x?}{}",
        b.len(),
        &b[..n],
        if b.len() > n { "..." } else { "" }
    )
}
