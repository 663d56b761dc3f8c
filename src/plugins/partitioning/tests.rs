//! Unit tests of the partitioning plugin's layout and parameters; the
//! images themselves are checked with sfdisk, sgdisk and against nbdkit
//! in tests/partitioning.rs.

use super::layout::{crc32, parse_guid};
use super::*;

fn params(kv: &[(&str, &str)]) -> Params {
    Params::new(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

#[test]
fn crc_and_guid() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    let g = parse_guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
    assert_eq!(g[..4], [0xaf, 0x3d, 0xc6, 0x0f]);
    assert_eq!(g[4..8], [0x83, 0x84, 0x72, 0x47]);
    assert_eq!(g[8..], [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
    assert_eq!(parse_guid("{0FC63DAF-8483-4772-8E79-3D69D8477DE4}"), Some(g));
    for bad in ["", "0FC63DAF-8483-4772-8E79-3D69D8477DE", "0FC63DAF84834772-8E79-3D69D8477DE4x", "0FC63DAG-8483-4772-8E79-3D69D8477DE4", "ü0FC63DA-8483-4772-8E79-3D69D8477DE4"] {
        assert_eq!(parse_guid(bad), None, "{bad}");
    }
}

#[test]
fn mbr_layout_with_logical_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut kv = vec![("alignment", "512")];
    let names: Vec<String> = (0..6).map(|i| dir.path().join(format!("p{i}")).to_str().unwrap().to_string()).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(n, vec![i as u8 + 1; 100 + i]).unwrap();
    }
    for n in &names {
        kv.push(("file", n));
    }
    kv.push(("partition-type", "mbr"));
    let h = make(&params(&kv)).unwrap().open(false, "").unwrap();
    // MBR, p0, p1, p2, then EBR + p3, EBR + p4, EBR + p5: 10 sectors.
    assert_eq!(h.get_size().unwrap(), 10 * 512);
    let mut d = vec![0u8; 10 * 512];
    h.pread(&mut d, 0, 0).unwrap();
    assert_eq!(d[0x1fe..0x200], [0x55, 0xaa]);
    let entry = |b: &[u8], i: usize| {
        let e = &b[0x1be + 16 * i..];
        (e[0], e[4], u32::from_le_bytes(e[8..12].try_into().unwrap()), u32::from_le_bytes(e[12..16].try_into().unwrap()))
    };
    assert_eq!(entry(&d, 0), (0x80, 0x83, 1, 1));
    assert_eq!(entry(&d, 2), (0, 0x83, 3, 1));
    assert_eq!(entry(&d, 3), (0, 0x0f, 4, 6));
    let ebr = &d[4 * 512..5 * 512];
    assert_eq!(entry(ebr, 0), (0, 0x83, 1, 1));
    assert_eq!(entry(ebr, 1), (0, 0x0f, 2, 2));
    assert_eq!(entry(&d[8 * 512..], 1), (0, 0, 0, 0));
    assert_eq!(&d[5 * 512..5 * 512 + 103], &[4u8; 103][..]);
    // Writes: the file's bytes go to the file; tables and padding only as they are.
    h.pwrite(&[9; 3], 512 + 10, 0).unwrap();
    assert_eq!(&std::fs::read(&names[0]).unwrap()[9..14], &[1, 9, 9, 9, 1]);
    h.pwrite(&d[..600], 0, 0).unwrap();
    assert!(h.pwrite(&[1], 0x1be, 0).unwrap_err().message.contains("MBR at offset 446"));
    assert!(h.pwrite(&[1], 512 + 200, 0).unwrap_err().message.contains("padding"));
    h.pwrite(&[0; 10], 512 + 200, 0).unwrap();
}

#[test]
fn bad_parameters_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, [1u8; 10]).unwrap();
    let f = f.to_str().unwrap();
    let e = dir.path().join("empty");
    std::fs::write(&e, []).unwrap();
    let e = e.to_str().unwrap();
    let err = |kv: &[(&str, &str)]| make(&params(kv)).err().expect("should fail").0;
    assert!(err(&[]).contains("at least one file= is required"));
    assert!(err(&[("file", "/nonexistent/x")]).contains("file=/nonexistent/x: No such file"));
    assert!(err(&[("file", e)]).contains("zero length partitions are not allowed"));
    assert!(err(&[("file", f), ("partition-type", "apm")]).contains("partition-type=apm"));
    for a in ["100", "1536", "2M", "x"] {
        assert!(err(&[("alignment", a), ("file", f)]).contains(&format!("alignment={a}")), "{a}");
    }
    assert!(err(&[("mbr-id", "256"), ("file", f)]).contains("mbr-id=256"));
    assert!(err(&[("type-guid", "nope"), ("file", f)]).contains("type-guid=nope"));
    assert!(err(&[("file", f), ("size", "1")]).contains("unknown parameter size=1"));
}

/// Files that pass nbdkit's size check for an MBR but whose layout
/// (padding, EBRs) runs past 2^32 sectors: an error (nbdkit 1.32.5 aborts
/// on an assertion here).
#[test]
fn mbr_past_32_bit_sectors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut kv = Vec::new();
    let mut names = Vec::new();
    for i in 0..20 {
        let p = dir.path().join(format!("s{i}"));
        std::fs::write(&p, b"x").unwrap();
        names.push(p.to_str().unwrap().to_string());
    }
    let big = dir.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(layout::MAX_MBR_DISK_SIZE - 20).unwrap();
    names.push(big.to_str().unwrap().to_string());
    for n in &names {
        kv.push(("file", n.as_str()));
    }
    kv.push(("partition-type", "mbr"));
    let e = make(&params(&kv)).err().expect("should fail").0;
    assert!(e.contains("too large for an MBR partition table") && e.contains("use partition-type=gpt"), "{e}");
    // As a GPT it is fine.
    kv.pop();
    let h = make(&params(&kv)).unwrap().open(false, "").unwrap();
    assert!(h.get_size().unwrap() > u32::MAX as u64 * 512);
}
