//! Random strings from the grammar (fixed seed): nbdkit and the in-
//! process evaluator agree on acceptance, size and bytes.

use super::*;

/// Random strings from the grammar (fixed seed): nbdkit and the in-process
/// evaluator must agree on acceptance, size and every byte.
#[test]
fn random_strings_agree_with_nbdkit() {
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
        fn atom(&mut self, d: u32) -> String {
            let mut r = self.next() % 100;
            if d > 3 {
                r /= 2;
            }
            match r {
                0..=14 => self.pick(&["0", "1", "2", "255", "0x55", "7"]).into(),
                15..=21 => format!("{:#x}", self.next() % 256),
                22..=29 => self
                    .pick(&["\"ab\"", "\"x\"", "\"hello\"", "\"\\x00\\x01\"", "\"zz\""])
                    .into(),
                30..=35 => format!(
                    "{}{}",
                    self.pick(&["le16:", "be16:", "le32:", "be64:"]),
                    self.next() % 65536
                ),
                36..=44 => format!(
                    "{}{}",
                    self.pick(&["@", "@+", "@^", "@-"]),
                    self.pick(&["0", "1", "2", "4", "8", "16", "512", "32768", "3"])
                ),
                45..=49 => self.pick(&["\\a", "\\b"]).into(),
                50..=84 => format!("({})", self.seq(d + 1)),
                _ => (self.next() % 4).to_string(),
            }
        }
        fn post(&mut self, s: String) -> String {
            if s.starts_with('@') {
                return s;
            }
            match self.next() % 10 {
                0 | 1 => format!(
                    "{s}*{}",
                    self.pick(&["0", "1", "2", "3", "5", "100", "40000"])
                ),
                2 => format!(
                    "{s}[{}:{}]",
                    self.pick(&["", "0", "1", "2", "5"]),
                    self.pick(&["", "1", "2", "3", "10", "-1"])
                ),
                3 => format!("{s} -> {}", self.pick(&["\\a", "\\b"])),
                _ => s,
            }
        }
        fn seq(&mut self, d: u32) -> String {
            let n = self.next() % 6;
            (0..n)
                .map(|_| {
                    let a = self.atom(d);
                    self.post(a)
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let strings: Vec<String> = (0..200).map(|_| g.seq(0)).collect();
    let opts = EvalOptions::default();
    let (mut accepted, mut rejected) = (0, 0);
    let results = par(&strings, |s| {
        let ours = match datastr::compile(s, &opts) {
            Ok(p) if p.size() > 16 << 20 => return Some("skip".into()),
            Ok(p) => Ok(p.to_vec().expect("small")),
            Err(e) => Err(e.to_string()),
        };
        let theirs = nbdkit(&case(s));
        match (ours, theirs) {
            (Ok(a), Ok(b)) if a == b => Some("ok".into()),
            (Err(_), Err(_)) => Some("both-rejected".into()),
            (a, b) => Some(format!(
                "DIFF {s:?}: ours {:?} nbdkit {:?}",
                a.map(|v| show(&v)),
                b.map(|v| show(&v))
            )),
        }
    });
    let mut diffs = vec![];
    for r in results {
        match r.as_str() {
            "ok" => accepted += 1,
            "both-rejected" => rejected += 1,
            "skip" => {}
            _ => diffs.push(r),
        }
    }
    eprintln!(
        "random strings: {accepted} accepted and equal, {rejected} rejected by both, {} differ",
        diffs.len()
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(accepted > 50 && rejected > 20);
}
