//! Host versions of rhai's bulk array and Blob functions that can run long
//! on one operation (`sort`, `sort_desc`, `reverse`, `fill`): they check
//! the call's deadline as they go, so `--script-timeout` holds inside them
//! too. Registered on the engine, they take precedence over rhai's own.
//! Only `src/script/` may import rhai.

use super::budget::{check_time, past_deadline, time_error};
use super::raise::RResult;
use super::memory::reserve;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Position, INT};
use std::any::TypeId;
use std::cmp::Ordering;

/// Elements handled between two deadline checks.
const CHUNK: usize = 1 << 20;

fn sort(a: &mut Array, desc: bool) -> RResult<()> {
    if a.len() <= 1 {
        return Ok(());
    }
    let t = a[0].type_id();
    if a.iter().any(|x| x.type_id() != t) {
        return Err(Box::new(EvalAltResult::ErrorFunctionNotFound(
            "elements of different types cannot be sorted".into(),
            Position::NONE,
        )));
    }
    let key: fn(&Dynamic, &Dynamic) -> Ordering = if t == TypeId::of::<INT>() {
        |x, y| x.as_int().unwrap_or(0).cmp(&y.as_int().unwrap_or(0))
    } else if t == TypeId::of::<char>() {
        |x, y| {
            x.as_char()
                .unwrap_or('\0')
                .cmp(&y.as_char().unwrap_or('\0'))
        }
    } else if t == TypeId::of::<rhai::FLOAT>() {
        |x, y| {
            let (x, y) = (x.as_float().unwrap_or(0.0), y.as_float().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    } else if t == TypeId::of::<ImmutableString>() {
        |x, y| match (
            x.read_lock::<ImmutableString>(),
            y.read_lock::<ImmutableString>(),
        ) {
            (Some(x), Some(y)) => x.as_str().cmp(y.as_str()),
            _ => Ordering::Equal,
        }
    } else if t == TypeId::of::<bool>() {
        |x, y| {
            x.as_bool()
                .unwrap_or(false)
                .cmp(&y.as_bool().unwrap_or(false))
        }
    } else if t == TypeId::of::<()>() {
        return Ok(());
    } else {
        return Err(Box::new(EvalAltResult::ErrorFunctionNotFound(
            format!("elements of {} cannot be sorted", a[0].type_name()),
            Position::NONE,
        )));
    };
    // Past the deadline every comparison says "equal", which ends the sort
    // in linear time; the call then fails.
    let mut n = 0usize;
    let mut late = false;
    a.sort_by(|x, y| {
        n += 1;
        if n.is_multiple_of(4096) && !late {
            late = past_deadline();
        }
        if late {
            return Ordering::Equal;
        }
        let o = key(x, y);
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    if late {
        return Err(time_error());
    }
    Ok(())
}

fn reverse<T>(a: &mut [T]) -> RResult<()> {
    let n = a.len();
    let mut i = 0;
    while i < n / 2 {
        let end = (i + CHUNK).min(n / 2);
        for k in i..end {
            a.swap(k, n - 1 - k);
        }
        i = end;
        check_time()?;
    }
    Ok(())
}

/// Fill a Blob with a byte, in chunks between deadline checks.
pub fn fill(b: &mut Blob, byte: INT) -> RResult<()> {
    for c in b.chunks_mut(CHUNK * 16) {
        c.fill(byte as u8);
        check_time()?;
    }
    Ok(())
}

fn too_large() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorDataTooLarge(
        "Size of array/BLOB".into(),
        Position::NONE,
    ))
}

/// `len` elements of `each` bytes more: within the per-value cap and the
/// script's memory budget (checked before allocating).
fn room(len: INT, have: usize, each: usize, max: usize, what: &str) -> RResult<usize> {
    let len = usize::try_from(len).unwrap_or(0);
    if len > max {
        return Err(too_large());
    }
    reserve((len.saturating_sub(have) * each) as u64, what)?;
    Ok(len)
}

/// Register the overrides; `max` is the array/Blob size cap.
pub fn register(e: &mut Engine, max: usize) {
    let max = if max == 0 { usize::MAX } else { max };
    e.register_fn("blob", move |n: INT| -> RResult<Blob> {
        Ok(vec![0u8; room(n, 0, 1, max, "blob")?])
    });
    e.register_fn("blob", move |n: INT, v: INT| -> RResult<Blob> {
        Ok(vec![v as u8; room(n, 0, 1, max, "blob")?])
    });
    e.register_fn("pad", move |b: &mut Blob, n: INT, v: INT| -> RResult<()> {
        let n = room(n, b.len(), 1, max, "pad")?;
        if n > b.len() {
            b.resize(n, v as u8);
        }
        Ok(())
    });
    e.register_fn(
        "pad",
        move |a: &mut Array, n: INT, item: Dynamic| -> RResult<()> {
            let each = std::mem::size_of::<Dynamic>();
            let n = room(n, a.len(), each, max, "pad")?;
            while a.len() < n {
                let end = (a.len() + CHUNK).min(n);
                a.resize(end, item.clone());
                check_time()?;
            }
            Ok(())
        },
    );
    e.register_fn("sort", |a: &mut Array| sort(a, false));
    e.register_fn("sort_desc", |a: &mut Array| sort(a, true));
    e.register_fn("reverse", |a: &mut Array| reverse(a));
    e.register_fn("reverse", |b: &mut Blob| reverse(b));
    e.register_fn("fill", fill);
}
