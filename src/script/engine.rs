//! The one place a rhai `Engine` is built: limits, no `eval`, `print` and
//! `debug` to the log, imports only from the script's own directory and the
//! built-in library, and a per-call time budget (`budget.rs`). Only `src/script/` may
//! import rhai.

use super::{budget, host, memory, stdlib, ScriptOptions};
use rhai::{Dynamic, Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, AST};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

thread_local! {
    /// Import nesting while compiling (guards against import cycles).
    static IMPORT_DEPTH: Cell<u32> = const { Cell::new(0) };
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
    // Checked at every operation (one atomic load): a call stops soon
    // after its deadline even when each operation is long.
    // The memory budget likewise (a thread-local and an atomic).
    // The check is inlined and its stops kept out of line, so the usual
    // case (neither) costs a few instructions per operation.
    if opts.timeout.is_some() || opts.max_memory > 0 {
        e.on_progress(|_| {
            if budget::past_deadline() {
                return Some(time_stop());
            }
            if memory::over() {
                return Some(memory_stop());
            }
            None
        });
    }
    e.set_module_resolver(Resolver { dir, imports });
    host::register(&mut e, opts.allow_files);
    super::bulk::register(&mut e, opts.max_array_size);
    super::bytes::register(&mut e);
    super::next::register(&mut e);
    super::state::register(&mut e);
    super::state::register_props(&mut e, text);
    e
}

/// What stops a call past its deadline.
#[cold]
#[inline(never)]
fn time_stop() -> Dynamic {
    Dynamic::from("time limit")
}

/// What stops a call over its memory budget (with the message).
#[cold]
#[inline(never)]
fn memory_stop() -> Dynamic {
    Dynamic::from(memory::MemoryStop(memory::over_message()))
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

/// Where an open file really is: `/proc/self/fd/N` (else the canonical path).
fn real_path(f: &std::fs::File, file: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(file))
        .unwrap_or_else(|_| file.to_path_buf())
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
            // The real path of the file opened (symlinks resolved, read
            // back from the open descriptor, so no swap in between) must
            // stay inside too.
            let mut f = std::fs::File::open(&file)
                .map_err(|e| refuse(path, &format!("{}: {e}", file.display()), pos))?;
            let real = real_path(&f, &file);
            let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if !real.starts_with(&root) {
                return Err(refuse(
                    path,
                    &format!(
                        "it resolves to {}, outside the script's directory {}; imports must stay in the script's directory",
                        real.display(),
                        root.display()
                    ),
                    pos,
                ));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)
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
