//! The optimizer: the same rewrites as nbdkit's `optimize_ast`, because
//! some are observable (`X*0` and `X[n:n]` are dropped without evaluating
//! X; `<(SCRIPT)[:N]` is recognised after `( )` around it is removed;
//! `1[5:1]` folds to the byte). Adjacent bytes merge into strings, runs
//! into fills, `X*A*B` into `X*(AB)` (an overflow is an error, as in
//! nbdkit ≥ 1.36), a string of at most 512 bytes repeated at most 4 times
//! is written out: the tree `-D data.AST=1` prints is nbdkit's.
//! Must not import outside `datastr`.

use super::parser::{Expr, Node};
use super::{DataError, Result};

/// Optimize a tree (consumes it).
pub fn optimize(root: Node) -> Result<Node> {
    let span = root.span.clone();
    let expr = match root.expr {
        Expr::List(items) => return optimize_list(items, span),
        Expr::Assign(name, inner) => Expr::Assign(name, Box::new(optimize(*inner)?)),
        Expr::Repeat(_, 0) => Expr::Null,
        Expr::Repeat(inner, n) => {
            let inner = optimize(*inner)?;
            let overflow = |a: u64, b: u64| {
                DataError::new(
                    format!("*N: multiplication overflow: {a}*{b}"),
                    Some(span.clone()),
                )
            };
            if n == 1 || matches!(inner.expr, Expr::Null) {
                return Ok(inner);
            }
            match inner.expr {
                Expr::Repeat(x, m) => {
                    Expr::Repeat(x, n.checked_mul(m).ok_or_else(|| overflow(n, m))?)
                }
                Expr::Fill(b, m) => Expr::Fill(b, n.checked_mul(m).ok_or_else(|| overflow(n, m))?),
                // nbdkit's limits, so that the tree (-D data.AST=1) is
                // the same as nbdkit's.
                Expr::Bytes(ref s) if n <= 4 && s.len() <= 512 => Expr::Bytes(s.repeat(n as usize)),
                ref e => match single_byte(e) {
                    Some(b) => Expr::Fill(b, n),
                    None => Expr::Repeat(Box::new(inner), n),
                },
            }
        }
        Expr::Slice(inner, n, m) => {
            if n == m as u64 {
                Expr::Null
            } else {
                let inner = optimize(*inner)?;
                match fold_slice(&inner.expr, n, m) {
                    Some(e) => e,
                    None => Expr::Slice(Box::new(inner), n, m),
                }
            }
        }
        Expr::Bytes(s) if s.is_empty() => Expr::Null,
        Expr::Bytes(s) if s.len() > 1 && s.iter().all(|&c| c == s[0]) => {
            Expr::Fill(s[0], s.len() as u64)
        }
        Expr::Fill(_, 0) => Expr::Null,
        e => e,
    };
    Ok(Node { expr, span })
}

fn optimize_list(items: Vec<Node>, span: super::Span) -> Result<Node> {
    let mut list: Vec<Node> = Vec::with_capacity(items.len());
    for item in items {
        let item = optimize(item)?;
        match item.expr {
            Expr::Null => {}
            Expr::List(inner) if inner.iter().all(|n| safe_to_inline(&n.expr)) => {
                list.extend(inner)
            }
            _ => list.push(item),
        }
    }
    // Combine adjacent pairs where possible.
    let mut out: Vec<Node> = Vec::with_capacity(list.len());
    for item in list {
        if let Some(prev) = out.last_mut() {
            if let Some(e) = combine(&mut prev.expr, &item.expr)? {
                prev.expr = e;
                continue;
            }
        }
        out.push(item);
    }
    if out.is_empty() {
        return Ok(Node {
            expr: Expr::Null,
            span,
        });
    }
    if out.len() == 1 && safe_to_inline(&out[0].expr) {
        if let Some(n) = out.pop() {
            return Ok(n);
        }
    }
    Ok(Node {
        expr: Expr::List(out),
        span,
    })
}

/// Can this be moved into an enclosing list without changing scoping?
fn safe_to_inline(e: &Expr) -> bool {
    !matches!(
        e,
        Expr::Assign(..)
            | Expr::Name(_)
            | Expr::AbsOffset(_)
            | Expr::RelOffset(_)
            | Expr::AlignOffset(_)
    )
}

fn single_byte(e: &Expr) -> Option<u8> {
    match e {
        Expr::Byte(b) => Some(*b),
        Expr::List(l) if l.len() == 1 => single_byte(&l[0].expr),
        Expr::Bytes(s) if s.len() == 1 => Some(s[0]),
        Expr::Fill(b, 1) => Some(*b),
        Expr::Repeat(x, 1) => single_byte(&x.expr),
        _ => None,
    }
}

