//! A script's answers to the `can_*`, `get_size`, `block_size` and
//! `export_description` callbacks turned into backend values, with the
//! message naming what was returned and what was expected.

use crate::backend::{BlockSize, CacheMode, FuaMode};
use rhai::Dynamic;

/// `returned string "sometimes"; expected ...`
fn bad(want: &str, v: &Dynamic) -> String {
    let shown = if v.is_string() {
        format!("{:?}", v.to_string())
    } else {
        v.to_string()
    };
    format!("returned {} {shown}; expected {want}", v.type_name())
}

pub(super) type Conv<T> = std::result::Result<T, String>;

pub(super) fn to_bool(v: Dynamic) -> Conv<bool> {
    v.as_bool()
        .or_else(|_| v.as_int().map(|i| i != 0))
        .map_err(|_| bad("true or false", &v))
}

const MODES: &str = "true, false, \"none\", \"emulate\" or \"native\"";

pub(super) fn to_fua(v: Dynamic) -> Conv<FuaMode> {
    if let Ok(b) = v.as_bool() {
        return Ok(if b { FuaMode::Native } else { FuaMode::None });
    }
    match v.to_string().as_str() {
        "none" if v.is_string() => Ok(FuaMode::None),
        "emulate" if v.is_string() => Ok(FuaMode::Emulate),
        "native" if v.is_string() => Ok(FuaMode::Native),
        _ => Err(bad(MODES, &v)),
    }
}

pub(super) fn to_cache(v: Dynamic) -> Conv<CacheMode> {
    if let Ok(b) = v.as_bool() {
        return Ok(if b {
            CacheMode::Native
        } else {
            CacheMode::None
        });
    }
    match v.to_string().as_str() {
        "none" if v.is_string() => Ok(CacheMode::None),
        "emulate" if v.is_string() => Ok(CacheMode::Emulate),
        "native" if v.is_string() => Ok(CacheMode::Native),
        _ => Err(bad(MODES, &v)),
    }
}

const BLOCK: &str = "[minimum, preferred, maximum] (integers)";

pub(super) fn to_block_size(v: Dynamic) -> Conv<Option<BlockSize>> {
    if v.is_unit() {
        return Ok(None);
    }
    let nums: Vec<u32> = v
        .clone()
        .into_array()
        .map_err(|_| bad(BLOCK, &v))?
        .into_iter()
        .filter_map(|x| x.as_int().ok().and_then(|i| u32::try_from(i).ok()))
        .collect();
    match nums[..] {
        [minimum, preferred, maximum] => Ok(Some(BlockSize {
            minimum,
            preferred,
            maximum,
        })),
        _ => Err(bad(BLOCK, &v)),
    }
}

pub(super) fn to_desc(v: Dynamic) -> Conv<Option<String>> {
    Ok((!v.is_unit()).then(|| v.to_string()))
}

pub(super) fn to_size(v: Dynamic) -> Conv<u64> {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return crate::params::parse_size(&s)
            .map_err(|e| format!("returned {:?}, which is not a size: {e}", s.as_str()));
    }
    match v.as_int() {
        Ok(i) => u64::try_from(i).map_err(|_| format!("returned {i}; a size must not be negative")),
        Err(_) => Err(bad("a size (an integer or a string like \"64M\")", &v)),
    }
}
