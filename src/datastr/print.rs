//! The optimized tree as text, line by line, in the format nbdkit's data
//! plugin prints for `-D data.AST=1` (so that scripts comparing nbdkit's
//! output, such as its test-data-optimum.sh, find the same lines): four
//! spaces of indent per level (at most 40), `null`, bytes in decimal,
//! `"..."` strings with `\xNN` for anything outside ASCII 32..=126,
//! `fill(B*N)`, `@N` / `@-N` / `@^N`, `<FILE`, `<(SCRIPT)`, `\NAME`, and
//! `(` ... `)` around lists, with ` -> \NAME`, ` *N` or `[N:M]` after
//! the `)` of an assignment, repeat or slice.
//! Must not import outside `datastr`.

use super::parser::{Expr, Node};
use std::fmt::Write;

/// The lines for `root` (without the BEGIN/END markers).
pub fn ast_lines(root: &Node) -> Vec<String> {
    let mut out = Vec::new();
    lines(&root.expr, 0, &mut out);
    out
}

fn indent(level: usize) -> String {
    " ".repeat(4 * level.min(10))
}

/// A byte string between double quotes; printable ASCII as itself.
fn quoted(s: &[u8]) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for &c in s {
        if (32..=126).contains(&c) {
            q.push(c as char);
        } else {
            let _ = write!(q, "\\x{c:02x}");
        }
    }
    q.push('"');
    q
}

