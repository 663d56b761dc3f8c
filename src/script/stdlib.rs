//! The built-in script library: `.rhai` plugins and filters from `stdlib/`,
//! compiled into the binary, usable by name (`--filter=offset`) and
//! importable as `import "std/NAME"`. Add a file with one line below.

/// `(name, source)` of every built-in script.
static STDLIB: &[(&str, &str)] = &[
    // ("offset", include_str!("../../stdlib/offset.rhai")),
];

/// Names of the built-in scripts, sorted.
pub fn stdlib_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
    v.sort_unstable();
    v
}

/// The source of a built-in script.
pub fn stdlib_source(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".rhai").unwrap_or(name);
    STDLIB.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
