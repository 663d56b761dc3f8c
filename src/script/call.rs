//! Calling a callback of a compiled script ([`Code`]): the arguments on
//! the stack ([`Args`]), then the fast path (`eval_ast(false)`, the
//! connection's kept `Scope` ([`Scopes`]) or a fresh one, arguments moved
//! in, trailing flags dropped to the script's
//! arity) on the script stack, within its memory budget and time limit,
//! with the result checked and errors mapped to the client's errno.

use super::code::{Cb, Code};
use super::host;
use super::memory::{self, Budget};
use super::ScriptOptions;
use super::{budget, stack, state};
use crate::backend::BackendError;
use rhai::{CallFnOptions, Dynamic, FuncArgs, Scope};

/// The most arguments a callback takes (`next, h, count, offset, flags`).
const MAX_ARGS: usize = 5;

/// A callback's arguments, on the stack (no `Vec` per call); moved into
/// the script's scope, never cloned. Made inside the call's memory budget
/// (see `call_raw`).
pub struct Args<'a> {
    v: [Dynamic; MAX_ARGS],
    n: usize,
    /// Bytes of buffers made before the call and handed to the script
    /// (`push_blob`): they become its own.
    handed_in: usize,
    /// The caller's kept `Scope`, if it has one.
    scopes: Option<&'a Scopes>,
}

impl<'a> Args<'a> {
    pub fn new<const N: usize>(a: [Dynamic; N]) -> Args<'a> {
        let mut args = Args {
            v: Default::default(),
            n: 0,
            handed_in: 0,
            scopes: None,
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
            // Slots from `n` on hold unit (nothing to drop): no drop call.
            debug_assert!(slot.is_unit());
            std::mem::forget(std::mem::replace(slot, d));
            self.n += 1;
        }
    }

    /// Add a buffer made before the call (a `pwrite`'s) as a Blob: its
    /// bytes move from the caller's budget into the script's.
    pub fn push_blob(&mut self, b: Vec<u8>) {
        if self.n < MAX_ARGS {
            self.handed_in += b.capacity();
            self.push(Dynamic::from_blob(b));
        }
    }

    /// Call in `s` (kept between calls) rather than a fresh `Scope`.
    pub fn in_scope_of(mut self, s: &'a Scopes) -> Args<'a> {
        self.scopes = Some(s);
        self
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

/// A connection's `Scope`, kept between its calls so that each call does
/// not allocate and free its two buffers (emptied after every call, and
/// freed with the connection in the script's budget). A call that finds
/// it in use (parallel requests) takes a fresh one.
#[derive(Default)]
pub struct Scopes(parking_lot::Mutex<Scope<'static>>);

impl FuncArgs for &mut Args<'_> {
    fn parse<A: Extend<Dynamic>>(self, args: &mut A) {
        args.extend(self.v[..self.n].iter_mut().map(std::mem::take));
    }
}

/// The call path: no top-level re-run, a fresh scope, arguments moved in,
/// trailing optional arguments (flags) dropped to the script's arity.
/// `args` makes the arguments inside the script's memory budget: the
/// copies it makes (the handle's) are freed there by the call, so they
/// must be counted there too.
pub fn call_raw<'a>(
    code_opts: &ScriptOptions,
    budget: &Budget,
    code: &Code,
    file: &str,
    cb: Cb,
    args: impl FnOnce() -> Args<'a>,
) -> Result<Dynamic, BackendError> {
    call_conv(code_opts, budget, code, file, cb, args, Ok)
}

/// `call_raw`, with the result converted by `conv` while the script's
/// memory budget still counts (what `conv` frees is the script's).
pub fn call_conv<'a, T>(
    code_opts: &ScriptOptions,
    budget: &Budget,
    code: &Code,
    file: &str,
    cb: Cb,
    args: impl FnOnce() -> Args<'a>,
    conv: impl FnOnce(Dynamic) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let n = code.arity(cb).ok_or_else(|| {
        BackendError::io(format!("{file}: the script does not define {}", cb.name()))
    })?;
    // The arguments, the call, its error mapping and the drop of what it
    // leaves behind all run on the script stack (deep values are only ever
    // touched there), counted in the script's memory budget.
    let r = stack::run(|| {
        memory::scope(budget, || {
            let mut args = args();
            args.n = args.n.min(n);
            // Buffers handed in (a `pwrite`'s, made before the call)
            // become this script's, out of its caller's budget.
            if args.handed_in > 0 {
                memory::receive(args.handed_in);
            }
            let scopes = args.scopes.take();
            let mut kept = scopes.and_then(|s| s.0.try_lock());
            let mut fresh = None;
            let scope = match kept.as_deref_mut() {
                Some(s) => s,
                None => fresh.insert(Scope::new()),
            };
            let r = budget::with_deadline(code_opts.timeout, || {
                code.engine.call_fn_with_options::<Dynamic>(
                    CallFnOptions::new().eval_ast(false).rewind_scope(false),
                    scope,
                    &code.ast,
                    cb.name(),
                    &mut args,
                )
            });
            scope.clear();
            drop(kept);
            match r {
                Ok(v) => {
                    let v = v.flatten();
                    // A Blob (every `pread`'s answer) within the array size
                    // limit passes both checks below: only its length counts.
                    let max = code.engine.max_array_size();
                    if v.as_blob_ref().is_ok_and(|b| max == 0 || b.len() <= max) {
                        return conv(v);
                    }
                    if state::too_deep(&v) {
                        state::drop_flat(v);
                        let msg =
                            state::too_deep_message(&format!("{file}: {}: the result", cb.name()));
                        super::report::warn(&format!("{msg} (the client gets EIO)"));
                        return Err(BackendError::io(msg));
                    }
                    if let Err(e) = code.engine.ensure_data_size_within_limits(&v) {
                        let msg = format!(
                            "{}: {}: the result: {}",
                            code.at(file, cb),
                            cb.name(),
                            host::strip_pos(&e.to_string())
                        );
                        super::report::warn(&format!("{msg} (the client gets EIO)"));
                        return Err(BackendError::io(msg));
                    }
                    conv(v)
                }
                Err(e) => {
                    let (mut err, intended) = host::to_backend_error_kind(&e, file, cb.name());
                    drop(e);
                    // No position (a budget stopped the call): the callback's own.
                    if let Some(rest) = err.message.strip_prefix(&format!("{file}: ")) {
                        err.message = format!("{}: {rest}", code.at(file, cb));
                    }
                    if intended {
                        tracing::debug!(target: "script", "{}", err.message);
                    } else {
                        super::report::warn(&format!(
                            "{} (the client gets {})",
                            err.message, err.errno
                        ));
                    }
                    Err(err)
                }
            }
        })
    });
    if r.is_err() {
        stack::release();
    }
    r
}