fn lines(e: &Expr, level: usize, out: &mut Vec<String>) {
    let pad = indent(level);
    // `( inner )` followed by `tail` on the closing line.
    let wrapped = |inner: &Expr, tail: String, out: &mut Vec<String>| {
        out.push(format!("{pad}("));
        lines(inner, level + 1, out);
        out.push(format!("{pad}){tail}"));
    };
    match e {
        Expr::Null => out.push(format!("{pad}null")),
        Expr::List(items) => {
            out.push(format!("{pad}("));
            for n in items {
                lines(&n.expr, level + 1, out);
            }
            out.push(format!("{pad})"));
        }
        Expr::Byte(b) => out.push(format!("{pad}{b}")),
        Expr::AbsOffset(v) => out.push(format!("{pad}@{v}")),
        Expr::RelOffset(v) => out.push(format!("{pad}@{v}")),
        // nbdkit prints the alignment as a signed number.
        Expr::AlignOffset(v) => out.push(format!("{pad}@^{}", *v as i64)),
        Expr::File(f) => out.push(format!("{pad}<{f}")),
        Expr::Script(s) => out.push(format!("{pad}<({s})")),
        Expr::Bytes(s) => out.push(format!("{pad}{}", quoted(s))),
        Expr::Fill(b, n) => out.push(format!("{pad}fill({b}*{n})")),
        Expr::Name(name) => out.push(format!("{pad}\\{name}")),
        Expr::Assign(name, inner) => wrapped(&inner.expr, format!(" -> \\{name}"), out),
        Expr::Repeat(inner, n) => wrapped(&inner.expr, format!(" *{n}"), out),
        Expr::Slice(inner, n, m) => wrapped(&inner.expr, format!("[{n}:{m}]"), out),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ast_lines_of, EvalOptions};

    fn ast(s: &str) -> Vec<String> {
        let opts = EvalOptions {
            allow_files: true,
            ..Default::default()
        };
        ast_lines_of(s, &opts).unwrap()
    }

    /// Lines joined and whitespace squeezed, as test-data-optimum.sh does.
    fn flat(s: &str) -> String {
        ast(s).join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn leaves() {
        assert_eq!(ast("1"), ["1"]);
        assert_eq!(ast(""), ["null"]);
        assert_eq!(ast("1 1 1"), ["fill(1*3)"]);
        assert_eq!(ast("0x31 0x32 0x33"), ["\"123\""]);
        // Quotes, backslashes and spaces as themselves; the rest as \xNN.
        assert_eq!(
            ast(r#""a \"\\" 0 0x7f 0x80 255"#),
            [r#""a "\\x00\x7f\x80\xff""#]
        );
        assert_eq!(ast("@4"), ["(", "    @4", ")"]);
    }

    #[test]
    fn nested_nodes() {
        assert_eq!(
            ast("1 @+3 @-1 @^512 \\a <f <(echo hi) (1 2) -> \\b (3 4)*5 <g[1:]"),
            [
                "(",
                "    1",
                "    @3",
                "    @-1",
                "    @^512",
                "    \\a",
                "    <f",
                "    <(echo hi)",
                "    (",
                "        \"\\x01\\x02\"",
                "    ) -> \\b",
                "    (",
                "        \"\\x03\\x04\"",
                "    ) *5",
                "    (",
                "        <g",
                "    )[1:-1]",
                ")",
            ]
        );
    }

    #[test]
    fn indent_stops_at_ten_levels() {
        // As nbdkit 1.32.5 prints it: 4 spaces a level, never more than 40.
        let mut s = "1".to_string();
        for i in 1..=6 {
            s = format!("({s} 2)->\\a{i}");
        }
        let lines = ast(&s);
        let indents: Vec<(usize, &str)> = lines
            .iter()
            .map(|l| (l.len() - l.trim_start().len(), l.trim_start()))
            .collect();
        let want = [
            (0, "("),
            (4, "("),
            (8, "("),
            (12, "("),
            (16, "("),
            (20, "("),
            (24, "("),
            (28, "("),
            (32, "("),
            (36, "("),
            (40, "("),
            (40, "("),
            (40, "\"\\x01\\x02\""),
            (40, ") -> \\a1"),
            (40, "2"),
            (40, ")"),
            (36, ") -> \\a2"),
            (36, "2"),
            (32, ")"),
            (28, ") -> \\a3"),
            (28, "2"),
            (24, ")"),
            (20, ") -> \\a4"),
            (20, "2"),
            (16, ")"),
            (12, ") -> \\a5"),
            (12, "2"),
            (8, ")"),
            (4, ") -> \\a6"),
            (0, ")"),
        ];
        assert_eq!(indents, want);
    }

    /// Every case of nbdkit 1.32.5's tests/test-data-optimum.sh.
    #[test]
    fn nbdkit_optimum_cases() {
        for (data, want) in [
            ("1", "1"),
            ("1 1 1", "fill(1*3)"),
            ("0x31 0x32 0x33", "\"123\""),
            ("\"1111\" 0x31", "fill(49*5)"),
            ("\"111\" 0x31", "fill(49*4)"),
            ("0x31 \"111\"", "fill(49*4)"),
            ("\"12\" \"3\" \"456\"", "\"123456\""),
            ("\"12\" 0x33 \"456\"", "\"123456\""),
            ("((((1))))", "1"),
            ("(1 1 1) 1 (1 1 1 1)", "fill(1*8)"),
            ("(((1 1 1))) 1 (1 1 1 1)", "fill(1*8)"),
            ("(((1 1 1) 1)) (1 1 1 1)", "fill(1*8)"),
            ("(((2 2 2) 2)) (1 1 1 1)", "( fill(2*4) fill(1*4) )"),
            ("(((2 2 2) 2)) (1 1 1 1 3)", "( fill(2*4) fill(1*4) 3 )"),
            (
                "(((2 2 2) 2)) (1 1 1 (1 3))",
                "( fill(2*4) fill(1*3) \"\\x01\\x03\" )",
            ),
            (
                "(((2 2 2) 2)) (3 1 1 1 1)",
                "( fill(2*4) \"\\x03\\x01\\x01\\x01\\x01\" )",
            ),
            ("(1 2 3)*0", "null"),
            (
                "(0x31 0x32 0x33)*4*4",
                "\"123123123123123123123123123123123123123123123123\"",
            ),
            (
                "((0x31 0x32 0x33)*4)*4",
                "\"123123123123123123123123123123123123123123123123\"",
            ),
            ("\"123456\"[:]", "\"123456\""),
            ("\"123456\"[0:6]", "\"123456\""),
            ("\"123456\"[0:]", "\"123456\""),
            ("\"123456\"[1:]", "\"23456\""),
            ("\"123456\"[2:]", "\"3456\""),
            ("\"123456\"[:0]", "null"),
            ("\"123456\"[:1]", "49"),
            ("\"123456\"[:2]", "\"12\""),
            ("\"123456\"[1:2]", "50"),
            ("\"123456\"[2:4]", "\"34\""),
            ("\"123456\"[2:2]", "null"),
            ("\"123456\"[2:6]", "\"3456\""),
            ("\"123456\"[5:]", "54"),
            ("\"\"[:]", "null"),
            ("(1 1 1 1 1 1)[:]", "fill(1*6)"),
            ("(1 1 1 1 1 1)[0:6]", "fill(1*6)"),
            ("(1 1 1 1 1 1)[1:6]", "fill(1*5)"),
            ("(1 1 1 1 1 1)[2:3]", "1"),
            ("(1 1 1 1 1 1)[5:]", "1"),
            ("(1 1 1 1 1 1)[6:6]", "null"),
            ("()[6:]*0", "null"),
        ] {
            assert_eq!(flat(data), want, "{data}");
        }
    }
}
