//! The data-string parser: one pass over the bytes, building the AST the
//! way nbdkit's parser does (postfix `*N`, `[N:M]` and `-> \NAME` take the
//! last element of the current list; `( )` and `$VAR` make nested lists).
//! `$VAR` values are parsed here, as nbdkit does. No evaluation.
//! Must not import outside `datastr`.

use super::lexer::{self, is_space};
use super::{DataError, EvalOptions, Result, Source, Span};
use std::sync::Arc;

/// One node of the syntax tree, with where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    pub expr: Expr,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Expr {
    /// No effect (produced by the optimizer).
    Null,
    /// A nested scope: `( ... )`, `$VAR`, or the whole string.
    List(Vec<Node>),
    Byte(u8),
    /// `@N`
    AbsOffset(u64),
    /// `@+N` / `@-N`
    RelOffset(i64),
    /// `@^N` (a power of two)
    AlignOffset(u64),
    File(String),
    Script(String),
    Bytes(Vec<u8>),
    /// The optimizer's run of one byte.
    Fill(u8, u64),
    Name(String),
    Assign(String, Box<Node>),
    Repeat(Box<Node>, u64),
    /// `[n:m]`; `m < 0` means "to the end". `n` is nbdkit's unsigned copy
    /// of what was written (so `-1` is huge).
    Slice(Box<Node>, u64, i64),
}

impl Expr {
    /// Offsets cannot be repeated, sliced or named.
    pub fn is_data(&self) -> bool {
        !matches!(
            self,
            Expr::AbsOffset(_) | Expr::RelOffset(_) | Expr::AlignOffset(_)
        )
    }
}

/// Deepest `( )` / `$VAR` nesting accepted (keeps recursion bounded).
pub const MAX_DEPTH: usize = 10_000;

struct Parser<'a> {
    src: Arc<Source>,
    s: &'a [u8],
    opts: &'a EvalOptions,
    /// `$VAR` nesting, to refuse a variable that includes itself forever.
    var_depth: usize,
}

/// Parse a whole data string into a `List` node.
pub fn parse(src: Arc<Source>, opts: &EvalOptions) -> Result<Node> {
    parse_with_depth(src, opts, 0)
}

fn parse_with_depth(src: Arc<Source>, opts: &EvalOptions, var_depth: usize) -> Result<Node> {
    let text = src.clone();
    let p = Parser {
        src: src.clone(),
        s: text.text.as_bytes(),
        opts,
        var_depth,
    };
    let mut i = 0;
    p.list(0, &mut i)
}

