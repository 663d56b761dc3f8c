//! Script errors as values: an NBD error raised inside a script (a
//! catchable map `#{ errno, message }`, from a host function, `nbd_error`,
//! a limit or the layer below) and reading that map back. Only
//! `src/script/` may import rhai.

use crate::backend::{BackendError, Errno};
use rhai::{Dynamic, EvalAltResult, Map, Position};

pub type RResult<T> = Result<T, Box<EvalAltResult>>;

/// Raise an NBD error inside a script: a catchable value
/// `#{ errno: "ENOSPC", message: "..." }` that becomes that errno if it
/// reaches the host.
pub fn raise(errno: Errno, message: impl Into<String>) -> Box<EvalAltResult> {
    raise_map(errno, message.into(), true)
}

/// The error map; `host` marks a host function refusing what the script
/// asked (a script mistake, logged at the default level) as opposed to
/// `nbd_error` or an error passed up from the layer below (quiet).
pub fn raise_map(errno: Errno, message: String, host: bool) -> Box<EvalAltResult> {
    let mut m = Map::new();
    if host {
        m.insert("host".into(), Dynamic::TRUE);
    }
    m.insert("errno".into(), Dynamic::from(errno.name().to_string()));
    m.insert("message".into(), Dynamic::from(message));
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from_map(m),
        Position::NONE,
    ))
}

/// A script going over one of its limits (nesting, memory): like `raise`,
/// but logged as a problem (warning), not as an error the script chose.
pub fn raise_limit(errno: Errno, message: impl Into<String>) -> Box<EvalAltResult> {
    let mut m = Map::new();
    m.insert("errno".into(), Dynamic::from(errno.name().to_string()));
    m.insert("message".into(), Dynamic::from(message.into()));
    m.insert("limit".into(), Dynamic::TRUE);
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from_map(m),
        Position::NONE,
    ))
}

/// A backend error as a catchable script error carrying the errno.
pub fn raise_backend(e: BackendError) -> Box<EvalAltResult> {
    raise_map(e.errno, e.message, false)
}

/// A script's thrown value, if it is an NBD error map.
pub fn thrown_errno(v: &Dynamic) -> Option<(Errno, String, bool)> {
    let m = v.read_lock::<Map>()?;
    let errno = m.get("errno")?.clone().into_string().ok()?;
    let errno = Errno::from_name(&errno)?;
    let msg = m.get("message").map(|x| x.to_string()).unwrap_or_default();
    let limit = m.get("limit").is_some_and(|x| x.as_bool() == Ok(true));
    Some((errno, msg, limit || m.contains_key("host")))
}
