//! The evaluator: walks the optimized tree exactly as nbdkit's `evaluate`
//! does (a cursor per scope, every element extends the scope's size to the
//! cursor, nested scopes are placed as one block, later writes win) but
//! builds a lazy [`Pattern`] instead of filling RAM. Also runs `<FILE` and
//! `<(SCRIPT)` (the only I/O in `datastr`). Must not import outside
//! `datastr` (and `pattern`'s use of `alloc`).

use super::parser::{Expr, Node};
use super::pattern::{Node as PNode, Pattern, MATERIALIZE};
use super::{DataError, Result, Span, MAX_SIZE};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::rc::Rc;

/// Evaluate an optimized tree.
pub fn evaluate(root: &Node) -> Result<Pattern> {
    let p = eval_scope(&None, root)?;
    if p.depth() > 1000 {
        return Err(DataError::new(
            "the evaluated pattern is nested too deeply to serve (over 1000 levels)",
            Some(root.span.clone()),
        ));
    }
    Ok(p)
}

/// A name bound by `-> \NAME`, with the bindings visible where it was
/// made (nbdkit evaluates a name in its assignment-time environment).
struct Binding<'a> {
    name: &'a str,
    node: &'a Node,
    /// The bindings before this one: both the lookup chain and the
    /// environment the name is evaluated in.
    next: Dict<'a>,
    value: OnceCell<Pattern>,
}

type Dict<'a> = Option<Rc<Binding<'a>>>;

fn err<T>(msg: impl Into<String>, span: &Span) -> Result<T> {
    Err(DataError::new(msg, Some(span.clone())))
}

enum Piece {
    Owned(Vec<u8>),
    Pat(Pattern),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Owned(v) => v.len() as u64,
            Piece::Pat(p) => p.size(),
        }
    }

    /// The part `[a, b)` of this piece.
    fn cut(self, a: u64, b: u64) -> Piece {
        match self {
            Piece::Owned(mut v) => {
                v.truncate(b as usize);
                v.drain(..a as usize);
                Piece::Owned(v)
            }
            Piece::Pat(p) => Piece::Pat(p.slice(a, b - a)),
        }
    }

    fn into_pattern(self) -> Pattern {
        match self {
            Piece::Owned(v) => Pattern::bytes(v),
            Piece::Pat(p) => p,
        }
    }
}

/// One scope's output: non-overlapping pieces keyed by offset.
#[derive(Default)]
struct Scope {
    pieces: BTreeMap<u64, Piece>,
    offset: u64,
    size: u64,
}

impl Scope {
    /// Remove everything in `[off, end)`, keeping the parts outside.
    fn clear(&mut self, off: u64, end: u64) {
        let mut hit: Vec<u64> = Vec::new();
        if let Some((&s, p)) = self.pieces.range(..off).next_back() {
            if s + p.len() > off {
                hit.push(s);
            }
        }
        hit.extend(self.pieces.range(off..end).map(|(&s, _)| s));
        for s in hit {
            let Some(p) = self.pieces.remove(&s) else {
                continue;
            };
            let pend = s + p.len();
            if pend > end {
                // Keep the tail; cut it first so `p` is not needed twice.
                if s < off {
                    let (head, tail) = split3(p, s, off, end, pend);
                    self.pieces.insert(s, head);
                    self.pieces.insert(end, tail);
                    continue;
                }
                self.pieces.insert(end, p.cut(end - s, pend - s));
            } else if s < off {
                self.pieces.insert(s, p.cut(0, off - s));
            }
        }
    }

    /// Write bytes at the cursor.
    fn put_bytes(&mut self, bytes: &[u8]) {
        let off = self.offset;
        let end = off + bytes.len() as u64;
        if bytes.is_empty() {
            return;
        }
        let next_start = self.pieces.range(off..).next().map(|(&s, _)| s);
        if let Some((&s, Piece::Owned(v))) = self.pieces.range_mut(..=off).next_back() {
            let vend = s + v.len() as u64;
            if end <= vend {
                // Overwrite in place.
                let a = (off - s) as usize;
                v[a..a + bytes.len()].copy_from_slice(bytes);
                return;
            }
            if vend == off && next_start.is_none_or(|n| n >= end) {
                v.extend_from_slice(bytes);
                return;
            }
        }
        self.clear(off, end);
        self.pieces.insert(off, Piece::Owned(bytes.to_vec()));
    }

