//! `Host`: one loaded script (plugin or filter) shared by every connection:
//! its engine, the current compiled `Code` (swapped atomically on reload),
//! the state from `config`, the thread model, and the fast call path
//! (`eval_ast(false)`, a fresh `Scope`, arguments moved in). Only
//! `src/script/` may import rhai.

use super::engine::{self, Imports};
use super::host;
use super::{budget, depth, stack};
use super::{ScriptOptions, ScriptSource};
use crate::backend::{BackendError, ThreadModel};
use crate::params::{ConfigError, Params};
use arc_swap::ArcSwap;
use rhai::{CallFnOptions, Dynamic, Engine, FuncArgs, Map, Module, Position, Scope, AST};
use std::sync::Arc;

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
        let code = Code { engine, ast, arity };
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
}

/// How a callback is declared, for error messages.
fn signature(name: &str, kind: Kind) -> String {
    let args = match name {
        "config" => "params",
        "params" => "",
        "thread_model" => "",
        "open" if kind == Kind::Filter => "[next, ]state, readonly",
        "open" => "state, readonly",
        "pread" | "trim" | "zero" | "extents" | "cache" => "h, count, offset[, flags]",
        "pwrite" => "h, buf, offset[, flags]",
        "flush" => "h[, flags]",
        _ => "h",
    };
    let next =
        if kind == Kind::Filter && !matches!(name, "config" | "params" | "thread_model" | "open") {
            "next, "
        } else {
            ""
        };
    format!("fn {name}({next}{args})")
}

/// A loaded script, shared by the plugin/filter and all its connections.
pub struct Host {
    pub code: ArcSwap<Code>,
    pub opts: ScriptOptions,
    /// What `config` returned (entries shared, so changes persist).
    pub state: Dynamic,
    /// File name for messages (`ramdisk.rhai`, `stdlib/offset.rhai`, `<stdin>`).
    pub name: String,
    pub model: ThreadModel,
    /// Held around every call under `serialize_all_requests`.
    pub global: parking_lot::Mutex<()>,
    pub kind: Kind,
    pub source: ScriptSource,
    pub imports: Imports,
    /// The parameter keys the script declares with `fn params()`.
    pub declared: Option<Vec<String>>,
}

impl Host {
    pub fn load(
        source: &ScriptSource,
        params: &Params,
        opts: &ScriptOptions,
        kind: Kind,
    ) -> Result<Host, ConfigError> {
        let text = source.text().map_err(ConfigError::new)?;
        let name = source.display_name();
        let imports = Imports::default();
        let code = compile(source, &imports, opts, &text, &name, kind).map_err(ConfigError::new)?;
        let declared = if code.has(Cb::Params) {
            let v = call_raw(opts, &code, &name, Cb::Params, Args::new([]))
                .map_err(|e| ConfigError::new(e.message))?;
            Some(declared_keys(v).ok_or_else(|| {
                ConfigError::new(format!(
                    "{name}: params() must return an array of names or a map of name: help"
                ))
            })?)
        } else {
            None
        };
        let mut pm = Map::new();
        for (k, v) in &params.items {
            if declared.as_ref().is_none_or(|d| d.contains(k)) {
                pm.insert(k.as_str().into(), Dynamic::from(v.clone()));
            }
        }
        let pm = Dynamic::from_map(pm);
        let state = if code.has(Cb::Config) {
            call_raw(opts, &code, &name, Cb::Config, Args::new([pm]))
                .map_err(|e| ConfigError::new(format!("{name}: config failed: {}", e.message)))?
        } else {
            pm
        };
        let model = if code.has(Cb::ThreadModel) {
            let v = call_raw(opts, &code, &name, Cb::ThreadModel, Args::new([]))
                .map_err(|e| ConfigError::new(e.message))?;
            parse_model(&v.to_string())
                .ok_or_else(|| ConfigError::new(format!("{name}: thread_model() returned {v:?}; use \"serialize_all_requests\", \"serialize_requests\" or \"parallel\"")))?
        } else {
            ThreadModel::SerializeAllRequests
        };
        Ok(Host {
            code: ArcSwap::from_pointee(code),
            opts: opts.clone(),
            state: share_entries(state),
            name,
            model,
            global: parking_lot::Mutex::new(()),
            kind,
            source: source.clone(),
            imports,
            declared,
        })
    }

