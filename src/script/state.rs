//! `State`: the value a map returned by `config` or `open` becomes, so the
//! changes a script makes (`h.count += 1`) persist between calls and are
//! shared by every holder (all connections, for `config`'s state). A Rust
//! lock guards it; rhai's own shared values are never put inside data.
//!
//! How deep script values may nest: arrays, maps and states stored in
//! state (`h.x = ...`), returned by `config`/`open` or by a call, are
//! measured (stopping at the limit) and refused past `MAX_DEPTH`; a value
//! replaced or removed is taken apart level by level before it is dropped,
//! so no value ever recurses past what the script stack holds. Only
//! `src/script/` may import rhai.

use super::raise::{raise_limit, RResult};
use crate::backend::Errno;
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext, INT};
use std::any::TypeId;
use std::sync::Arc;

/// Most entries a state may hold (the documented map cap, 1 Mi).
const MAX_KEYS: usize = 1 << 20;

/// A shared map. Cloning shares it.
#[derive(Clone, Default)]
pub struct State(pub Arc<parking_lot::RwLock<Map>>);

impl State {
    pub fn new(m: Map) -> Self {
        State(Arc::new(parking_lot::RwLock::new(m)))
    }

    /// Store `v` under `k`. rhai writes a property back after every method
    /// call on it (`h.disk.pread(...)` runs the getter, `pread`, then the
    /// setter); when `v` is the very object already stored (a `disk()`, a
    /// nested state), that write is skipped: no exclusive lock on the hot
    /// path, so parallel requests do not serialize on the state.
    ///
    /// A value nesting deeper than `MAX_DEPTH` is refused (EIO), as
    /// is one holding a map, array or string over the engine's caps (a
    /// map filled by `m[k] = v`, where rhai checks only the new entry);
    /// the value it replaces is dropped level by level.
    pub fn set(&self, engine: &Engine, k: &str, v: Dynamic) -> RResult<()> {
        if self.0.read().get(k).is_some_and(|cur| same_object(cur, &v)) {
            return Ok(());
        }
        if too_deep(&v) {
            drop_flat(v);
            return Err(raise_limit(
                Errno::Io,
                too_deep_message(&format!("storing .{k}")),
            ));
        }
        if let Err(e) = engine.ensure_data_size_within_limits(&v) {
            drop_flat(v);
            return Err(raise_limit(Errno::Io, over_cap(engine, k, &e)));
        }
        let mut m = self.0.write();
        if m.len() >= MAX_KEYS && !m.contains_key(k) {
            drop(m);
            return Err(raise_limit(
                Errno::Io,
                format!("storing .{k}: the state already has {MAX_KEYS} entries, the most a map may hold"),
            ));
        }
        let old = m.insert(k.into(), v);
        drop(m);
        if let Some(old) = old {
            drop_flat(old);
        }
        Ok(())
    }
}

/// Deepest nesting of arrays and maps a script value may have.
pub const MAX_DEPTH: usize = 1000;

/// Whether `v` nests arrays/maps/states more than `MAX_DEPTH` levels deep.
pub fn too_deep(v: &Dynamic) -> bool {
    // One type test for the usual answer (a Blob, a number, unit): only
    // arrays, maps and states nest (a shared value is looked into by `over`).
    if !v.is_shared() {
        let t = v.type_id();
        if t != TypeId::of::<Array>() && t != TypeId::of::<Map>() && t != TypeId::of::<State>() {
            return false;
        }
    }
    over(v, MAX_DEPTH)
}

fn over(v: &Dynamic, left: usize) -> bool {
    if v.is_array() {
        if left == 0 {
            return true;
        }
        if let Some(a) = v.read_lock::<Array>() {
            return a.iter().any(|x| container(x) && over(x, left - 1));
        }
    } else if v.is_map() {
        if left == 0 {
            return true;
        }
        if let Some(m) = v.read_lock::<Map>() {
            return m.values().any(|x| container(x) && over(x, left - 1));
        }
    } else if let Some(s) = v.read_lock::<State>() {
        if left == 0 {
            return true;
        }
        let m = s.0.read_recursive();
        return m.values().any(|x| container(x) && over(x, left - 1));
    }
    false
}

fn container(v: &Dynamic) -> bool {
    v.is_array() || v.is_map() || v.is::<State>()
}

/// The error a too-deep value gives.
pub fn too_deep_message(what: &str) -> String {
    format!("{what}: the value nests arrays/maps more than {MAX_DEPTH} levels deep")
}

/// Drop `v` without recursion: nested arrays and maps are emptied into a
/// work list first, so each drop is of a shallow value.
pub fn drop_flat(v: Dynamic) {
    let mut work = vec![v];
    while let Some(mut v) = work.pop() {
        if v.is_shared() {
            continue; // someone else holds it
        }
        if v.is_array() {
            if let Some(mut a) = v.write_lock::<Array>() {
                work.extend(a.drain(..).filter(container));
            }
        } else if v.is_map() {
            if let Some(mut m) = v.write_lock::<Map>() {
                let m = std::mem::take(&mut *m);
                work.extend(m.into_values().filter(container));
            }
        }
        drop(v);
    }
}

