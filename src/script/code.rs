//! `Code`: one compiled version of a script (its engine, AST and which
//! callbacks it defines, with their arities and positions) and compiling
//! it. Calling its callbacks is `call.rs`; the loaded script that holds
//! the current version is `load.rs`'s `Host`. Only `src/script/` may
//! import rhai.

use super::engine::{self, Imports};
use super::host;
use super::{budget, stack};
use super::{ScriptOptions, ScriptSource};
use crate::backend::{BackendError, ThreadModel};
use rhai::{Dynamic, Engine, Module, Position, Scope, AST};

/// Plugin or filter: filters get `next` as the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plugin,
    Filter,
}

macro_rules! callbacks {
    ($($v:ident = $name:literal, $min:literal, $max:literal, $next:literal;)*) => {
        /// The callbacks a script may define.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Cb { $($v),* }
        const SPECS: &[(&str, usize, usize, bool)] = &[$(($name, $min, $max, $next)),*];
    };
}

// name, plugin min and max arity, whether filters get `next` first.
callbacks! {
    Config = "config", 0, 1, false;
    Params = "params", 0, 0, false;
    ThreadModel = "thread_model", 0, 0, false;
    Rebuild = "rebuild", 0, 1, false;
    Open = "open", 0, 2, false;
    Close = "close", 1, 1, true;
    GetSize = "get_size", 1, 1, true;
    CanWrite = "can_write", 1, 1, true;
    CanFlush = "can_flush", 1, 1, true;
    CanTrim = "can_trim", 1, 1, true;
    CanZero = "can_zero", 1, 1, true;
    CanFastZero = "can_fast_zero", 1, 1, true;
    CanExtents = "can_extents", 1, 1, true;
    CanFua = "can_fua", 1, 1, true;
    CanMultiConn = "can_multi_conn", 1, 1, true;
    CanCache = "can_cache", 1, 1, true;
    IsRotational = "is_rotational", 1, 1, true;
    BlockSize = "block_size", 1, 1, true;
    ExportDescription = "export_description", 1, 1, true;
    Pread = "pread", 3, 4, true;
    Pwrite = "pwrite", 3, 4, true;
    Flush = "flush", 1, 2, true;
    Trim = "trim", 3, 4, true;
    Zero = "zero", 3, 4, true;
    Extents = "extents", 3, 4, true;
    Cache = "cache", 3, 4, true;
}

impl Cb {
    pub fn name(self) -> &'static str {
        SPECS[self as usize].0
    }
}

/// One compiled version of a script, with the engine it was compiled for
/// (which has fast getters for the property names the script uses).
pub struct Code {
    pub engine: Engine,
    pub ast: AST,
    /// Arity of each callback the script defines.
    arity: [Option<u8>; SPECS.len()],
    /// Where each callback is defined (line, column of `fn`).
    fn_pos: [Option<(usize, usize)>; SPECS.len()],
}

impl Code {
    /// Check the callbacks' parameter counts.
    fn new(engine: Engine, ast: AST, kind: Kind, file: &str) -> Result<Code, String> {
        let mut arity = [None; SPECS.len()];
        let mut bad = Vec::new();
        for f in ast.iter_functions() {
            let Some(i) = SPECS.iter().position(|s| s.0 == f.name) else {
                continue;
            };
            let (name, min, max, next) = SPECS[i];
            let extra = usize::from(kind == Kind::Filter && next);
            let (lo, hi) = if kind == Kind::Filter && name == "open" {
                (0, 3)
            } else {
                (min + extra, max + extra)
            };
            let n = f.params.len();
            if (lo..=hi).contains(&n) {
                arity[i] = Some(arity[i].map_or(n as u8, |a: u8| a.max(n as u8)));
            } else {
                bad.push(format!(
                    "fn {name} takes {n} parameters; expected {}",
                    signature(name, kind)
                ));
            }
        }
        if !bad.is_empty() {
            return Err(format!("{file}: {}", bad.join("; ")));
        }
        let code = Code {
            engine,
            ast,
            arity,
            fn_pos: [None; SPECS.len()],
        };
        if kind == Kind::Plugin {
            for cb in [Cb::GetSize, Cb::Pread] {
                if !code.has(cb) {
                    return Err(format!(
                        "{file}: a plugin must define {}",
                        signature(cb.name(), kind)
                    ));
                }
            }
        }
        Ok(code)
    }

