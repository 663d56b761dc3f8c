//! `Host`: one loaded script (plugin or filter) shared by every
//! connection: the current compiled `Code` (swapped atomically on reload),
//! the state from `config`, its thread model and declarations. Loading runs
//! `config` and `rebuild`; reloading compiles a new version, runs its
//! `rebuild` and swaps it in, saying what changed for open connections.
//! Only `src/script/` may import rhai.

use super::call::{call_raw, Args};
use super::code::{compile, parse_model, share_entries, Cb, Code, Kind};
use super::engine::Imports;
use super::memory::Budget;
use super::{dump, rebuild, report};
use super::{ScriptOptions, ScriptSource};
use crate::backend::ThreadModel;
use crate::params::{ConfigError, Params};
use arc_swap::ArcSwap;
use rhai::{Dynamic, Map};
use std::sync::Arc;

/// A loaded script, shared by the plugin/filter and all its connections.
pub struct Host {
    pub code: ArcSwap<Code>,
    pub opts: ScriptOptions,
    /// What `config` returned (entries shared, so changes persist).
    pub state: Dynamic,
    /// File name for messages (`ramdisk.rhai`, `stdlib/offset.rhai`, `<stdin>`).
    pub name: String,
    pub model: ThreadModel,
    /// Held around every call under `serialize_all_requests`.
    pub global: parking_lot::Mutex<()>,
    pub kind: Kind,
    pub source: ScriptSource,
    pub imports: Imports,
    /// The parameter keys the script declares with `fn params()`.
    pub declared: Option<Vec<String>>,
    /// The text of `fn config` the process started with (it ran then).
    config_at_start: Option<String>,
    /// What the script holds, against `--script-memory`.
    pub budget: Budget,
    /// What it declares (`params()`, `thread_model()`, `magic_key()`).
    pub about: dump::Declared,
}

impl Drop for Host {
    /// The script is unloaded (at exit): log the counts still pending.
    fn drop(&mut self) {
        report::flush();
    }
}

