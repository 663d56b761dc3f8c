//! Live reload: a notify watcher on the script's directory (and those of
//! the files it imports). Events are filtered in the watcher's callback:
//! only the script and its imports count, so a busy directory (a log file
//! next to the script) never delays or triggers a reload. A change is
//! compiled on the reload thread, never on the request path, and swapped
//! in atomically by `Host::reload`. A broken version is refused with
//! file:line:col in the log. Only `src/script/` may import rhai; no tokio
//! here.

use super::load::Host;
use super::engine::Imports;
use super::ScriptSource;
use crate::params::ConfigError;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a file must be quiet before it is recompiled (an editor's save
/// is several events).
const QUIET: Duration = Duration::from_millis(20);

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watch {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

/// Start watching a file script when `opts.watch` is on.
pub fn watch(host: &Arc<Host>) -> Result<Option<Watch>, ConfigError> {
    let ScriptSource::File(path) = &host.source else {
        return Ok(None);
    };
    if !host.opts.watch {
        return Ok(None);
    }
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let (tx, rx) = channel();
    let (imports, watched) = (host.imports.clone(), file.clone());
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Some(import) = ev.ok().and_then(|ev| relevant(&ev, &watched, &imports)) {
            let _ = tx.send(import);
        }
    })
    .map_err(|e| {
        ConfigError::new(format!(
            "{}: cannot watch for changes: {e} (use --no-watch)",
            host.name
        ))
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    let mut dirs = BTreeSet::new();
    add_dirs(&watcher, &mut dirs, &file, host).map_err(|e| {
        ConfigError::new(format!(
            "{}: cannot watch for changes: {e} (use --no-watch)",
            host.name
        ))
    })?;
    let last = host.source.text().ok();
    let weak = Arc::downgrade(host);
    let w2 = Arc::downgrade(&watcher);
    std::thread::Builder::new()
        .name("script-reload".into())
        .spawn(move || run(rx, weak, file, w2, dirs, last))
        .map_err(|e| ConfigError::new(format!("cannot start the reload thread: {e}")))?;
    Ok(Some(Watch { _watcher: watcher }))
}

/// Watch the directories of the script and of everything it imports.
fn add_dirs(
    w: &Mutex<notify::RecommendedWatcher>,
    dirs: &mut BTreeSet<PathBuf>,
    file: &Path,
    host: &Host,
) -> notify::Result<()> {
    let mut want: Vec<PathBuf> = file.parent().map(Path::to_path_buf).into_iter().collect();
    if let Ok(imp) = host.imports.lock() {
        want.extend(imp.iter().filter_map(|p| p.parent().map(Path::to_path_buf)));
    }
    for d in want {
        if dirs.insert(d.clone()) {
            if let Ok(mut w) = w.lock() {
                w.watch(&d, RecursiveMode::NonRecursive)?;
            }
        }
    }
    Ok(())
}

/// Whether the event concerns the script (`Some(false)`) or a file it
/// imports (`Some(true)`).
fn relevant(ev: &notify::Event, file: &Path, imports: &Imports) -> Option<bool> {
    let kind_ok = matches!(
        ev.kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    if !kind_ok {
        return None;
    }
    if ev.paths.iter().any(|p| p == file) {
        return Some(false);
    }
    let imports = imports.lock().ok()?;
    ev.paths.iter().any(|p| imports.contains(p)).then_some(true)
}

fn run(
    rx: Receiver<bool>,
    host: Weak<Host>,
    file: PathBuf,
    watcher: Weak<Mutex<notify::RecommendedWatcher>>,
    mut dirs: BTreeSet<PathBuf>,
    mut last: Option<String>,
) {
    while let Ok(mut import) = rx.recv() {
        let Some(h) = host.upgrade() else { return };
        // Wait for the writes of one save to settle (only events on the
        // watched files arrive here).
        loop {
            match rx.recv_timeout(QUIET) {
                Ok(i) => {
                    import |= i;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let text = h.source.text().ok();
        if text.is_none() || (text == last && !import) {
            continue;
        }
        last = text;
        match h.reload() {
            Ok(()) => {
                tracing::info!(target: "script", "{}: reloaded (the next request runs the new code)", h.name)
            }
            Err(e) => tracing::error!(
                target: "script",
                "{e} (this version is refused; the previous one keeps serving)"
            ),
        }
        let Some(w) = watcher.upgrade() else { return };
        if let Err(e) = add_dirs(&w, &mut dirs, &file, &h) {
            tracing::warn!(target: "script", "{}: cannot watch an imported file: {e}", h.name);
        }
    }
}
