//! The `rebuild(state)` callback: what an image-building script uses to
//! replace what its export serves. It runs once after `config` at
//! start-up and then with every new version of the script before that
//! version is swapped in; a version whose `rebuild` fails is refused like
//! one that does not compile, and the old code and image keep serving.
//! Under `serialize_all_requests` (the default) no request runs during a
//! rebuild. What becomes of earlier client writes is the script's choice
//! (it assigns a fresh image, or keeps the old disk). Only `src/script/`
//! may import rhai.

use super::call::{call_raw, Args};
use super::code::{Cb, Code};
use super::memory::Budget;
use super::ScriptOptions;
use crate::params::ConfigError;
use rhai::Dynamic;
use std::time::Instant;

/// Run `rebuild(state)` at start-up (after `config`), if the script has it.
pub fn at_start(
    code: &Code,
    name: &str,
    opts: &ScriptOptions,
    budget: &Budget,
    state: &Dynamic,
) -> Result<(), ConfigError> {
    run(code, name, opts, budget, state).map_err(ConfigError::new)
}

/// Run `code`'s `rebuild(state)`, if it has one: at start-up, and for a
/// new version before it is swapped in (`load.rs`).
pub fn run(
    code: &Code,
    name: &str,
    opts: &ScriptOptions,
    budget: &Budget,
    state: &Dynamic,
) -> Result<(), String> {
    if !code.has(Cb::Rebuild) {
        return Ok(());
    }
    let t = Instant::now();
    let _ = call_raw(
        opts,
        budget,
        code,
        name,
        Cb::Rebuild,
        || Args::new([state.clone()]),
    )
    .map_err(|e| format!("{name}: rebuild failed: {}", e.message))?;
    tracing::info!(
        target: "script",
        "{name}: rebuild done in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
