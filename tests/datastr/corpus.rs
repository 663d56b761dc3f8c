//! The two corpora compared with nbdkit 1.32's data plugin: accepted
//! strings (bytes and size, in-process and through the binary) and
//! rejected strings (a message naming the problem).

use super::*;

/// Test files, created once under a temp dir.
struct Files {
    _dir: tempfile::TempDir,
    f10: String,
    empty: String,
    f40k: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("f10"), b"0123456789").expect("write");
    std::fs::write(p("empty"), b"").expect("write");
    let big: Vec<u8> = (0..40000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(p("f40k"), big).expect("write");
    let s = |n: &str| p(n).display().to_string();
    Files {
        f10: s("f10"),
        empty: s("empty"),
        f40k: s("f40k"),
        _dir: dir,
    }
}

fn accepted(f: &Files) -> Vec<Case> {
    let mut v: Vec<Case> = [
        // Bytes, numbers as sscanf reads them.
        "", "0", "1", "255", "0xff", "0XFF", "0377", "017", "0x0", "00", "08", "09", "0x", "0x 1",
        "1 2 3", "  1\t2\n3\r4\u{b}5\u{c}6  ", "4294967296", "4294967297", "0x100000041",
        // Offsets and the implicit size.
        "@0", "@100", "@0x10 1", "@010 1", "0 @^512", "@+10 @-5 @-4 @+20", "1 @100 @-50",
        "1 2 3 @1 4", "@+ 5 1", "@^ 4 1", "@100\"ab\"", "@^1 1", "1 @^2 2 @^4 3 @^8 4",
        "@+0x10 1", "@-0 1", "1 @-1 2", "@1be16:1", "(@100) @0 (@50)", "(0 1 2 3 @100) (4 5 6 @50)",
        "@2 (1 2 3)[1:]", "(1 @^4)", "(@^4)", "1 2 3 @0 (@3)", "1 2 3 @1 (@1)", "1 2 3 @1 (@0)",
        // Page boundaries (32 KiB) and sparse placement.
        "@32767 1 2", "@32768 1", "@32767 \"abc\"", "@65535 1 @65536 2", "@131072 0",
        "@131072 0 0", "1 @32768 1 @32768 0", "@1000000 1", "@0x100000 0x55 @^0x200000",
        "(0x55)*32768 1", "(0x55 0xAA)*16384 @-1 0", "@32766 le32:0x01020304",
        "@32760 (1 2 3 4)*4", "@98303 \"xyz\" @32768 9",
        // Strings.
        "\"\"", "\"hello\"", "\"a\\x41\\x4a\\x4A\"", "\"\\a\\b\\f\\n\\r\\t\\v\\\\\\\"\"", "\"\\q\\z\"",
        "\"é\"", "\"a b\tc\"", "\"#notcomment\"", "\"ab\"\"cd\"", "1\"ab\"2", "\"(\" \")\"",
        "\"aaaa\"", "\"ab\" @0 \"c\"",
        // Words.
        "le16:0x1234", "be16:0x1234", "le32:0x12345678", "be32:1", "le64:0x0102030405060708",
        "be64:0x0102030405060708", "le16:65535", "le16:0", "le16:010", "le16:+5",
        "be64:0xffffffffffffffff", "le64:18446744073709551615", "le32:4294967295",
        "le16:1 @^8 be64:2", "0 1 2 3 @^0x200 @-2 le16:0xaa55", "le16:0x55aa *3",
        "be32:0xdeadbeef [1:3]",
        // Groups and repeats.
        "()", "(1)", "(())", "((1 2) 3)", "(1 2)*3", "( 0x55 0xAA )*2048", "0x55 0xAA * 2",
        "1*0", "1*1", "1*5", "0*5", "0*32768", "0*32769 1", "1 * 3", "(1 2)* 2", "(1 2)*+2",
        "(1 2)*0x3", "(1 2)*010", "(@4)*3", "(1 @4)*3", "(@4 1)*3", "(1 @^4)*3",
        "((1 2)*2 3)*2", "(((1)*2)*2)*2", "\"ab\"*3", "\"ab\"*3000", "\"abc\"*1500",
        "(\"a\" \"b\")*2000", "(1 2 3 4 5 6 7 8)*5000", "0x55*100000", "(0x55 0xAA)*40000",
        "(1 @65536)*3", "0*0x10*0x10", "(@0)*100", "()*1000", "((((((1))))))",
        "(1 (2 (3 (4 @8) 5) 6) 7)*2",
        // Slices.
        "\"abcdef\"[1:3]", "\"abcdef\"[:3]", "\"abcdef\"[3:]", "\"abcdef\"[:]", "\"abcdef\"[0:6]",
        "\"abcdef\"[6:6]", "\"abc\"[5:5]", "\"abc\"[-1:-1]", "\"abc\"[:-1]", "\"abc\"[1:-3]",
        "(1 2 3)[:-2]", "1[5:1]", "1[1:]", "1[0:1]", "(1 2 3 4)[1:3]", "(1 2 3 4)*3[2:10]",
        "\"ab\"*3[1:4]", "(1 2 3)[1:]*2", "((1 2 3)[1:]*2)[1:3]", "\"abc\"[0x1:0x2]",
        "\"ab\"[ 1:2]", "\"ab\"[1: 2]", "(@10 1)[5:]", "0*100[10:20]", "(0x55)*100000[99990:]",
        "(1 2)*40000[32767:32770]", "\\u[2:2]", "\\u*0", "(1 2 @32770 3)[32767:]",
        // Names.
        "1 -> \\a \\a \\a", "1 -> \\a (\\a \\a)", "1 ->\\a \\a", "1 -> \\a(\\a)", "(1 2) -> \\x \\x*3",
        "1 -> \\a-b \\a-b", "1 -> \\a \\a -> \\b 2 -> \\a \\b \\a",
        "( 0x55 0xAA ) -> \\boot-signature ( @0x1fe \\boot-signature ) -> \\sector \\sector \\sector",
        "1 -> \\a (2 -> \\a \\a) \\a", "1 -> \\a (\\a -> \\b \\b \\b)", "(1 -> \\a \\a \\a)*2",
        "\"xy\" -> \\s \\s[1:] \\s*2", "1 -> \\_ \\_", "(@3 1) -> \\p \\p \\p", "1 -> \\a 2 -> \\a \\a",
        "(1 2)*20000 -> \\big \\big @3 \\big[5:9]",
        // Comments.
        "1 # comment\n2", "# only comment", "1#c\n2", "\"#\" # c", "1 # ( unbalanced\n2",
        "# c1\n# c2\n3",
        // The manual's examples.
        "0 1 2 3 @0x1fe 0x55 0xaa",
        "\n  @0x1be    # MBR first partition entry\n    0\t\t# Partition status\n    0 2 0\t# CHS start\n    0x83\t# Partition type (Linux)\n    0x20 0x20 0 # CHS last sector\n    le32:1\t# LBA first sector\n    le32:0x7ff\t# LBA number of sectors\n  @0x1fe    # Boot signature\n    0x55 0xaa\n  ",
        // Scripts.
        "<(echo hi)", "<(printf '\\001\\002')", "<(echo hi)[:]", "<(echo hi)[:2]", "<(echo hi)[1:]",
        "<(yes)[:100]", "<(exit 3)[:3]", "<(echo \"(a)\")", "<(printf abc)*3", "(<(printf abc))[:2]",
        "<(echo $((1+2)))", "<( i=0; while :; do printf '%04d' $i; i=$((i+1)); done )[:32768]",
        "1 <(printf xy) 2", "<(printf abcdef)[2:4]",
    ]
    .iter()
    .map(|s| case(s))
    .collect();
    // Files.
    for s in [
        "<F10",
        "<F10[2:5]",
        "<F10[:3]",
        "<F10[7:]",
        "<F10[0:100]",
        "<F10[20:30]",
        "<F10*3",
        "(<F10)[2:4]",
        "<EMPTY",
        "<F40K",
        "<F40K[32760:32780]",
        "1 <F10 2",
        "<F10 @^16 <F10",
        "<F10 -> \\f \\f \\f",
        "<F10[:]",
        "<F10[3:3]",
    ] {
        let s = s
            .replace("F10", &f.f10)
            .replace("EMPTY", &f.empty)
            .replace("F40K", &f.f40k);
        v.push(case(&s));
    }
    // Parameters: size=, $VAR, raw=, base64=.
    v.extend([
        with("1 2 3", &["size=2"]),
        with("1", &["size=1000"]),
        with("1 2 3 @32768 4 (0x55 0xAA)*20000", &["allocator=malloc"]),
        with("1 2 3 @32768 4 (0x55 0xAA)*20000", &["allocator=zstd"]),
        with(
            "(0x55 0xAA)*20000 @100 \"x\"",
            &["allocator=sparse", "size=50000"],
        ),
        with("", &["size=512"]),
        with("(0x55)*100", &["size=32769"]),
        with("1", &["size=1M"]),
        with("@1048576 1", &["size=10"]),
        with("$p", &["p=0x55 0xAA"]),
        with("$p*16", &["p=0x55 0xAA"]),
        with("( $p )*2 $q", &["p=1", "q=2"]),
        with("1 2 $p 3", &["p=@4 9"]),
        with("$a", &["a=$b 1", "b=7"]),
        with("$p 2", &["p=1 # c"]),
        with_env("$_x", &[], &[("_x", "5")]),
        with("$p[1:]", &["p=1 2 3"]),
        with("1 $p 2", &["p="]),
        with("$p -> \\v \\v \\v", &["p=1 2"]),
        with("", &["raw=hello"]),
        with("", &["raw=abc", "size=1"]),
        with("", &["base64=MTIz"]),
        with("", &["base64=aGVsbG8gbmJka2l0IHVzZXI=", "size=100"]),
        with("", &["base64=MT Iz"]),
        with_env("$E1", &[], &[("E1", "9 8")]),
        with_env("$E1 $p", &["p=1"], &[("E1", "(2)*3")]),
        with_env("$E2", &["E2=2"], &[("E2", "1")]),
    ]);
    v
}

