//! Lexical scanning for data strings: numbers exactly as nbdkit reads them
//! (C `sscanf("%i")`: whitespace skipped, sign, `0x` hex, `0` octal,
//! saturating like `strtol`), `@` size suffixes, strings with escapes,
//! `le16:`-style words, names, variables, file names and scripts.
//! Pure functions over bytes; no I/O. Must not import outside `datastr`.

/// The whitespace nbdkit skips between elements.
pub fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0c | b'\r' | 0x0b)
}

/// A number as `sscanf("%" SCNi64 "%n")` reads it at `s[i..]`: returns the
/// value (saturated to the `i64` range, as glibc's `strtol` does) and the
/// number of bytes consumed, or `None` if no number is there.
pub fn scan_i64(s: &[u8], i: usize) -> Option<(i64, usize)> {
    let (neg, mag, n, _) = scan_magnitude(s, i)?;
    let v = if neg {
        if mag > 1u128 << 63 {
            i64::MIN
        } else {
            (mag as i128).wrapping_neg() as i64
        }
    } else if mag > i64::MAX as u128 {
        i64::MAX
    } else {
        mag as i64
    };
    Some((v, n))
}

/// `sscanf("%i")` into a C `int`: glibc converts with `strtol` and then
/// truncates to 32 bits, so `4294967297` reads as 1.
pub fn scan_int(s: &[u8], i: usize) -> Option<(i32, usize)> {
    scan_i64(s, i).map(|(v, n)| (v as i32, n))
}

/// The radix of a number scanned by [`scan_magnitude`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Radix {
    Dec,
    Hex,
    Oct,
}

/// Sign, magnitude (saturated at 2¹⁰⁰), bytes consumed and radix.
pub fn scan_magnitude(s: &[u8], i: usize) -> Option<(bool, u128, usize, Radix)> {
    let mut p = i;
    while p < s.len() && is_space(s[p]) {
        p += 1;
    }
    let mut neg = false;
    if p < s.len() && (s[p] == b'+' || s[p] == b'-') {
        neg = s[p] == b'-';
        p += 1;
    }
    let (radix, base, start) = if p < s.len() && s[p] == b'0' {
        if p + 1 < s.len() && (s[p + 1] == b'x' || s[p + 1] == b'X') {
            // glibc consumes "0x" even without hex digits after it.
            (Radix::Hex, 16u32, p + 2)
        } else {
            (Radix::Oct, 8, p)
        }
    } else {
        (Radix::Dec, 10, p)
    };
    let mut q = start;
    let mut mag: u128 = 0;
    while q < s.len() {
        let d = match (s[q] as char).to_digit(base) {
            Some(d) => d,
            None => break,
        };
        mag = (mag * base as u128 + d as u128).min(1u128 << 100);
        q += 1;
    }
    if q == start && radix != Radix::Hex {
        return None;
    }
    Some((neg, mag, q - i, radix))
}

/// nbdkit 1.44's scaling suffix after a decimal `@` argument: if the
/// digits at `s[i..i+n]` are decimal and followed by one suffix letter and
/// then whitespace, `)` or the end, return the multiplier and the suffix
/// length. A letter followed by anything else is left alone (1.32 reads
/// `@1be16:1` as `@1 be16:1`).
pub fn scan_suffix(s: &[u8], i: usize, n: usize, radix: Radix) -> Option<(u64, usize)> {
    if radix != Radix::Dec {
        return None;
    }
    let p = i + n;
    let mult: u64 = match s.get(p)? {
        b'b' | b'B' => 1,
        b's' | b'S' => 512,
        b'k' | b'K' => 1 << 10,
        b'm' | b'M' => 1 << 20,
        b'g' | b'G' => 1 << 30,
        b't' | b'T' => 1 << 40,
        b'p' | b'P' => 1 << 50,
        b'e' | b'E' => 1 << 60,
        _ => return None,
    };
    match s.get(p + 1) {
        None => Some((mult, 1)),
        Some(&c) if is_space(c) || c == b')' => Some((mult, 1)),
        _ => None,
    }
}

/// Errors from the scanners: message and the offset of the fault.
pub type ScanError = (String, usize);