    pub fn has(&self, cb: Cb) -> bool {
        self.arity[cb as usize].is_some()
    }

    pub fn arity(&self, cb: Cb) -> Option<usize> {
        self.arity[cb as usize].map(usize::from)
    }

    /// `file:line:col` of the callback's definition (`file` if unknown).
    pub fn at(&self, file: &str, cb: Cb) -> String {
        match self.fn_pos[cb as usize] {
            Some((l, c)) => format!("{file}:{l}:{c}"),
            None => file.to_string(),
        }
    }

    /// The callbacks this version defines.
    pub fn defined(&self) -> impl Iterator<Item = Cb> + '_ {
        ALL.iter().copied().filter(|cb| self.has(*cb))
    }
}

/// Every callback, in `SPECS` order.
const ALL: &[Cb] = &[
    Cb::Config,
    Cb::Params,
    Cb::ThreadModel,
    Cb::Rebuild,
    Cb::Open,
    Cb::Close,
    Cb::GetSize,
    Cb::CanWrite,
    Cb::CanFlush,
    Cb::CanTrim,
    Cb::CanZero,
    Cb::CanFastZero,
    Cb::CanExtents,
    Cb::CanFua,
    Cb::CanMultiConn,
    Cb::CanCache,
    Cb::IsRotational,
    Cb::BlockSize,
    Cb::ExportDescription,
    Cb::Pread,
    Cb::Pwrite,
    Cb::Flush,
    Cb::Trim,
    Cb::Zero,
    Cb::Extents,
    Cb::Cache,
];

/// A broken contract (a callback returned something the host cannot use):
/// logged at the default level as `file:line:col: callback: message` at
/// the callback's definition, and the client gets EIO.
pub fn contract(code: &Code, file: &str, cb: Cb, msg: impl std::fmt::Display) -> BackendError {
    let m = format!("{}: {}: {msg}", code.at(file, cb), cb.name());
    super::report::warn(&format!("{m} (the client gets EIO)"));
    BackendError::io(m)
}

/// Where each `fn NAME(` starts (a definition at the start of a line).
fn fn_positions(text: &str) -> Vec<(String, usize, usize)> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("private ").map_or(t, str::trim_start);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let col = line.len() - line.trim_start().len() + 1;
        v.push((name, i + 1, col));
    }
    v
}

/// Damerau (optimal string alignment) distance, for did-you-mean.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, x) in d[0].iter_mut().enumerate() {
        *x = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut x = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                x = x.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = x;
        }
    }
    d[a.len()][b.len()]
}

/// The callback a function name looks like a misspelling of.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    if SPECS.iter().any(|s| s.0 == name) {
        return None;
    }
    SPECS
        .iter()
        .map(|s| (distance(name, s.0), s.0))
        .filter(|(d, cb)| *d > 0 && *d <= if cb.len() <= 5 { 1 } else { 2 })
        .min()
        .map(|(_, cb)| cb)
}

/// How a callback is declared, for error messages.
fn signature(name: &str, kind: Kind) -> String {
    let args = match name {
        "config" => "params",
        "rebuild" => "state",
        "params" => "",
        "thread_model" => "",
        "open" if kind == Kind::Filter => "[next, ]state, readonly",
        "open" => "state, readonly",
        "pread" | "trim" | "zero" | "extents" | "cache" => "h, count, offset[, flags]",
        "pwrite" => "h, buf, offset[, flags]",
        "flush" => "h[, flags]",
        _ => "h",
    };
    let next = if kind == Kind::Filter
        && !matches!(
            name,
            "config" | "rebuild" | "params" | "thread_model" | "open"
        ) {
        "next, "
    } else {
        ""
    };
    format!("fn {name}({next}{args})")
}