impl Host {
    pub fn load(
        source: &ScriptSource,
        params: &Params,
        opts: &ScriptOptions,
        kind: Kind,
    ) -> Result<Host, ConfigError> {
        let text = source.text().map_err(ConfigError::new)?;
        let name = source.display_name();
        let imports = Imports::default();
        let budget = Budget::new(opts.max_memory);
        let code = compile(source, &imports, opts, &text, &name, kind).map_err(ConfigError::new)?;
        let about = dump::declarations(&code, opts, &budget, &name, &text)?;
        let declared = about
            .params
            .as_ref()
            .map(|p| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
        if let (Kind::Plugin, Some(d)) = (kind, &declared) {
            if let Some((k, v)) = params.items.iter().find(|(k, _)| !d.contains(k)) {
                return Err(ConfigError::new(format!(
                    "{name}: unknown parameter {k}={v}; accepted: {}",
                    d.join(", ")
                )));
            }
        }
        let mut pm = Map::new();
        for (k, v) in &params.items {
            if declared.as_ref().is_none_or(|d| d.contains(k)) {
                pm.insert(k.as_str().into(), Dynamic::from(v.clone()));
            }
        }
        let pm = Dynamic::from_map(pm);
        let state = if code.has(Cb::Config) {
            call_raw(opts, &budget, &code, &name, Cb::Config, || Args::new([pm]))
                .map_err(|e| ConfigError::new(format!("{name}: config failed: {}", e.message)))?
        } else {
            pm
        };
        let model = about
            .model
            .as_deref()
            .and_then(parse_model)
            .unwrap_or(ThreadModel::SerializeAllRequests);
        let state = share_entries(state);
        rebuild::at_start(&code, &name, opts, &budget, &state)?;
        Ok(Host {
            code: ArcSwap::from_pointee(code),
            opts: opts.clone(),
            state,
            name,
            model,
            global: parking_lot::Mutex::new(()),
            kind,
            source: source.clone(),
            imports,
            declared,
            config_at_start: config_text(&text),
            budget,
            about,
        })
    }

    /// Recompile from the source; on success swap the code in atomically
    /// and log what changed for live connections. A version that fails to
    /// compile, or that adds `config` when the process started without one
    /// (it runs only at start-up), is refused and the old one keeps
    /// serving. A changed `config` body is accepted and reported as taking
    /// effect at restart.
    pub fn reload(&self) -> Result<(), String> {
        let text = self.source.text()?;
        let code = compile(
            &self.source,
            &self.imports,
            &self.opts,
            &text,
            &self.name,
            self.kind,
        )?;
        let config = config_text(&text);
        match (&self.config_at_start, &config) {
            (None, Some(_)) => {
                return Err(format!(
                    "{}: this version adds fn config(), which runs only at start-up; restart nbdscript to use it",
                    code.at(&self.name, Cb::Config)
                ))
            }
            (Some(a), Some(b)) if a != b => tracing::warn!(
                target: "script",
                "{}: config: changed; config runs only at start-up, so the change takes effect at restart (the running state is kept)",
                code.at(&self.name, Cb::Config)
            ),
            _ => {}
        }
        let old = self.code.load_full();
        self.then_swap(code)?;
        let new = self.code.load();
        for cb in old.defined().filter(|cb| !new.has(*cb)) {
            if let Some(what) = consequence(cb, false) {
                tracing::warn!(target: "script", "{}: this version removes fn {}: {what}", self.name, cb.name());
            }
        }
        for cb in new.defined().filter(|cb| !old.has(*cb)) {
            if let Some(what) = consequence(cb, true) {
                tracing::warn!(target: "script", "{}: this version adds fn {}: {what}", new.at(&self.name, cb), cb.name());
            }
        }
        Ok(())
    }

    /// Run the new version's `rebuild(state)` (under the global lock for
    /// `serialize_all_requests`), then swap the version in.
    fn then_swap(&self, code: Code) -> Result<(), String> {
        let _g = (code.has(Cb::Rebuild) && self.model == ThreadModel::SerializeAllRequests)
            .then(|| self.global.lock());
        rebuild::run(&code, &self.name, &self.opts, &self.budget, &self.state)?;
        self.code.store(Arc::new(code));
        Ok(())
    }

    /// The handle for a new connection from `open`'s result (or the state).
    pub fn make_handle(&self, v: Dynamic) -> Dynamic {
        share_entries(v)
    }
}

/// The text of `fn config(...) { ... }` (to compare versions), if defined.
fn config_text(text: &str) -> Option<String> {
    let start = text
        .match_indices("fn config(")
        .map(|(i, _)| i)
        .find(|&i| {
            text[..i]
                .rsplit('\n')
                .next()
                .is_some_and(|l| l.trim().is_empty())
        })?;
    let body = &text[start..];
    let open = body.find('{')?;
    let (mut depth, mut quote) = (0usize, None);
    let mut prev = ' ';
    for (i, c) in body.char_indices().skip_while(|(i, _)| *i < open) {
        match (quote, c) {
            (Some(q), c) if c == q && prev != '\\' => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`' | '\'') => quote = Some(c),
            (None, '{') => depth += 1,
            (None, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(body[..=i].to_string());
                }
            }
            _ => {}
        }
        prev = c;
    }
    Some(body.to_string())
}

/// What adding or removing a callback means for connections already open
/// (they keep what they negotiated).
fn consequence(cb: Cb, added: bool) -> Option<&'static str> {
    let after = |e| {
        if added {
            "connections already open negotiated without it; new connections get it"
        } else {
            e
        }
    };
    Some(match cb {
        Cb::Pwrite => {
            after("connections already open negotiated writes; their writes now fail with EPERM")
        }
        Cb::Trim => {
            after("connections already open negotiated trim; their trims now fail with ENOTSUP")
        }
        Cb::Zero => {
            after("connections already open negotiated zero; their zeroes now fail with ENOTSUP")
        }
        Cb::Flush => {
            after("connections already open negotiated flush; their flushes now do nothing")
        }
        Cb::Extents => after("connections already open now see the whole disk as data"),
        Cb::Cache => {
            after("connections already open negotiated cache; their cache requests now do nothing")
        }
        Cb::CanWrite
        | Cb::CanFlush
        | Cb::CanTrim
        | Cb::CanZero
        | Cb::CanFastZero
        | Cb::CanExtents
        | Cb::CanFua
        | Cb::CanMultiConn
        | Cb::CanCache
        | Cb::IsRotational
        | Cb::BlockSize
        | Cb::GetSize
        | Cb::ExportDescription => {
            "connections already open keep what they negotiated; new connections get the new answer"
        }
        _ => return None,
    })
}
