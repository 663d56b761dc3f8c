//! The one place a rhai `Engine` is built: limits, no `eval`, `print` and
//! `debug` to the log, imports only from the script's own directory and the
//! built-in library, and a per-call time budget. Only `src/script/` may
//! import rhai.

use super::{host, stdlib, ScriptOptions};
use rhai::{Dynamic, Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, AST};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

thread_local! {
    /// When the script call running on this thread was first seen by the
    /// time check (None: not yet). Set lazily, so a call costs no clock read.
    static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Import nesting while compiling (guards against import cycles).
    static IMPORT_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// How many operations run between two clock checks.
const CHECK_EVERY: u64 = 0x1000;

/// Run `f` (one script call) with its time budget armed. The clock starts
/// at the call's first check (after `CHECK_EVERY` operations, well under a
/// millisecond), so short calls never read the clock; a nested call (a
/// filter's `next` reaching another script) has its own budget.
pub fn with_deadline<T>(f: impl FnOnce() -> T) -> T {
    let prev = STARTED.with(|d| d.replace(None));
    let r = f();
    STARTED.with(|d| d.set(prev));
    r
}

/// Files a script imported (watched for reload).
pub type Imports = Arc<Mutex<BTreeSet<PathBuf>>>;

/// Build the hardened engine for a script living in `dir` (None: a script
/// from standard input or the built-in library, which may import only the
/// built-in library).
pub fn build(opts: &ScriptOptions, dir: Option<PathBuf>, imports: Imports, text: &str) -> Engine {
    let mut e = Engine::new();
    e.disable_symbol("eval");
    e.set_max_operations(opts.max_operations);
    e.set_max_call_levels(opts.max_call_levels);
    e.set_max_expr_depths(128, 64);
    e.set_max_string_size(opts.max_string_size);
    e.set_max_array_size(opts.max_array_size);
    e.set_max_map_size(opts.max_map_size);
    e.set_max_modules(64);
    // ASTs compiled by one engine share interned strings; per-call refcount
    // traffic on them limits scaling across threads (reference/rhai.md §8d).
    e.set_max_strings_interned(0);
    e.on_print(|s| tracing::info!(target: "script", "{s}"));
    e.on_debug(|s, src, pos| {
        tracing::debug!(target: "script", "{}: {s}", host::at(src.unwrap_or("script"), pos))
    });
    if let Some(limit) = opts.timeout {
        e.on_progress(move |ops| {
            if ops % CHECK_EVERY == 0 {
                let now = Instant::now();
                match STARTED.with(|d| d.get()) {
                    None => STARTED.with(|d| d.set(Some(now))),
                    Some(t) if now.duration_since(t) > limit => {
                        return Some(Dynamic::from("time limit"));
                    }
                    Some(_) => {}
                }
            }
            None
        });
    }
    e.set_module_resolver(Resolver { dir, imports });
    host::register(&mut e, opts.allow_files);
    super::filter::register(&mut e);
    super::state::register(&mut e);
    super::state::register_props(&mut e, text);
    e
}

/// Make a script compilable: a leading `#!` line becomes a `//` comment of
/// the same length, so line and column numbers still match the file.
pub fn prepare(src: &str) -> String {
    if let Some(rest) = src.strip_prefix("#!") {
        format!("//{rest}")
    } else {
        src.to_string()
    }
}

/// Compile a script, resolving its imports into the AST.
pub fn compile(engine: &Engine, src: &str, name: &str) -> Result<AST, String> {
    let mut ast = engine
        .compile_into_self_contained(&Scope::new(), prepare(src))
        .map_err(|e| describe_compile(&e, name))?;
    ast.set_source(name);
    Ok(ast)
}

fn describe_compile(e: &EvalAltResult, name: &str) -> String {
    match e {
        EvalAltResult::ErrorInModule(m, inner, _) => {
            format!("{} (imported from {name})", describe_compile(inner, m))
        }
        EvalAltResult::ErrorParsing(p, pos) => {
            format!("{}: syntax error: {p}", host::at(name, *pos))
        }
        _ => format!(
            "{}: {}",
            host::at(name, e.position()),
            host::strip_pos(&e.to_string())
        ),
    }
}

/// Imports: `import "std/NAME"` is the built-in library; any other path is
/// a `.rhai` file in the script's directory (no absolute paths, no `..`).
struct Resolver {
    dir: Option<PathBuf>,
    imports: Imports,
}

fn refuse(path: &str, why: &str, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorModuleNotFound(
        format!("{path} ({why})"),
        pos,
    ))
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        let (src, name) = if let Some(n) = path.strip_prefix("std/") {
            match stdlib::stdlib_source(n) {
                Some(s) => (s.to_string(), format!("stdlib/{n}.rhai")),
                None => return Err(refuse(path, "no such module in the built-in library", pos)),
            }
        } else {
            let Some(dir) = &self.dir else {
                return Err(refuse(path, "only \"std/NAME\" can be imported here", pos));
            };
            let rel = Path::new(path);
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(refuse(
                    path,
                    "imports must stay in the script's directory",
                    pos,
                ));
            }
            let file = dir.join(rel).with_extension("rhai");
            self.imports.lock().map(|mut s| s.insert(file.clone())).ok();
            let text = std::fs::read_to_string(&file)
                .map_err(|e| refuse(path, &format!("{}: {e}", file.display()), pos))?;
            (text, file.display().to_string())
        };
        let depth = IMPORT_DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        let r = (|| {
            if depth > 16 {
                return Err(refuse(path, "imports nested too deeply (a cycle?)", pos));
            }
            let ast = compile(engine, &src, &name).map_err(|m| {
                Box::new(EvalAltResult::ErrorInModule(
                    name.to_string(),
                    Box::new(EvalAltResult::ErrorRuntime(m.into(), Position::NONE)),
                    pos,
                ))
            })?;
            let m = Module::eval_ast_as_new(Scope::new(), &ast, engine)?;
            Ok(Arc::new(m))
        })();
        IMPORT_DEPTH.with(|d| d.set(d.get() - 1));
        r
    }
}
