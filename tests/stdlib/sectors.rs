//! `std/sectors`: numbered sectors carry their numbers, offsets match
//! nbdkit's `pattern` plugin, and the check finds misplaced reads.

use super::*;

/// The 32-byte record a stamped sector repeats.
fn record(tag: &str, lba: u64) -> Vec<u8> {
    format!("{tag:<15.15} {lba:>15}\n").into_bytes()
}

#[test]
fn numbered_example_sectors_carry_their_numbers() {
    let s = Server::start(&[&example("numbered.rhai"), "size=3T", "tag=disk-A"]);
    let out = s.nbdsh(
        "import sys\n\
         assert h.get_size() == 3 << 40\n\
         sys.stdout.buffer.write(h.pread(1024, 0) + h.pread(100, 1000) + h.pread(512, (3 << 40) - 512))\n",
    );
    let b = out.as_bytes();
    let mut want = Vec::new();
    for lba in 0..3 {
        for _ in 0..16 {
            want.extend(record("disk-A", lba));
        }
    }
    assert_eq!(&b[..1024], &want[..1024]);
    assert_eq!(&b[1024..1124], &want[1000..1100]);
    let last = (3u64 << 40) / 512 - 1;
    assert_eq!(&b[1124..1156], &record("disk-A", last)[..]);
}

#[test]
fn sector_offsets_match_nbdkit_pattern_and_check_finds_misplaced_reads() {
    let text = r#"
fn config(p) {
    import "std/sectors" as sectors;
    let stamp = sectors::stamp(2048, 0, "t");
    let moved = stamp.extract(512, 512);          // sector 1 read where sector 2 was asked for
    let report = [
        sectors::check(stamp.extract(1024, 512), 1024, "t") ?? "ok",
        sectors::check(moved, 1024, "t"),
        sectors::check(sectors::stamp(64, 0, "other"), 0, "t"),
        sectors::check_offsets(sectors::offsets(100, 8), 16),
        `${sectors::claimed(stamp.extract(1536, 32))}`,
    ];
    #{ report: (report.reduce(|s, x| s + x + "\n", "")).to_blob() }
}
fn get_size(h) { 1048576 }
fn pread(h, c, o) {
    import "std/sectors" as sectors;
    if o == 0 && c == 4096 { let b = blob(4096); b.write_blob(0, h.report); return b; }
    sectors::offsets(c, o)
}
"#;
    let (_dir, path) = script("s.rhai", text);
    let s = Server::start(&[path.to_str().unwrap()]);
    let out = s.nbdsh(
        "print(h.pread(4096, 0).rstrip(b'\\0').decode(), end='')\n\
         print((h.pread(37, 4099) + h.pread(8192, 1040384)).hex())\n",
    );
    let (report, rest) = out.split_at(out.find("3\n").unwrap() + 2);
    let rest: Vec<u8> = (0..rest.trim().len() / 2)
        .map(|i| u8::from_str_radix(&rest[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        report,
        "ok\n\
         byte 1054 (sector 2) holds data stamped \"t\" sector 1\n\
         byte 0 (sector 0) holds data stamped \"other\" sector 0\n\
         byte 23 is wrong (an offset pattern holds its own offset in every 8-byte word)\n\
         3\n"
    );
    let reference = nbdkit_bytes(&["pattern", "size=1M"]).unwrap();
    assert!(rest == [&reference[4099..4136], &reference[1040384..]].concat());
}