    /// Place a pattern at the cursor (its zeros overwrite, as nbdkit's
    /// blit does).
    fn put(&mut self, p: Pattern) {
        let off = self.offset;
        let len = p.size();
        if len == 0 {
            return;
        }
        match p.node() {
            PNode::Data(d) if len <= MATERIALIZE => {
                let d = d.clone();
                return self.put_bytes(&d);
            }
            _ => {}
        }
        self.clear(off, off + len);
        match p.node() {
            PNode::Fill(0) => {}
            PNode::Map(sub) if sub.len() <= 64 => {
                for (o, q) in sub {
                    self.pieces.insert(off + o, Piece::Pat(q.clone()));
                }
            }
            _ => {
                self.pieces.insert(off, Piece::Pat(p));
            }
        }
    }

    fn finish(self) -> Pattern {
        let size = self.size;
        let mut pieces: Vec<(u64, Pattern)> = self
            .pieces
            .into_iter()
            .map(|(o, p)| (o, p.into_pattern()))
            .collect();
        if pieces.is_empty() {
            return Pattern::zeros(size);
        }
        if pieces.len() == 1 && pieces[0].0 == 0 && pieces[0].1.size() == size {
            return pieces.pop().map(|(_, p)| p).unwrap_or_else(Pattern::empty);
        }
        let map = Pattern::new(PNode::Map(pieces), size);
        if size <= MATERIALIZE {
            let mut v = vec![0u8; size as usize];
            map.read(&mut v, 0);
            return Pattern::bytes(v);
        }
        map
    }
}

/// Split `p` (at `s`, ending `pend`) around `[off, end)`.
fn split3(p: Piece, s: u64, off: u64, end: u64, pend: u64) -> (Piece, Piece) {
    match p {
        Piece::Owned(v) => (
            Piece::Owned(v[..(off - s) as usize].to_vec()),
            Piece::Owned(v[(end - s) as usize..].to_vec()),
        ),
        Piece::Pat(q) => (
            Piece::Pat(q.slice(0, off - s)),
            Piece::Pat(q.slice(end - s, pend - end)),
        ),
    }
}

fn check(v: Option<u64>, what: &str, span: &Span) -> Result<u64> {
    match v {
        Some(x) if x <= MAX_SIZE => Ok(x),
        _ => err(
            format!("{what}: the offset would be larger than the maximum disk size 2^63-1"),
            span,
        ),
    }
}