/// `storing .k: Size of object map too large (the caps: ...)`.
fn over_cap(engine: &Engine, k: &str, e: &EvalAltResult) -> String {
    let what = match e {
        EvalAltResult::ErrorDataTooLarge(what, _) => what.clone(),
        other => super::host::strip_pos(&other.to_string()),
    };
    format!(
        "storing .{k}: {what} too large: a map holds at most {} entries, an array or Blob {} elements, a string {} bytes",
        engine.max_map_size(),
        engine.max_array_size(),
        engine.max_string_size()
    )
}

/// Whether two values are the same reference-semantics object (cloning
/// them shares it), so storing one over the other changes nothing.
fn same_object(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Some(x), Some(y)) = (a.read_lock::<State>(), b.read_lock::<State>()) {
        return Arc::ptr_eq(&x.0, &y.0);
    }
    super::host::same_object(a, b)
}

/// A map from `config`/`open` becomes a `State`; other values stay as they are.
pub fn to_state(v: Dynamic) -> Dynamic {
    let v = v.flatten();
    if v.is_map() {
        match v.try_cast::<Map>() {
            Some(m) => Dynamic::from(State::new(m)),
            None => Dynamic::UNIT,
        }
    } else {
        v
    }
}

fn show(s: &State) -> String {
    let m = s.0.read();
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!("#{{{}}}", items.join(", "))
}

/// Register `State` with map-like access: `s.key`, `s["key"]`, `keys`,
/// `values`, `len`, `contains`/`in`, `remove`, `get`, `to_map`.
pub fn register(e: &mut Engine) {
    e.register_type_with_name::<State>("State");
    e.register_indexer_get(|s: &mut State, k: ImmutableString| -> Dynamic {
        s.0.read().get(k.as_str()).cloned().unwrap_or(Dynamic::UNIT)
    });
    e.register_indexer_set(
        |ctx: NativeCallContext, s: &mut State, k: ImmutableString, v: Dynamic| {
            s.set(ctx.engine(), k.as_str(), v)
        },
    );
    e.register_fn("get", |s: &mut State, k: ImmutableString| -> Dynamic {
        s.0.read().get(k.as_str()).cloned().unwrap_or(Dynamic::UNIT)
    });
    e.register_fn("keys", |s: &mut State| -> Array {
        s.0.read()
            .keys()
            .map(|k| Dynamic::from(k.to_string()))
            .collect()
    });
    e.register_fn("values", |s: &mut State| -> Array {
        s.0.read().values().cloned().collect()
    });
    e.register_fn("len", |s: &mut State| s.0.read().len() as INT);
    e.register_fn("contains", |s: &mut State, k: ImmutableString| {
        s.0.read().contains_key(k.as_str())
    });
    e.register_fn("remove", |s: &mut State, k: ImmutableString| -> Dynamic {
        s.0.write().remove(k.as_str()).unwrap_or(Dynamic::UNIT)
    });
    e.register_fn("to_map", |s: &mut State| -> Map { s.0.read().clone() });
    e.register_fn("to_string", |s: &mut State| show(s));
    e.register_fn("to_debug", |s: &mut State| show(s));
}

/// Register a getter and setter on `State` for every `.name` in the
/// script's text: the same as the indexer, but without rhai's slow
/// "no getter" fallback path (which formats an error on every access).
pub fn register_props(e: &mut Engine, text: &str) {
    let mut names = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c != b'.' {
            continue;
        }
        let rest = &text[i + 1..];
        let end = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if name.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_') {
            names.insert(name);
        }
    }
    for n in names {
        let k: ImmutableString = n.into();
        let k2 = k.clone();
        e.register_get(n, move |s: &mut State| -> Dynamic {
            s.0.read().get(k.as_str()).cloned().unwrap_or(Dynamic::UNIT)
        });
        e.register_set(
            n,
            move |ctx: NativeCallContext, s: &mut State, v: Dynamic| -> RResult<()> {
                s.set(ctx.engine(), k2.as_str(), v)
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map nested `n` levels deep (`#{}` is one level).
    fn nested(n: usize) -> Dynamic {
        let mut v = Dynamic::from_map(Map::new());
        for _ in 1..n {
            let mut m = Map::new();
            m.insert("x".into(), v);
            v = Dynamic::from_map(m);
        }
        v
    }

    #[test]
    fn depth_is_measured_up_to_the_limit() {
        assert!(!too_deep(&nested(MAX_DEPTH)));
        assert!(too_deep(&nested(MAX_DEPTH + 1)));
        assert!(!too_deep(&Dynamic::from(5_i64)));
    }

    #[test]
    fn a_million_deep_map_drops_on_a_small_stack() {
        let v = nested(1_000_000);
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                assert!(too_deep(&v));
                drop_flat(v)
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