impl Parser<'_> {
    fn span(&self, offset: usize) -> Span {
        Span {
            src: self.src.clone(),
            offset,
        }
    }

    fn err<T>(&self, msg: impl Into<String>, offset: usize) -> Result<T> {
        Err(DataError::new(msg, Some(self.span(offset))))
    }

    fn parse_error<T>(&self, offset: usize, what: &str) -> Result<T> {
        self.err(format!("parsing error: {what}"), offset)
    }

    fn node(&self, expr: Expr, offset: usize) -> Node {
        Node {
            expr,
            span: self.span(offset),
        }
    }

    /// Take the last element of `list` for a postfix operator.
    fn take_last(&self, list: &mut Vec<Node>, op: &str, at: usize) -> Result<Node> {
        match list.last() {
            None => self.err(format!("{op} must follow an expression"), at),
            Some(n) if !n.expr.is_data() => self.err(
                format!("{op} cannot be applied to an offset (@...) expression"),
                at,
            ),
            Some(_) => list.pop().map_or_else(
                || self.err(format!("{op} must follow an expression"), at),
                Ok,
            ),
        }
    }

    /// A number after `@`, `@+`, `@-` or `@^`, with 1.44's size suffix.
    fn offset_arg(&self, i: &mut usize, what: &str, start: usize) -> Result<i64> {
        let s = self.s;
        let Some((neg, _, n, radix)) = lexer::scan_magnitude(s, *i) else {
            return self.parse_error(*i, &format!("expected a number after {what}"));
        };
        let Some((v, _)) = lexer::scan_i64(s, *i) else {
            return self.parse_error(*i, &format!("expected a number after {what}"));
        };
        if v < 0 {
            return self.err(format!("{what}N must not be negative"), start);
        }
        let mut v = v as u64;
        if let Some((mult, k)) = lexer::scan_suffix(s, *i, n, radix) {
            if !neg {
                v = match v.checked_mul(mult) {
                    Some(x) if x <= super::MAX_SIZE => x,
                    _ => {
                        return self.err(
                            format!("{what}N with its size suffix is larger than 2^63-1"),
                            start,
                        )
                    }
                };
                *i += k;
            }
        }
        *i += n;
        Ok(v as i64)
    }

    fn list(&self, level: usize, i: &mut usize) -> Result<Node> {
        let s = self.s;
        let open = i.saturating_sub(1);
        let mut list: Vec<Node> = Vec::new();
        if level > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"), open);
        }
        while *i < s.len() {
            let at = *i;
            match s[at] {
                b'#' => {
                    while *i < s.len() && s[*i] != b'\n' {
                        *i += 1;
                    }
                }
                b'@' => {
                    *i += 1;
                    let Some(&c) = s.get(*i) else {
                        return self.parse_error(at, "@ must be followed by an offset");
                    };
                    let e = match c {
                        b'+' => {
                            *i += 1;
                            Expr::RelOffset(self.offset_arg(i, "@+", at)?)
                        }
                        b'-' => {
                            *i += 1;
                            Expr::RelOffset(-self.offset_arg(i, "@-", at)?)
                        }
                        b'^' => {
                            *i += 1;
                            let a = self.offset_arg(i, "@^", at)? as u64;
                            if !a.is_power_of_two() {
                                return self
                                    .err(format!("@^{a}: the alignment must be a power of 2"), at);
                            }
                            Expr::AlignOffset(a)
                        }
                        b'0'..=b'9' => Expr::AbsOffset(self.offset_arg(i, "@", at)? as u64),
                        _ => {
                            return self.parse_error(
                                *i,
                                "@ must be followed by OFFSET, +N, -N or ^ALIGNMENT",
                            )
                        }
                    };
                    list.push(self.node(e, at));
                }
                b'(' => {
                    *i += 1;
                    let mut inner = self.list(level + 1, i)?;
                    inner.span = self.span(at);
                    list.push(inner);
                }
                b')' => {
                    if level == 0 {
                        return self.err("unmatched ')'", at);
                    }
                    *i += 1;
                    return Ok(self.node(Expr::List(list), open));
                }
                b'*' => {
                    *i += 1;
                    let inner = self.take_last(&mut list, "*N", at)?;
                    let Some((n, k)) = lexer::scan_i64(s, *i) else {
                        return self.err("*N: N is not a number", *i);
                    };
                    if n < 0 {
                        return self.err("*N: N must not be negative", at + 1);
                    }
                    *i += k;
                    list.push(self.node(Expr::Repeat(Box::new(inner), n as u64), at));
                }
                b'[' => {
                    *i += 1;
                    let inner = self.take_last(&mut list, "[N:M]", at)?;
                    let (n, m) = self.slice_args(i, at)?;
                    list.push(self.node(Expr::Slice(Box::new(inner), n as u64, m), at));
                }
                b'<' => {
                    if s.get(at + 1) == Some(&b'(') {
                        *i += 2;
                        let Some(len) = lexer::scan_script(s, *i) else {
                            return self.parse_error(
                                *i,
                                "<(SCRIPT) must be non-empty and end with a matching ')'",
                            );
                        };
                        let script = String::from_utf8_lossy(&s[*i..*i + len]).into_owned();
                        *i += len + 1;
                        self.check_files(at, "<(SCRIPT)")?;
                        list.push(self.node(Expr::Script(script), at));
                    } else {
                        *i += 1;
                        let len = lexer::scan_filename(s, *i);
                        if len == 0 {
                            return self.err("<FILE: expected a file name after '<'", *i);
                        }
                        let f = String::from_utf8_lossy(&s[*i..*i + len]).into_owned();
                        *i += len;
                        self.check_files(at, "<FILE")?;
                        list.push(self.node(Expr::File(f), at));
                    }
                }
                b'"' => {
                    let (bytes, next) =
                        lexer::scan_string(s, at + 1).or_else(|(m, o)| self.err(m, o))?;
                    *i = next;
                    list.push(self.node(Expr::Bytes(bytes), at));
                }
                b'\\' => {
                    let (start, len) = lexer::scan_name(s, at);
                    if len == 0 {
                        return self.parse_error(at, "expected \\NAME ([A-Za-z0-9_-]+)");
                    }
                    let name = String::from_utf8_lossy(&s[start..start + len]).into_owned();
                    *i = start + len;
                    list.push(self.node(Expr::Name(name), at));
                }
                b'-' => {
                    *i += 1;
                    if s.get(*i) != Some(&b'>') {
                        return self.parse_error(*i, "expected '->' (assignment)");
                    }
                    *i += 1;
                    let inner = self.take_last(&mut list, "-> \\NAME", at)?;
                    let (start, len) = lexer::scan_name(s, *i);
                    if len == 0 {
                        return self.parse_error(start, "expected \\NAME after '->'");
                    }
                    let name = String::from_utf8_lossy(&s[start..start + len]).into_owned();
                    *i = start + len;
                    list.push(self.node(Expr::Assign(name, Box::new(inner)), at));
                }
                b'$' => {
                    let (start, len) = lexer::scan_var(s, at);
                    if len == 0 {
                        return self.parse_error(
                            at + 1,
                            "expected a variable name ([A-Za-z_][A-Za-z0-9_]*) after '$'",
                        );
                    }
                    let name = String::from_utf8_lossy(&s[start..start + len]).into_owned();
                    *i = start + len;
                    list.push(self.var(&name, at)?);
                }
                b'0'..=b'9' => {
                    let Some((v, n)) = lexer::scan_int(s, at) else {
                        return self.parse_error(at, "expected a number");
                    };
                    if !(0..=255).contains(&v) {
                        return self.err(format!("BYTE must be in the range 0..255 (got {v})"), at);
                    }
                    *i += n;
                    list.push(self.node(Expr::Byte(v as u8), at));
                }
                b'l' | b'b' => {
                    let (bytes, next) = lexer::scan_word(s, at).or_else(|(m, o)| self.err(m, o))?;
                    *i = next;
                    list.push(self.node(Expr::Bytes(bytes), at));
                }
                c if is_space(c) => *i += 1,
                _ => return self.parse_error(at, "unexpected character"),
            }
        }
        if level > 0 {
            return self.err("unmatched '(': no closing ')' before the end", open);
        }
        Ok(self.node(Expr::List(list), 0))
    }

    /// `[N:M]`, `[:M]`, `[N:]`, `[:]` after the `[` at `open`.
    fn slice_args(&self, i: &mut usize, open: usize) -> Result<(i64, i64)> {
        let s = self.s;
        let bad = |p: usize| self.err("[N:M]: expected [N:M], [:M], [N:] or [:] with numbers", p);
        let mut p = *i;
        let mut n = 0i64;
        if let Some((v, k)) = lexer::scan_i64(s, p) {
            n = v;
            p += k;
        }
        if s.get(p) != Some(&b':') {
            return bad(p.min(s.len()));
        }
        p += 1;
        let mut m = -1i64;
        if let Some((v, k)) = lexer::scan_i64(s, p) {
            m = v;
            p += k;
        }
        if s.get(p) != Some(&b']') {
            return bad(p.min(s.len()));
        }
        let _ = open;
        *i = p + 1;
        Ok((n, m))
    }

    fn check_files(&self, at: usize, what: &str) -> Result<()> {
        if self.opts.allow_files {
            Ok(())
        } else {
            self.err(
                format!("{what} is not allowed here (files and scripts are disabled)"),
                at,
            )
        }
    }

    /// `$NAME`: parsed as a data string of its own, in a nested scope.
    fn var(&self, name: &str, at: usize) -> Result<Node> {
        let Some(value) = self.opts.lookup(name) else {
            return self.err(
                format!(
                    "${name}: variable not found (give {name}=... or set it in the environment)"
                ),
                at,
            );
        };
        if self.var_depth >= 64 {
            return self.err(format!("${name}: variables nested too deeply"), at);
        }
        let src = Arc::new(Source {
            name: format!("${name}"),
            text: value,
        });
        let mut node = parse_with_depth(src, self.opts, self.var_depth + 1)?;
        node.span = self.span(at);
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Node> {
        let opts = EvalOptions {
            allow_files: true,
            vars: vec![("v".into(), "1 2".into()), ("bad".into(), "1 )".into())],
            use_env: false,
        };
        parse(
            Arc::new(Source {
                name: "data".into(),
                text: s.into(),
            }),
            &opts,
        )
    }

    fn list_len(n: &Node) -> usize {
        match &n.expr {
            Expr::List(l) => l.len(),
            _ => usize::MAX,
        }
    }

    #[test]
    fn postfix_binds_to_last() {
        let n = p("0x55 0xAA * 2").unwrap();
        assert_eq!(list_len(&n), 2);
        let n = p("\"ab\"*3[1:4] -> \\x \\x").unwrap();
        assert_eq!(list_len(&n), 2);
        assert_eq!(list_len(&p("(1 2) $v # c\n 3").unwrap()), 3);
    }

    #[test]
    fn rejects() {
        for (s, want) in [
            ("256", "0..255"),
            ("*2", "must follow"),
            ("@1*2", "offset"),
            ("(1", "unmatched '('"),
            ("1)", "unmatched ')'"),
            ("1 -", "'->'"),
            ("@^3", "power of 2"),
            ("@-", "number"),
            ("\"ab\"[:2 ]", "[N:M]"),
            ("$nope", "not found"),
            ("$bad", "unmatched ')'"),
            ("<()", "<(SCRIPT)"),
            ("x", "unexpected"),
            ("1*x", "not a number"),
            ("@4k2", "parsing error"),
        ] {
            let e = p(s).map(|_| ()).unwrap_err();
            assert!(e.message.contains(want), "{s}: {e}");
        }
        // `@4k2` fails only because "k2" is not a suffix; `@4k` is fine.
        assert!(p("@4k").is_ok());
        assert!(p("@4k)").is_err());
        assert!(p("(@4k)").is_ok());
    }

    #[test]
    fn files_refused_when_disabled() {
        let opts = EvalOptions::default();
        let src = Arc::new(Source {
            name: "data".into(),
            text: "1 </etc/passwd".into(),
        });
        let e = parse(src, &opts).unwrap_err();
        assert!(e.message.contains("not allowed"), "{e}");
    }
}