/// Evaluate `node` (a list, or one element) in a new scope.
fn eval_scope<'a>(dict: &Dict<'a>, node: &'a Node) -> Result<Pattern> {
    let items: &[Node] = match &node.expr {
        Expr::List(l) => l,
        _ => std::slice::from_ref(node),
    };
    let mut d: Dict<'a> = dict.clone();
    let mut sc = Scope::default();
    for item in items {
        let span = &item.span;
        match &item.expr {
            Expr::Null => {}
            Expr::Byte(b) => {
                let end = check(sc.offset.checked_add(1), "BYTE", span)?;
                sc.put_bytes(&[*b]);
                sc.offset = end;
            }
            Expr::Bytes(s) => {
                let end = check(sc.offset.checked_add(s.len() as u64), "string", span)?;
                sc.put_bytes(s);
                sc.offset = end;
            }
            Expr::Fill(b, n) => {
                let end = check(sc.offset.checked_add(*n), "fill", span)?;
                sc.put(Pattern::fill(*b, *n));
                sc.offset = end;
            }
            Expr::AbsOffset(v) => sc.offset = check(Some(*v), "@OFFSET", span)?,
            Expr::RelOffset(v) => {
                if *v < 0 && v.unsigned_abs() > sc.offset {
                    return err(
                        format!(
                            "@-{} must not be larger than the current offset {}",
                            v.unsigned_abs(),
                            sc.offset
                        ),
                        span,
                    );
                }
                sc.offset = check(sc.offset.checked_add_signed(*v), "@+N", span)?;
            }
            Expr::AlignOffset(a) => {
                let r = sc.offset.checked_next_multiple_of(*a);
                sc.offset = check(r, "@^ALIGNMENT", span)?;
            }
            Expr::File(f) => {
                let v = read_file(f, 0, -1, span)?;
                place(&mut sc, Pattern::bytes(v), span)?;
            }
            Expr::Script(s) => {
                let v = run_script(s, None, span)?;
                place(&mut sc, Pattern::bytes(v), span)?;
            }
            Expr::Assign(name, inner) => {
                d = Some(Rc::new(Binding {
                    name,
                    node: inner,
                    next: d.clone(),
                    value: OnceCell::new(),
                }));
            }
            Expr::Name(name) => {
                let mut t = d.as_ref();
                while let Some(b) = t {
                    if b.name == name {
                        break;
                    }
                    t = b.next.as_ref();
                }
                let Some(b) = t else {
                    return err(
                        format!("\\{name} is not defined (assign it first with -> \\{name})"),
                        span,
                    );
                };
                let p = match b.value.get() {
                    Some(p) => p.clone(),
                    None => {
                        let p = eval_scope(&b.next, b.node)?;
                        let _ = b.value.set(p.clone());
                        p
                    }
                };
                place(&mut sc, p, span)?;
            }
            Expr::Slice(inner, n, m) if matches!(inner.expr, Expr::File(_)) => {
                let Expr::File(f) = &inner.expr else { continue };
                let v = read_file(f, *n, *m, span)?;
                place(&mut sc, Pattern::bytes(v), span)?;
            }
            Expr::Slice(inner, 0, m) if matches!(inner.expr, Expr::Script(_)) => {
                let Expr::Script(s) = &inner.expr else {
                    continue;
                };
                let v = if *m > 0 {
                    run_script(s, Some(*m as u64), span)?
                } else {
                    Vec::new()
                };
                place(&mut sc, Pattern::bytes(v), span)?;
            }
            Expr::List(_) => {
                let p = eval_scope(&d, item)?;
                place(&mut sc, p, span)?;
            }
            Expr::Repeat(inner, n) => {
                let p = eval_scope(&d, inner)?;
                let Some(r) = p.repeat(*n) else {
                    return err(format!("*N: {} bytes * {n} overflows", p.size()), span);
                };
                place(&mut sc, r, span)?;
            }
            Expr::Slice(inner, n, m) => {
                let p = eval_scope(&d, inner)?;
                let size = p.size();
                let mm = if *m < 0 { size } else { *m as u64 };
                if *n > size || mm > size || *n > mm {
                    return err(
                        format!(
                            "[N:M] does not describe a valid slice: [{}:{}] of an expression of {size} bytes",
                            *n as i64, m
                        ),
                        span,
                    );
                }
                place(&mut sc, p.slice(*n, mm - *n), span)?;
            }
        }
        if sc.size < sc.offset {
            sc.size = sc.offset;
        }
    }
    Ok(sc.finish())
}

/// Place a block at the cursor and move past it.
fn place(sc: &mut Scope, p: Pattern, span: &Span) -> Result<()> {
    let end = check(sc.offset.checked_add(p.size()), "expression", span)?;
    sc.put(p);
    sc.offset = end;
    Ok(())
}

/// `<FILE` (`end == -1`: to the end of the file) or `<FILE[skip:end]`,
/// which reads only that range and, like nbdkit, stops short at EOF.
fn read_file(name: &str, skip: u64, end: i64, span: &Span) -> Result<Vec<u8>> {
    if (end >= 0 && skip > end as u64) || end < -2 || skip > i64::MAX as u64 {
        return err(
            format!("<{name}[N:M] does not describe a valid slice"),
            span,
        );
    }
    let f = std::fs::File::open(name).or_else(|e| err(format!("<{name}: {e}"), span))?;
    let mut v = Vec::new();
    let io = |e: std::io::Error| DataError::new(format!("<{name}: {e}"), Some(span.clone()));
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    if skip > 0 {
        f.seek(SeekFrom::Start(skip)).map_err(io)?;
    }
    match end {
        -1 => {
            f.read_to_end(&mut v).map_err(io)?;
        }
        -2 => {}
        e => {
            f.take(e as u64 - skip).read_to_end(&mut v).map_err(io)?;
        }
    }
    check(Some(v.len() as u64), "<FILE", span)?;
    Ok(v)
}

