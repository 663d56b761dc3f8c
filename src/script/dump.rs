//! `--dump-plugin` for a script plugin or filter: nbdkit's `key=value`
//! lines from the compiled script alone: the callbacks it defines
//! (`has_NAME=1`), the capabilities they imply (`can_write=1` from `pwrite`,
//! `can_zero=emulate` from `pwrite` without `zero`, `can_fua=fn can_fua()`
//! when a function decides), its thread model as the
//! script spells it, its parameters (`fn params()`) and magic key. `config`
//! and `rebuild` never run, so no parameter is needed and a `config` with
//! side effects is not triggered. Only `src/script/` may import rhai.

use super::call::{call_raw, Args};
use super::code::{self, Cb, Code, Kind};
use super::memory::Budget;
use super::{ScriptOptions, ScriptSource};
use crate::params::ConfigError;
use rhai::{Dynamic, Map};

/// What a script declares about itself, read by calling its declaration
/// functions (`params()`, `thread_model()`), never `config`.
pub struct Declared {
    /// `fn params()`: the keys, with their help text (empty for an array).
    pub params: Option<Vec<(String, String)>>,
    /// `fn thread_model()`'s answer as written (trimmed), if defined.
    pub model: Option<String>,
    /// `fn magic_key()`'s key.
    pub magic: Option<String>,
}

/// Call `params()` and `thread_model()` of a compiled script.
pub fn declarations(
    code: &Code,
    opts: &ScriptOptions,
    budget: &Budget,
    name: &str,
    text: &str,
) -> Result<Declared, ConfigError> {
    let params = if code.has(Cb::Params) {
        let v = call_raw(opts, budget, code, name, Cb::Params, || Args::new([]))
            .map_err(|e| ConfigError::new(e.message))?;
        Some(declared_params(v).ok_or_else(|| {
            ConfigError::new(format!(
                "{name}: params() must return an array of names or a map of name: help"
            ))
        })?)
    } else {
        None
    };
    let model = if code.has(Cb::ThreadModel) {
        let v = call_raw(opts, budget, code, name, Cb::ThreadModel, || Args::new([]))
            .map_err(|e| ConfigError::new(e.message))?;
        let s = v.to_string().trim().to_string();
        if !v.is_string() || code::parse_model(&s).is_none() {
            return Err(ConfigError::new(format!("{name}: thread_model() returned {v:?}; use \"serialize_all_requests\", \"serialize_requests\" or \"parallel\"")));
        }
        Some(s)
    } else {
        None
    };
    Ok(Declared {
        params,
        model,
        magic: magic_key_in(text),
    })
}

fn declared_params(v: Dynamic) -> Option<Vec<(String, String)>> {
    if v.is_map() {
        return Some(
            v.try_cast::<Map>()?
                .into_iter()
                .map(|(k, h)| (k.to_string(), h.to_string()))
                .collect(),
        );
    }
    v.into_array()
        .ok()?
        .into_iter()
        .map(|x| x.into_string().ok().map(|k| (k, String::new())))
        .collect()
}

/// The magic key the script declares with `fn magic_key() { "size" }`
/// (read from the text, without running it).
pub fn magic_key_in(text: &str) -> Option<String> {
    let at = text
        .lines()
        .position(|l| l.trim_start().starts_with("fn magic_key()"))?;
    let rest: String = text.lines().skip(at).collect::<Vec<_>>().join("\n");
    let body = &rest[rest.find('{')? + 1..];
    let body = &body[..body.find('}')?];
    let q = body.find('"')?;
    let key = &body[q + 1..];
    Some(key[..key.find('"')?].to_string())
}

/// Compile the script named on the command line and describe it; its
/// top level runs (as at every load), `config` and `rebuild` do not.
pub fn dump_source(
    source: &ScriptSource,
    opts: &ScriptOptions,
    kind: Kind,
) -> Result<Vec<(String, String)>, ConfigError> {
    let text = source.text().map_err(ConfigError::new)?;
    let name = source.display_name();
    let budget = Budget::new(opts.max_memory);
    let code = code::compile(source, &Default::default(), opts, &text, &name, kind)
        .map_err(ConfigError::new)?;
    let declared = declarations(&code, opts, &budget, &name, &text)?;
    Ok(lines(&code, kind, source, opts.watch, &declared))
}

/// The `key=value` lines, in nbdkit's order.
pub fn lines(
    code: &Code,
    kind: Kind,
    source: &ScriptSource,
    watch: bool,
    declared: &Declared,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut kv = |k: &str, v: String| out.push((k.to_string(), v));
    let file = matches!(source, ScriptSource::File(_));
    if let ScriptSource::File(p) = source {
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        kv("path", abs.display().to_string());
    }
    if kind == Kind::Plugin {
        kv("api_version", "2".into());
        kv("max_thread_model", "parallel".into());
    }
    kv(
        "thread_model",
        declared
            .model
            .clone()
            .unwrap_or_else(|| "serialize_all_requests".into()),
    );
    if kind == Kind::Plugin {
        kv("errno_is_preserved", "1".into());
        let magic = declared.magic.clone().or_else(|| match source {
            ScriptSource::Stdlib(n) => super::stdlib_magic_key(n).map(str::to_string),
            _ => None,
        });
        if let Some(m) = magic {
            kv("magic_config_key", m);
        }
    }
    for cb in code.defined() {
        kv(&format!("has_{}", cb.name()), "1".into());
    }
    // Capabilities: what the callbacks imply (plugins), or the function
    // that decides. A filter's other capabilities are the layer below's.
    let has = |cb| u8::from(code.has(cb)).to_string();
    let implied: [(Cb, Option<String>); 10] = [
        (Cb::CanWrite, Some(has(Cb::Pwrite))),
        (Cb::CanFlush, Some(has(Cb::Flush))),
        (Cb::CanTrim, Some(has(Cb::Trim))),
        // What the server does with WRITE_ZEROES: the plugin's `zero`,
        // or (as nbdkit) `pwrite` of zeros when it has none.
        (
            Cb::CanZero,
            Some(
                if code.has(Cb::Zero) {
                    "native"
                } else if code.has(Cb::Pwrite) {
                    "emulate"
                } else {
                    "none"
                }
                .into(),
            ),
        ),
        // nbdkit's default: fast zero when `zero` is not native (the
        // server then fails a fast zero at once).
        (
            Cb::CanFastZero,
            Some(
                match (code.has(Cb::Zero), code.has(Cb::CanZero)) {
                    (false, _) => has(Cb::Pwrite),
                    (true, true) => "not fn can_zero()".into(),
                    (true, false) => "0".into(),
                },
            ),
        ),
        (Cb::CanExtents, Some(has(Cb::Extents))),
        (
            Cb::CanFua,
            Some(
                if code.has(Cb::Flush) {
                    "emulate"
                } else {
                    "none"
                }
                .into(),
            ),
        ),
        (Cb::CanMultiConn, Some("0".into())),
        (
            Cb::CanCache,
            Some(
                if code.has(Cb::Cache) {
                    "native"
                } else {
                    "none"
                }
                .into(),
            ),
        ),
        (Cb::IsRotational, Some("0".into())),
    ];
    for (cb, derived) in implied {
        if code.has(cb) {
            kv(cb.name(), format!("fn {}()", cb.name()));
        } else if kind == Kind::Plugin {
            if let Some(d) = derived {
                kv(cb.name(), d);
            }
        }
    }
    for (k, help) in declared.params.iter().flatten() {
        kv(&format!("param.{k}"), help.clone());
    }
    kv("reload", (watch && file).to_string());
    out
}