/// nbdkit's constant slice folding (deliberately conservative).
fn fold_slice(e: &Expr, n: u64, m: i64) -> Option<Expr> {
    let to_end = m == -1;
    match e {
        Expr::Null if m == 0 || (n == 0 && to_end) => Some(Expr::Null),
        Expr::Byte(b) if m == 1 || (n == 0 && to_end) => Some(Expr::Byte(*b)),
        Expr::Bytes(s) => {
            let len = s.len() as u64;
            let (a, z) = if m >= 0 && n <= m as u64 && m as u64 <= len {
                (n, m as u64)
            } else if to_end && n <= len {
                (n, len)
            } else {
                return None;
            };
            Some(if z - a == 1 {
                Expr::Byte(s[a as usize])
            } else {
                Expr::Bytes(s[a as usize..z as usize].to_vec())
            })
        }
        Expr::Fill(b, len) => {
            let len = *len;
            let k = if m >= 0 && n <= m as u64 && m as u64 <= len {
                m as u64 - n
            } else if to_end && n <= len {
                len - n
            } else {
                return None;
            };
            Some(if k == 1 {
                Expr::Byte(*b)
            } else {
                Expr::Fill(*b, k)
            })
        }
        _ => None,
    }
}

/// nbdkit's `exprs_can_combine`.
fn combine(a: &mut Expr, b: &Expr) -> Result<Option<Expr>> {
    let add = |x: u64, y: u64| {
        x.checked_add(y)
            .ok_or_else(|| DataError::new("fill length overflow", None))
    };
    Ok(match (a, b) {
        (Expr::Byte(x), Expr::Byte(y)) if x == y => Some(Expr::Fill(*x, 2)),
        (Expr::Byte(x), Expr::Byte(y)) => Some(Expr::Bytes(vec![*x, *y])),
        (Expr::Byte(x), Expr::Bytes(s)) => {
            let mut v = Vec::with_capacity(s.len() + 1);
            v.push(*x);
            v.extend_from_slice(s);
            Some(Expr::Bytes(v))
        }
        (Expr::Byte(x), Expr::Fill(y, n)) if x == y => Some(Expr::Fill(*y, add(*n, 1)?)),
        (Expr::Bytes(s), Expr::Byte(y)) => {
            let mut v = std::mem::take(s);
            v.push(*y);
            Some(Expr::Bytes(v))
        }
        (Expr::Bytes(s), Expr::Bytes(t)) => {
            let mut v = std::mem::take(s);
            v.extend_from_slice(t);
            Some(Expr::Bytes(v))
        }
        (Expr::Fill(x, n), Expr::Byte(y)) if x == y => Some(Expr::Fill(*x, add(*n, 1)?)),
        (Expr::Fill(x, n), Expr::Fill(y, k)) if x == y => Some(Expr::Fill(*x, add(*n, *k)?)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::super::{EvalOptions, Source};
    use super::*;
    use std::sync::Arc;

    fn opt(s: &str) -> Result<Expr> {
        let src = Arc::new(Source {
            name: "data".into(),
            text: s.into(),
        });
        optimize(parse(src, &EvalOptions::default())?).map(|n| n.expr)
    }

    #[test]
    fn rewrites() {
        assert!(matches!(opt("1 2 3").unwrap(), Expr::Bytes(v) if v == [1, 2, 3]));
        assert!(matches!(opt("7 7 7").unwrap(), Expr::Fill(7, 3)));
        assert!(matches!(opt("(1 2)*3*4").unwrap(), Expr::Bytes(v) if v.len() == 24));
        assert!(matches!(opt("(1 2)*5*4").unwrap(), Expr::Repeat(_, 20)));
        assert!(matches!(opt("(1 2)*4").unwrap(), Expr::Bytes(v) if v.len() == 8));
        assert!(matches!(opt("(1 2)*5").unwrap(), Expr::Repeat(_, 5)));
        assert!(matches!(opt("((1 2)*2)*2").unwrap(), Expr::Bytes(v) if v.len() == 8));
        assert!(matches!(
            opt("(1 2)*3000*4").unwrap(),
            Expr::Repeat(_, 12000)
        ));
        assert!(matches!(opt("0*5*6").unwrap(), Expr::Fill(0, 30)));
        assert!(matches!(opt("\\undefined*0").unwrap(), Expr::Null));
        assert!(matches!(opt("\\undefined[3:3]").unwrap(), Expr::Null));
        assert!(matches!(opt("1[5:1]").unwrap(), Expr::Byte(1)));
        assert!(matches!(opt("\"abc\"[1:]").unwrap(), Expr::Bytes(v) if v == b"bc"));
        assert!(matches!(opt("((@1 2))").unwrap(), Expr::List(_)));
        assert!(matches!(opt("()").unwrap(), Expr::Null));
    }

    #[test]
    fn overflow_is_an_error() {
        let e = opt("0*0x100000000*0x100000000").unwrap_err();
        assert!(e.message.contains("overflow"), "{e}");
        let e = opt("(1 2)*0x100000000*0x100000000").unwrap_err();
        assert!(e.message.contains("overflow"), "{e}");
    }
}
