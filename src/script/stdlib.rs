//! The built-in script library: `.rhai` plugins and filters from `stdlib/`,
//! compiled into the binary, usable by name (`--filter=offset`,
//! `nbdscript pattern 1G`) and importable as `import "std/NAME"`, and the
//! library modules scripts import (`import "std/fat" as fat;`).
//! Add a file with one line in `STDLIB` below.

/// Whether a built-in script is a plugin or a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdKind {
    Plugin,
    Filter,
    /// Only imported (`import "std/NAME" as x;`), never served by name.
    Module,
}

/// One built-in script.
pub struct StdScript {
    pub name: &'static str,
    pub kind: StdKind,
    /// The key a bare first value goes to (`nbdscript pattern 1G` = `size=1G`).
    pub magic_key: Option<&'static str>,
    pub source: &'static str,
}

/// Every built-in script.
static STDLIB: &[StdScript] = &[
    module("fat", include_str!("../../stdlib/fat.rhai")),
    module("gpt", include_str!("../../stdlib/gpt.rhai")),
    module("mbr", include_str!("../../stdlib/mbr.rhai")),
    module("sectors", include_str!("../../stdlib/sectors.rhai")),
];

const fn module(name: &'static str, source: &'static str) -> StdScript {
    StdScript {
        name,
        kind: StdKind::Module,
        magic_key: None,
        source,
    }
}

fn find(name: &str) -> Option<&'static StdScript> {
    let name = name.strip_suffix(".rhai").unwrap_or(name);
    STDLIB.iter().find(|s| s.name == name)
}

/// Names of the built-in scripts, sorted.
pub fn stdlib_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = STDLIB.iter().map(|s| s.name).collect();
    v.sort_unstable();
    v
}

/// The source of a built-in script.
pub fn stdlib_source(name: &str) -> Option<&'static str> {
    find(name).map(|s| s.source)
}

/// The one-line purpose from the file's first `//!` line (after `NAME.rhai:`).
fn description(src: &str) -> String {
    let line = src
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("//!"))
        .unwrap_or("")
        .trim();
    match line.split_once(": ") {
        Some((head, rest)) if head.ends_with(".rhai") => rest.trim().to_string(),
        _ => line.to_string(),
    }
}

fn list(kind: StdKind) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = STDLIB
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| (s.name.to_string(), description(s.source)))
        .collect();
    v.sort();
    v
}

/// `(name, description)` of the built-in script plugins.
pub fn stdlib_plugins() -> Vec<(String, String)> {
    list(StdKind::Plugin)
}

/// `(name, description)` of the built-in script filters.
pub fn stdlib_filters() -> Vec<(String, String)> {
    list(StdKind::Filter)
}

/// `(name, description)` of the library modules (`import "std/NAME"`).
pub fn stdlib_modules() -> Vec<(String, String)> {
    list(StdKind::Module)
}

pub fn stdlib_magic_key(name: &str) -> Option<&'static str> {
    find(name).and_then(|s| s.magic_key)
}

pub fn is_stdlib_plugin(name: &str) -> bool {
    find(name).is_some_and(|s| s.kind == StdKind::Plugin)
}

pub fn is_stdlib_filter(name: &str) -> bool {
    find(name).is_some_and(|s| s.kind == StdKind::Filter)
}

#[cfg(test)]
mod tests {
    #[test]
    fn description_from_header() {
        assert_eq!(
            super::description("#!/usr/bin/env nbdscript\n//! offset.rhai: serve part of a disk\n"),
            "serve part of a disk"
        );
        assert_eq!(super::description("//! a thing\n"), "a thing");
    }

    /// Every module compiles, has a `//!` header and a doc comment on
    /// every public function.
    #[test]
    fn modules_are_documented() {
        let mods = super::stdlib_modules();
        assert_eq!(
            mods.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["fat", "gpt", "mbr", "sectors"]
        );
        for s in super::STDLIB {
            assert!(
                s.source.starts_with(&format!("//! {}.rhai: ", s.name)),
                "{}",
                s.name
            );
            let lines: Vec<&str> = s.source.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.starts_with("fn ") {
                    assert!(
                        i > 0 && lines[i - 1].starts_with("///"),
                        "{}.rhai:{}: {l} has no doc comment",
                        s.name,
                        i + 1
                    );
                }
            }
        }
    }
}