/// Strings (and parameters) nbdkit rejects, with a word our message must
/// contain.
fn rejected(f: &Files) -> Vec<(Case, &'static str)> {
    let mut v: Vec<(Case, &str)> = [
        ("256", "0..255"),
        ("0x100", "0..255"),
        ("0400", "0..255"),
        ("-1", "->"),
        ("1e3", "unexpected"),
        ("x", "unexpected"),
        ("abc", "unexpected"),
        ("lx", "le16"),
        ("le17:1", "le16"),
        ("le16:0x10000", "16 bits"),
        ("le16:", "empty"),
        ("le16:1)", "garbage"),
        ("le64:-1", "negative"),
        ("le16:0x", "garbage"),
        ("be32:4294967296", "32 bits"),
        ("le64:18446744073709551616", "range"),
        ("le16:1*2", "garbage"),
        ("le16:0x55aa*3", "garbage"),
        ("be32:0xdeadbeef[1:3]", "garbage"),
        ("@", "offset"),
        ("@x", "@"),
        ("@ 5", "@"),
        ("@-1", "current offset"),
        ("1 @-2", "current offset"),
        ("@^0", "power of 2"),
        ("@^3", "power of 2"),
        ("@^-4", "negative"),
        ("@+-5", "negative"),
        ("@--5", "negative"),
        ("*2", "must follow"),
        ("@1*2", "offset"),
        ("@1[0:1]", "offset"),
        ("@1 -> \\a", "offset"),
        ("1*x", "not a number"),
        ("1*-1", "negative"),
        ("1*", "not a number"),
        ("(1", "unmatched '('"),
        ("((1)", "unmatched '('"),
        ("1)", "unmatched ')'"),
        ("(1))", "unmatched ')'"),
        (")", "unmatched ')'"),
        ("\"abc", "unterminated"),
        ("\"\\x4\"", "\\xNN"),
        ("\"\\xg0\"", "\\xNN"),
        ("\"\\1\"", "not implemented"),
        ("\"\\u0041\"", "not implemented"),
        ("\"abc\\", "unterminated"),
        ("[1:2]", "must follow"),
        ("1[", "[N:M]"),
        ("1[1:2", "[N:M]"),
        ("1[a:b]", "[N:M]"),
        ("\"ab\"[:2 ]", "[N:M]"),
        ("\"ab\"[1 :2]", "[N:M]"),
        ("\"abc\"[2:5]", "valid slice"),
        ("(1 2 3)[2:5]", "valid slice"),
        ("(1)[1:0]", "valid slice"),
        ("1[2:]", "valid slice"),
        ("(1 2 3 4)[3:1]", "valid slice"),
        ("(1 2 3)[1:]*2[1:5]", "valid slice"),
        ("\\a", "not defined"),
        ("(1 -> \\a) \\a", "not defined"),
        ("\\", "NAME"),
        ("1 -> ", "NAME"),
        ("1 -", "->"),
        ("1->2", "NAME"),
        ("-> \\a", "must follow"),
        ("\\a -> \\a \\a", "not defined"),
        ("$x_not_set_anywhere", "not found"),
        ("$1", "variable name"),
        ("$ x", "variable name"),
        ("<", "file name"),
        ("< f", "file name"),
        ("<()", "<(SCRIPT)"),
        ("<(", "<(SCRIPT)"),
        ("<(echo", "<(SCRIPT)"),
        ("</nonexistent/file", "No such file"),
        ("<(exit 1)", "failed"),
        ("<(false)", "failed"),
        ("<(echo hi)[1:5]", "valid slice"),
        ("@0x7fffffffffffffff 1", "2^63-1"),
    ]
    .iter()
    .map(|(s, w)| (case(s), *w))
    .collect();
    v.push((case(&format!("<{}[5:2]", f.f10)), "valid slice"));
    v.extend([
        (with("$p", &["p=)"]), "unmatched ')'"),
        (with("$p", &["p=("]), "unmatched '('"),
        (with("$p", &["p=256"]), "0..255"),
        (with("1", &["raw=2"]), "exactly one"),
        (with("", &["raw=2", "x=3"]), "x=3"),
        (with("", &["base64=MTI"]), "base64"),
        (with("", &["base64=M!=="]), "base64"),
        (with("1", &["size=1X"]), "size"),
    ]);
    v
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at byte {i}"),
        None => format!("sizes {} vs {}", a.len(), b.len()),
    }
}

