//! The data-string language of nbdkit's `data` plugin: lex, parse,
//! optimize and evaluate, byte-identical to nbdkit (1.32 grammar, plus
//! 1.44's size suffixes on decimal `@` offsets and 1.36's overflow
//! rejection). Errors quote the string with a caret under the fault.
//! Must not import tokio, rhai, or anything in this crate but `alloc`.
//!
//! # API
//!
//! ```
//! use nbdscript::datastr::{self, EvalOptions};
//! let opts = EvalOptions::default(); // <FILE and <(SCRIPT) refused
//! // Eager: the bytes (size `Some(n)` truncates or zero-extends).
//! let v = datastr::evaluate_to_vec("1 2 @^4 le16:0x55aa", None, &opts).unwrap();
//! assert_eq!(v, [1, 2, 0, 0, 0xaa, 0x55]);
//! // Lazy: repeats are never expanded; read any range.
//! let p = datastr::compile("( 0x55 0xAA )*4294967296", &opts).unwrap();
//! assert_eq!(p.size(), 8 << 30);
//! let mut buf = [0u8; 3];
//! p.read(&mut buf, (8 << 30) - 3);
//! assert_eq!(buf, [0xAA, 0x55, 0xAA]);
//! ```
//!
//! * [`compile`] → [`Pattern`]: `size()`, `read(buf, offset)` (any range;
//!   past the end reads zeros), `extents(offset, count)`, `resized(size)`,
//!   `dense_cost()` (bytes a plain allocator would have to store) and
//!   `write_into(&dyn Allocator)` (evaluate into an allocator as nbdkit does).
//! * [`evaluate_to_vec`] → `Vec<u8>` (refuses results over [`MAX_VEC`]).
//! * [`compile_with_ast`] and [`ast_lines_of`]: the optimized tree as the
//!   lines nbdkit's `-D data.AST=1` prints (with and without evaluating).
//! * [`EvalOptions`]: `allow_files` gates `<FILE` and `<(SCRIPT)` (the data
//!   plugin allows them; scripts refuse them unless the user allows it),
//!   `vars` are the `$VAR` values looked up first, then the environment if
//!   `use_env`.
//! * [`DataError`]: `message`, plus the string and byte offset it refers to;
//!   `Display` prints the message, the line, and a caret under the fault.

mod eval;
mod lexer;
mod optimize;
mod parser;
mod pattern;
mod print;

pub use pattern::{Pattern, PatternExtent};

use std::fmt;
use std::sync::Arc;

/// Largest result [`evaluate_to_vec`] will build in memory.
pub const MAX_VEC: u64 = 1 << 32;

/// Largest disk a data string may describe (nbdkit's limit, 2⁶³−1).
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// Options for evaluating a data string.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Allow `<FILE` and `<(SCRIPT)` (they read files and run `/bin/sh`).
    pub allow_files: bool,
    /// `$VAR` values, looked up before the environment.
    pub vars: Vec<(String, String)>,
    /// Fall back to the process environment for `$VAR`.
    pub use_env: bool,
}

impl EvalOptions {
    /// What the `data` plugin uses: files and scripts allowed, extra
    /// parameters as variables, then the environment.
    pub fn plugin(vars: Vec<(String, String)>) -> Self {
        EvalOptions {
            allow_files: true,
            vars,
            use_env: true,
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.vars.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if self.use_env {
            return std::env::var(name).ok();
        }
        None
    }
}

/// A source string an error points into: the data string itself or the
/// value of a `$VAR`.
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    /// `data` or `$NAME`.
    pub name: String,
    pub text: String,
}

/// Where in which source something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub src: Arc<Source>,
    pub offset: usize,
}

/// A data string that could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub message: String,
    pub at: Option<Span>,
}