/// `<(SCRIPT)` through `/bin/sh -c`. With `limit`, read at most that many
/// bytes and ignore the exit status (infinite generators), as nbdkit does.
fn run_script(script: &str, limit: Option<u64>, span: &Span) -> Result<Vec<u8>> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .or_else(|e| err(format!("<(SCRIPT): cannot run /bin/sh: {e}"), span))?;
    let mut v = Vec::new();
    let io = |e: std::io::Error| DataError::new(format!("<(SCRIPT): {e}"), Some(span.clone()));
    if let Some(out) = child.stdout.take() {
        match limit {
            Some(n) => out.take(n).read_to_end(&mut v).map_err(io)?,
            None => {
                let mut out = out;
                out.read_to_end(&mut v).map_err(io)?
            }
        };
    }
    let status = child.wait().map_err(io)?;
    if limit.is_none() && !status.success() {
        return err(format!("<(SCRIPT): the command failed ({status})"), span);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::{evaluate_to_vec, EvalOptions};

    fn ev(s: &str) -> Vec<u8> {
        let o = EvalOptions {
            allow_files: true,
            ..Default::default()
        };
        evaluate_to_vec(s, None, &o).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str, want: &str) {
        let o = EvalOptions {
            allow_files: true,
            ..Default::default()
        };
        let e = evaluate_to_vec(s, None, &o).unwrap_err();
        assert!(e.to_string().contains(want), "{s}: {e}");
    }

    #[test]
    fn size_rule() {
        assert_eq!(ev("@100").len(), 100);
        assert_eq!(ev("0 @^512").len(), 512);
        assert_eq!(ev("@+10 @-5 @-4 @+20").len(), 21);
        assert_eq!(ev("1 @100 @-50").len(), 100);
        assert_eq!(ev("(@100) @0 (@50)").len(), 100);
        assert_eq!(ev("(0 1 2 3 @100) (4 5 6 @50)").len(), 150);
        assert_eq!(ev("(@^4)").len(), 0);
    }

    #[test]
    fn overwrites_and_groups() {
        assert_eq!(ev("1 2 3 @0 (@3)"), [0, 0, 0]);
        assert_eq!(ev("1 2 3 @1 (@1)"), [1, 0, 3]);
        assert_eq!(ev("1 2 3 @1 4"), [1, 4, 3]);
        assert_eq!(ev("1 2 3 @0 0*3"), [0, 0, 0]);
        assert_eq!(ev("@2 (1 2 3)[1:]"), [0, 0, 2, 3]);
        assert_eq!(ev("\"ab\"*3[1:4]"), b"bab");
        assert_eq!(ev("0x55 0xAA * 2"), [0x55, 0xAA, 0xAA]);
    }

    #[test]
    fn names_capture_their_environment() {
        assert_eq!(ev("1 -> \\a \\a \\a"), [1, 1]);
        assert_eq!(ev("1 -> \\a (\\a \\a)"), [1, 1]);
        assert_eq!(ev("1 -> \\a \\a -> \\b 2 -> \\a \\b \\a"), [1, 2]);
        bad("(1 -> \\a) \\a", "not defined");
        bad("\\a", "not defined");
    }

    #[test]
    fn slices_and_scripts() {
        assert_eq!(ev("<(echo hi)[:]"), [] as [u8; 0]);
        assert_eq!(ev("<(echo hi)[:2]"), b"hi");
        assert_eq!(ev("<(echo hi)[1:]"), b"i\n");
        assert_eq!(ev("<(yes)[:3]"), b"y\ny");
        assert_eq!(ev("<(exit 3)[:3]"), [] as [u8; 0]);
        bad("<(exit 3)", "failed");
        bad("(1 2 3)[2:5]", "valid slice");
        bad("</nonexistent/x", "nonexistent");
    }

    #[test]
    fn huge_is_lazy() {
        let o = EvalOptions::default();
        let p = super::super::compile("( 0x55 0xAA )*4294967296 @^0x400000000000 1", &o).unwrap();
        assert_eq!(p.size(), 0x400000000001);
        let mut b = [0u8; 4];
        p.read(&mut b, (8 << 30) - 2);
        assert_eq!(b, [0x55, 0xAA, 0, 0]);
        bad("(1 2)*0x4000000000000000", "2^63-1");
        bad("@0x8000000000000000 1", "2^63-1");
        assert_eq!(
            super::super::compile("@0x8000000000000000", &o)
                .unwrap()
                .size(),
            i64::MAX as u64
        );
    }
}