#[test]
fn accepted_corpus_matches_nbdkit() {
    let f = files();
    let corpus = accepted(&f);
    assert!(corpus.len() >= 150, "corpus has {}", corpus.len());
    let fails = par(&corpus, |c| {
        let want = match nbdkit(c) {
            Ok(w) => w,
            Err(e) => {
                return Some(format!(
                    "{:?} {:?}: nbdkit rejected it: {e}",
                    c.data, c.params
                ))
            }
        };
        if let Some(got) = in_process(c) {
            match got {
                Ok(g) if g == want => {}
                Ok(g) => {
                    return Some(format!(
                        "{:?} {:?}: in-process {}\n  nbdkit {}\n  {}",
                        c.data,
                        c.params,
                        show(&g),
                        show(&want),
                        first_diff(&g, &want)
                    ))
                }
                Err(e) => {
                    return Some(format!("{:?} {:?}: in-process error {e}", c.data, c.params))
                }
            }
        }
        match ours(c) {
            Ok(g) if g == want => None,
            Ok(g) => Some(format!(
                "{:?} {:?}: nbdscript {}\n  nbdkit {}\n  {}",
                c.data,
                c.params,
                show(&g),
                show(&want),
                first_diff(&g, &want)
            )),
            Err(e) => Some(format!(
                "{:?} {:?}: nbdscript failed: {e}",
                c.data, c.params
            )),
        }
    });
    eprintln!(
        "accepted corpus: {} cases, {} failures",
        corpus.len(),
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} of {} differ:\n{}",
        fails.len(),
        corpus.len(),
        fails.join("\n")
    );
}