/// A `"string"` whose opening quote is at `s[i-1]`: the bytes and the
/// index after the closing quote.
pub fn scan_string(s: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ScanError> {
    let open = i.saturating_sub(1);
    let mut out = Vec::new();
    let unterminated = || ("unterminated string".to_string(), open);
    while i < s.len() {
        let c = s[i];
        match c {
            b'"' => return Ok((out, i + 1)),
            b'\\' => {
                i += 1;
                let e = *s.get(i).ok_or_else(unterminated)?;
                let b = match e {
                    b'a' => 7,
                    b'b' => 8,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    b'x' => {
                        let x0 = *s.get(i + 1).ok_or_else(unterminated)?;
                        let x1 = *s.get(i + 2).ok_or_else(unterminated)?;
                        let h = |x: u8| (x as char).to_digit(16);
                        match (h(x0), h(x1)) {
                            (Some(a), Some(b)) => {
                                i += 2;
                                (a * 16 + b) as u8
                            }
                            _ => {
                                return Err((
                                    "\\xNN must be followed by exactly two hexadecimal characters"
                                        .into(),
                                    i - 1,
                                ))
                            }
                        }
                    }
                    b'0'..=b'9' | b'u' => {
                        return Err((
                            "string numeric and unicode sequences (\\N, \\u) are not implemented; use \\xNN"
                                .into(),
                            i - 1,
                        ))
                    }
                    // Any other escaped character stands for itself.
                    other => other,
                };
                out.push(b);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Err(unterminated())
}

/// A `le16:` / `be32:` ... word starting at `s[i]` (`l` or `b`): the bytes
/// and the index after the token (which runs to the next whitespace).
pub fn scan_word(s: &[u8], i: usize) -> Result<(Vec<u8>, usize), ScanError> {
    let mut end = i;
    while end < s.len() && !is_space(s[end]) {
        end += 1;
    }
    let tok = &s[i..end];
    let (little, bytes) = match tok.get(..5) {
        Some(b"le16:") => (true, 2),
        Some(b"le32:") => (true, 4),
        Some(b"le64:") => (true, 8),
        Some(b"be16:") => (false, 2),
        Some(b"be32:") => (false, 4),
        Some(b"be64:") => (false, 8),
        _ => {
            return Err((
                "expected a BYTE, \"le16/32/64:\" or \"be16/32/64:\" here".into(),
                i,
            ))
        }
    };
    let num = &tok[5..];
    let at = i + 5;
    let v = parse_unsigned(num).map_err(|m| (m, at))?;
    let max = if bytes == 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    };
    if v > max {
        return Err((
            format!(
                "{} does not fit in {} bits (maximum {max:#x})",
                String::from_utf8_lossy(num),
                bytes * 8
            ),
            at,
        ));
    }
    let le = v.to_le_bytes();
    let mut out = le[..bytes].to_vec();
    if !little {
        out.reverse();
    }
    Ok((out, end))
}

/// nbdkit_parse_uint64_t: `strtoull(s, 0)` with no sign, no garbage.
fn parse_unsigned(num: &[u8]) -> Result<u64, String> {
    let shown = String::from_utf8_lossy(num);
    if num.is_empty() {
        return Err("empty string where a number was expected after the word prefix".into());
    }
    if num[0] == b'-' {
        return Err(format!("{shown}: negative numbers are not allowed"));
    }
    let body = num.strip_prefix(b"+").unwrap_or(num);
    let (base, digits) = if body.len() >= 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        (16, &body[2..])
    } else if body.len() > 1 && body[0] == b'0' {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.iter().all(|&c| (c as char).is_digit(base)) {
        return Err(format!(
            "could not parse number {shown:?}: trailing garbage"
        ));
    }
    let txt = std::str::from_utf8(digits).map_err(|_| format!("bad number {shown:?}"))?;
    u64::from_str_radix(txt, base)
        .map_err(|_| format!("could not parse number {shown:?}: numerical result out of range"))
}

/// A `\NAME` at or after `s[i]` (whitespace skipped): the index of the
/// name's first byte and its length (0 if none).
pub fn scan_name(s: &[u8], mut i: usize) -> (usize, usize) {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    if i >= s.len() || s[i] != b'\\' {
        return (i, 0);
    }
    i += 1;
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_' || s[i] == b'-') {
        i += 1;
    }
    (start, i - start)
}

/// A `$VAR` at `s[i]`: the index of the name and its length (0 if none).
pub fn scan_var(s: &[u8], i: usize) -> (usize, usize) {
    let start = i + 1;
    match s.get(start) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return (start, 0),
    }
    let mut p = start;
    while p < s.len() && (s[p].is_ascii_alphanumeric() || s[p] == b'_') {
        p += 1;
    }
    (start, p - start)
}

/// The body of `<(SCRIPT)` starting at `s[i]` (after `<(`): its length up
/// to the matching `)`, or `None` when unbalanced or empty.
pub fn scan_script(s: &[u8], i: usize) -> Option<usize> {
    let mut lvl = 0usize;
    let mut p = i;
    while p < s.len() {
        match s[p] {
            b'(' => lvl += 1,
            b')' if lvl > 0 => lvl -= 1,
            b')' => break,
            _ => {}
        }
        p += 1;
    }
    if p >= s.len() || p == i {
        None
    } else {
        Some(p - i)
    }
}

/// The file name of `<FILE` at `s[i]`: it ends at whitespace, `*`, `[`
/// or `)`.
pub fn scan_filename(s: &[u8], i: usize) -> usize {
    s[i..]
        .iter()
        .position(|&c| matches!(c, b'*' | b'[' | b')' | b' ' | b'\t' | b'\n'))
        .unwrap_or(s.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64s(s: &str) -> Option<(i64, usize)> {
        scan_i64(s.as_bytes(), 0)
    }

    #[test]
    fn numbers_like_sscanf() {
        assert_eq!(i64s("0x"), Some((0, 2)));
        assert_eq!(i64s("0xg"), Some((0, 2)));
        assert_eq!(i64s("08"), Some((0, 1)));
        assert_eq!(i64s("0400"), Some((256, 4)));
        assert_eq!(i64s(" 5"), Some((5, 2)));
        assert_eq!(i64s("+5"), Some((5, 2)));
        assert_eq!(i64s("-0"), Some((0, 2)));
        assert_eq!(i64s("0x8000000000000000"), Some((i64::MAX, 18)));
        assert_eq!(i64s("99999999999999999999"), Some((i64::MAX, 20)));
        assert_eq!(i64s("-99999999999999999999"), Some((i64::MIN, 21)));
        assert_eq!(i64s("-"), None);
        assert_eq!(i64s("+"), None);
        assert_eq!(i64s("x"), None);
        assert_eq!(i64s("1e3"), Some((1, 1)));
        assert_eq!(scan_int(b"4294967297", 0), Some((1, 10)));
        assert_eq!(scan_int(b"0x8000000000000000", 0), Some((-1, 18)));
    }

    #[test]
    fn suffixes() {
        let s = b"@4k 1";
        let (_, _, n, r) = scan_magnitude(s, 1).unwrap();
        assert_eq!(scan_suffix(s, 1, n, r), Some((1024, 1)));
        let s = b"@1be16:1";
        let (_, _, n, r) = scan_magnitude(s, 1).unwrap();
        assert_eq!(scan_suffix(s, 1, n, r), None);
        let s = b"@0x4k";
        let (_, _, n, r) = scan_magnitude(s, 1).unwrap();
        assert_eq!(scan_suffix(s, 1, n, r), None);
    }

    #[test]
    fn strings_and_words() {
        assert_eq!(
            scan_string(b"\"a\\x41\\q\\n\"", 1).unwrap(),
            (b"aAq\n".to_vec(), 11)
        );
        assert!(scan_string(b"\"\\x4\"", 1).is_err());
        assert!(scan_string(b"\"\\1\"", 1).is_err());
        assert!(scan_string(b"\"abc", 1).is_err());
        assert_eq!(
            scan_word(b"le16:0x1234 ", 0).unwrap(),
            (vec![0x34, 0x12], 11)
        );
        assert_eq!(scan_word(b"be32:1", 0).unwrap().0, [0, 0, 0, 1]);
        assert_eq!(scan_word(b"le16:010", 0).unwrap().0, [8, 0]);
        assert_eq!(scan_word(b"le16:+5", 0).unwrap().0, [5, 0]);
        assert_eq!(
            scan_word(b"be64:0xffffffffffffffff", 0).unwrap().0,
            [0xff; 8]
        );
        for bad in [
            "le16:0x10000",
            "le16:",
            "le17:1",
            "le16:1)",
            "le16:0x",
            "le64:-1",
            "le64:18446744073709551616",
            "lx",
        ] {
            assert!(scan_word(bad.as_bytes(), 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_scripts_files() {
        assert_eq!(scan_name(b"  \\a-b_1 x", 0), (3, 5));
        assert_eq!(scan_name(b"\\", 0).1, 0);
        assert_eq!(scan_var(b"$x1 ", 0), (1, 2));
        assert_eq!(scan_var(b"$1", 0).1, 0);
        assert_eq!(scan_script(b"echo (a) )", 0), Some(9));
        assert_eq!(scan_script(b")", 0), None);
        assert_eq!(scan_script(b"echo", 0), None);
        assert_eq!(scan_filename(b"f.bin[1:2]", 0), 5);
    }
}