pub fn compile(
    source: &ScriptSource,
    imports: &Imports,
    opts: &ScriptOptions,
    text: &str,
    name: &str,
    kind: Kind,
) -> Result<Code, String> {
    let engine = engine::build(opts, source.dir(), imports.clone(), text);
    // Compiling runs imported modules' top level, then the script's own
    // (once, never again per call): both on the script stack, in time.
    // What the top level declares is then visible in every callback.
    stack::run(|| {
        budget::with_deadline(opts.timeout, || {
            let ast = engine::compile(&engine, text, name)?;
            let mut code = Code::new(engine, ast, kind, name)?;
            for (f, l, c) in fn_positions(text) {
                if let Some(i) = SPECS.iter().position(|s| s.0 == f) {
                    code.fn_pos[i].get_or_insert((l, c));
                } else if let Some(cb) = did_you_mean(&f) {
                    super::report::warn(&format!(
                        "{name}:{l}:{c}: fn {f} is not a callback, so it is never called; did you mean {cb}?"
                    ));
                }
            }
            let mut scope = Scope::new();
            code.engine
                .run_ast_with_scope(&mut scope, &code.ast)
                .map_err(|e| host::to_backend_error(&e, name, "top level").message)?;
            top_level_visible(&mut code.engine, &scope, text, name)?;
            Ok(code)
        })
    })
}

/// Make a script's top-level `const`/`let` values and `import ... as name`
/// modules visible inside its functions (rhai functions see neither): the
/// values become a global module's variables (looked up only when a name
/// is not a local), the imports static modules. Both are re-made by every
/// compile, so a reload re-evaluates them.
fn top_level_visible(
    engine: &mut Engine,
    scope: &Scope,
    text: &str,
    name: &str,
) -> Result<(), String> {
    let mut vars = Module::new();
    for (var, _constant, value) in scope.iter() {
        vars.set_var(var, value);
    }
    let mut modules = Vec::new();
    for (line, path, alias) in top_level_imports(text) {
        let m = engine
            .module_resolver()
            .resolve(engine, Some(name), &path, Position::new(line, 1))
            .map_err(|e| host::to_backend_error(&e, name, "import").message)?;
        modules.push((alias, m));
    }
    if !vars.is_empty() {
        engine.register_global_module(vars.into());
    }
    for (alias, m) in modules {
        engine.register_static_module(alias, m);
    }
    Ok(())
}

/// `import "PATH" as NAME` statements at the start of a line, with their
/// line numbers.
fn top_level_imports(text: &str) -> Vec<(u16, String, String)> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("import") else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('"') else {
            continue;
        };
        let Some((path, rest)) = rest.split_once('"') else {
            continue;
        };
        let Some(alias) = rest.trim_start().strip_prefix("as") else {
            continue;
        };
        let alias: String = alias
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !alias.is_empty() {
            v.push((
                u16::try_from(i + 1).unwrap_or(u16::MAX),
                path.to_string(),
                alias,
            ));
        }
    }
    v
}

pub fn parse_model(s: &str) -> Option<ThreadModel> {
    Some(match s.trim() {
        "serialize_connections" | "serialize_all_requests" => ThreadModel::SerializeAllRequests,
        "serialize_requests" => ThreadModel::SerializeRequests,
        "parallel" => ThreadModel::Parallel,
        _ => return None,
    })
}

/// Make a state or handle value keep the changes a script makes: a map
/// becomes a shared `State` (cloning it shares it).
pub fn share_entries(v: Dynamic) -> Dynamic {
    super::state::to_state(v)
}