#[test]
fn rejected_corpus_is_rejected() {
    let f = files();
    let corpus = rejected(&f);
    assert!(corpus.len() >= 60, "corpus has {}", corpus.len());
    let fails = par(&corpus, |(c, want)| {
        if let Ok(b) = nbdkit(c) {
            return Some(format!(
                "{:?} {:?}: nbdkit accepted it ({})",
                c.data,
                c.params,
                show(&b)
            ));
        }
        if let Some(r) = in_process(c) {
            match r {
                Ok(b) => {
                    return Some(format!(
                        "{:?}: in-process accepted it ({})",
                        c.data,
                        show(&b)
                    ))
                }
                Err(e) if !e.contains(want) => {
                    return Some(format!(
                        "{:?}: in-process message lacks {want:?}: {e}",
                        c.data
                    ))
                }
                Err(_) => {}
            }
        }
        match ours(c) {
            Ok(b) => Some(format!(
                "{:?} {:?}: nbdscript accepted it ({})",
                c.data,
                c.params,
                show(&b)
            )),
            Err(e) if !e.contains(want) => Some(format!(
                "{:?} {:?}: nbdscript message lacks {want:?}: {e}",
                c.data, c.params
            )),
            Err(_) => None,
        }
    });
    eprintln!(
        "rejected corpus: {} cases, {} failures",
        corpus.len(),
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} of {} wrong:\n{}",
        fails.len(),
        corpus.len(),
        fails.join("\n")
    );
}
