//! How deep script values may nest: arrays, maps and states stored in
//! state (`h.x = ...`), returned by `config`/`open` or by a call, are
//! measured (stopping at the limit) and refused past `MAX_DEPTH`; a value
//! replaced or removed is taken apart level by level before it is dropped,
//! so no value ever recurses past what the script stack holds. Only
//! `src/script/` may import rhai.

use super::state::State;
use rhai::{Array, Dynamic, Map};

/// Deepest nesting of arrays and maps a script value may have.
pub const MAX_DEPTH: usize = 1000;

/// Whether `v` nests arrays/maps/states more than `MAX_DEPTH` levels deep.
pub fn too_deep(v: &Dynamic) -> bool {
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