impl DataError {
    pub fn new(message: impl Into<String>, at: Option<Span>) -> Self {
        DataError {
            message: message.into(),
            at,
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data string: {}", self.message)?;
        let Some(at) = &self.at else { return Ok(()) };
        let text = &at.src.text;
        let off = at.offset.min(text.len());
        let line_start = text[..off].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = text[off..]
            .find('\n')
            .map(|i| off + i)
            .unwrap_or(text.len());
        let line = &text[line_start..line_end];
        let lineno = text[..line_start].matches('\n').count() + 1;
        let col = text[line_start..off].chars().count();
        // Show tabs as spaces so the caret lines up.
        let shown: String = line
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        let where_ = if at.src.name == "data" {
            String::new()
        } else {
            format!(" (in {})", at.src.name)
        };
        write!(
            f,
            "\n  at offset {}{}{}:\n    {}\n    {}^",
            at.offset,
            if lineno > 1 {
                format!(", line {lineno}")
            } else {
                String::new()
            },
            where_,
            shown,
            " ".repeat(col)
        )
    }
}

impl std::error::Error for DataError {}

pub type Result<T> = std::result::Result<T, DataError>;

/// Parse, optimize and evaluate `src` into a lazy [`Pattern`] whose size
/// is nbdkit's implicit size.
pub fn compile(src: &str, opts: &EvalOptions) -> Result<Pattern> {
    on_big_stack(src, opts, |s, o| eval::evaluate(&tree(s, o)?))
}

/// [`compile`], plus the optimized tree as the lines nbdkit's data plugin
/// prints between `BEGIN AST (-D data.AST=1)` and `END AST`. The outer
/// error is a string that does not parse; the tree is printed (as in
/// nbdkit) even when evaluating it then fails (the inner error).
pub fn compile_with_ast(src: &str, opts: &EvalOptions) -> Result<(Vec<String>, Result<Pattern>)> {
    on_big_stack(src, opts, |s, o| {
        let ast = tree(s, o)?;
        Ok((print::ast_lines(&ast), eval::evaluate(&ast)))
    })
}

/// The optimized tree's lines (as [`compile_with_ast`]) without
/// evaluating it: files are not read and scripts do not run.
pub fn ast_lines_of(src: &str, opts: &EvalOptions) -> Result<Vec<String>> {
    on_big_stack(src, opts, |s, o| Ok(print::ast_lines(&tree(s, o)?)))
}

/// Run `f` here, or for long strings and `$VAR`s (deeply nested strings
/// recurse deeply) on a thread with a big stack.
fn on_big_stack<T: Send + 'static>(
    src: &str,
    opts: &EvalOptions,
    f: fn(&str, &EvalOptions) -> Result<T>,
) -> Result<T> {
    if src.len() > 4096 || src.contains('$') {
        let (s, o) = (src.to_string(), opts.clone());
        let worker = std::thread::Builder::new()
            .name("datastr".into())
            .stack_size(256 << 20)
            .spawn(move || f(&s, &o))
            .map_err(|e| DataError::new(format!("cannot start the evaluator: {e}"), None))?;
        return worker
            .join()
            .unwrap_or_else(|_| Err(DataError::new("the evaluator failed", None)));
    }
    f(src, opts)
}

/// Parse and optimize.
fn tree(src: &str, opts: &EvalOptions) -> Result<parser::Node> {
    let source = Arc::new(Source {
        name: "data".into(),
        text: src.to_string(),
    });
    optimize::optimize(parser::parse(source, opts)?)
}

/// Evaluate `src` to its bytes. `size` truncates or zero-extends, as the
/// plugin's `size=` does.
pub fn evaluate_to_vec(src: &str, size: Option<u64>, opts: &EvalOptions) -> Result<Vec<u8>> {
    let mut p = compile(src, opts)?;
    if let Some(s) = size {
        p = p.resized(s);
    }
    p.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_fault() {
        let e = compile("1 2 256 3", &EvalOptions::default()).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("0..255"), "{s}");
        assert!(s.ends_with("    1 2 256 3\n        ^"), "{s}");
        let e = compile("1\n  2 @-9", &EvalOptions::default()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("line 2") && s.ends_with("      2 @-9\n        ^"),
            "{s}"
        );
    }

    #[test]
    fn vars_before_env() {
        let opts = EvalOptions {
            vars: vec![("p".into(), "0x55 0xAA".into())],
            ..Default::default()
        };
        assert_eq!(
            evaluate_to_vec("$p*2", None, &opts).unwrap(),
            [0x55, 0xAA, 0x55, 0xAA]
        );
        let e = evaluate_to_vec("$nope", None, &opts).unwrap_err();
        assert!(e.message.contains("$nope"), "{e}");
    }

    #[test]
    fn sizes() {
        let o = EvalOptions::default();
        assert_eq!(evaluate_to_vec("1 2 3", Some(2), &o).unwrap(), [1, 2]);
        assert_eq!(evaluate_to_vec("1", Some(3), &o).unwrap(), [1, 0, 0]);
        assert_eq!(evaluate_to_vec("", None, &o).unwrap(), [] as [u8; 0]);
    }
}