    /// Recompile from the source; on success swap the code in atomically.
    /// A version that fails to compile, or that adds `config` (which runs
    /// only at start-up), is refused and the old one keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let text = self.source.text()?;
        let code = compile(
            &self.source,
            &self.imports,
            &self.opts,
            &text,
            &self.name,
            self.kind,
        )?;
        if code.has(Cb::Config) && !self.code.load().has(Cb::Config) {
            return Err(format!(
                "{}: this version adds fn config(), which runs only at start-up; restart nbdscript to use it",
                self.name
            ));
        }
        self.code.store(Arc::new(code));
        Ok(())
    }

    /// The handle for a new connection from `open`'s result (or the state).
    pub fn make_handle(&self, v: Dynamic) -> Dynamic {
        share_entries(v)
    }
}

fn compile(
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

/// The most arguments a callback takes (`next, h, count, offset, flags`).
const MAX_ARGS: usize = 5;

/// A callback's arguments, on the stack (no `Vec` per call); moved into
/// the script's scope, never cloned.
pub struct Args {
    v: [Dynamic; MAX_ARGS],
    n: usize,
}

impl Args {
    pub fn new<const N: usize>(a: [Dynamic; N]) -> Args {
        let mut args = Args {
            v: Default::default(),
            n: 0,
        };
        for d in a {
            args.push(d);
        }
        args
    }

    /// Add an argument at the end (ignored beyond `MAX_ARGS`, which no
    /// callback reaches).
    pub fn push(&mut self, d: Dynamic) {
        if let Some(slot) = self.v.get_mut(self.n) {
            *slot = d;
            self.n += 1;
        }
    }

    /// Add an argument in front.
    pub fn push_front(&mut self, d: Dynamic) {
        if self.n < MAX_ARGS {
            self.v[..=self.n].rotate_right(1);
            self.v[0] = d;
            self.n += 1;
        }
    }
}

impl FuncArgs for Args {
    fn parse<A: Extend<Dynamic>>(mut self, args: &mut A) {
        args.extend(self.v[..self.n].iter_mut().map(std::mem::take));
    }
}

/// The call path: no top-level re-run, a fresh scope, arguments moved in,
/// trailing optional arguments (flags) dropped to the script's arity.
pub fn call_raw(
    code_opts: &ScriptOptions,
    code: &Code,
    file: &str,
    cb: Cb,
    mut args: Args,
) -> Result<Dynamic, BackendError> {
    let n = code.arity(cb).ok_or_else(|| {
        BackendError::io(format!("{file}: the script does not define {}", cb.name()))
    })?;
    args.n = args.n.min(n);
    // The call, its error mapping and the drop of what it leaves behind all
    // run on the script stack: deep values are only ever touched there.
    let r = stack::run(|| {
        let r = budget::with_deadline(code_opts.timeout, || {
            code.engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false).rewind_scope(false),
                &mut Scope::new(),
                &code.ast,
                cb.name(),
                args,
            )
        });
        match r {
            Ok(v) => {
                let v = v.flatten();
                if depth::too_deep(&v) {
                    depth::drop_flat(v);
                    let msg =
                        depth::too_deep_message(&format!("{file}: {}: the result", cb.name()));
                    tracing::warn!(target: "script", "{msg} (the client gets EIO)");
                    return Err(BackendError::io(msg));
                }
                Ok(v)
            }
            Err(e) => {
                let (err, intended) = host::to_backend_error_kind(&e, file, cb.name());
                drop(e);
                if intended {
                    tracing::debug!(target: "script", "{}", err.message);
                } else {
                    tracing::warn!(target: "script", "{} (the client gets {})", err.message, err.errno);
                }
                Err(err)
            }
        }
    });
    if r.is_err() {
        stack::release();
    }
    r
}

fn declared_keys(v: Dynamic) -> Option<Vec<String>> {
    if v.is_map() {
        return Some(v.try_cast::<Map>()?.keys().map(|k| k.to_string()).collect());
    }
    v.into_array()
        .ok()?
        .into_iter()
        .map(|x| x.into_string().ok())
        .collect()
}

fn parse_model(s: &str) -> Option<ThreadModel> {
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
