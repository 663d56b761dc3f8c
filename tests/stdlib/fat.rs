//! `std/fat`: FAT12/16/32 images checked by fsck.fat, mtools and blkid,
//! and a 64 MiB image with 100 files built fast.

use super::*;

/// A plugin script serving `fat::image(SPEC)` built by `rebuild`.
fn fat_script(spec: &str) -> String {
    format!(
        "fn config(p) {{ #{{ disk: () }} }}\n\
         fn rebuild(s) {{ import \"std/fat\" as fat; s.disk = fat::image({spec}); }}\n\
         fn get_size(h) {{ h.disk.size() }}\n\
         fn pread(h, c, o) {{ h.disk.pread(c, o) }}\n"
    )
}

/// Files with long names, nested directories and a few sizes; the same
/// list in Rhai (a map literal) and in Rust.
fn tree() -> (String, Vec<(String, Vec<u8>)>) {
    let items: Vec<(String, usize, String)> = vec![
        ("README.TXT".into(), 12, "hello world\n".into()),
        (
            "Long file name with spaces.text".into(),
            5000,
            "long ".into(),
        ),
        ("a/b/c/deep.bin".into(), 70000, "deep!".into()),
        ("a/Sibling directory/x.y.z.tar.gz".into(), 1, "x".into()),
        ("a/b/UPPER.TXT".into(), 513, "u".into()),
        ("mixedCase.Txt".into(), 2048, "m".into()),
        ("mixedcase2.txt".into(), 0, "".into()),
        ("Ünïcödé name.txt".into(), 77, "unicode ".into()),
    ];
    let mut rhai = String::from("#{\n");
    let mut rust = Vec::new();
    for (p, n, t) in &items {
        let v = if t.is_empty() {
            "\"\"".to_string()
        } else {
            format!("pattern({n}, {t:?}.to_blob())")
        };
        rhai += &format!("  {p:?}: {v},\n");
        rust.push((p.clone(), pattern(*n, t)));
    }
    rhai += "  \"empty dir/\": (),\n}";
    (rhai, rust)
}

#[test]
fn fat12_fat16_fat32_pass_fsck_mtools_and_blkid() {
    let (files, want) = tree();
    for (spec, fat, label) in [
        (
            format!("#{{ size: \"1440K\", label: \"floppy\", files: {files} }}"),
            "FAT12",
            "FLOPPY",
        ),
        (
            format!("#{{ size: \"8M\", label: \"SMALL12\", files: {files} }}"),
            "FAT12",
            "SMALL12",
        ),
        (
            format!("#{{ size: \"40M\", label: \"MID16\", files: {files} }}"),
            "FAT16",
            "MID16",
        ),
        (
            format!("#{{ size: \"64M\", fat: 32, label: \"FORCED32\", files: {files} }}"),
            "FAT32",
            "FORCED32",
        ),
        (
            format!("#{{ size: \"600M\", label: \"BIG32\", files: {files} }}"),
            "FAT32",
            "BIG32",
        ),
    ] {
        let (dir, path) = script("fat.rhai", &fat_script(&spec));
        let s = Server::start(&[path.to_str().unwrap()]);
        let img = image(&s.uri, dir.path(), "fat.img");
        fsck_clean(&img);
        let ids = blkid(&img);
        assert!(ids.contains("TYPE=vfat"), "{spec}: {ids}");
        assert!(ids.contains(&format!("LABEL={label}")), "{spec}: {ids}");
        assert!(ids.contains(&format!("VERSION={fat}")), "{spec}: {ids}");
        let listing = mtools_ok("mdir", &["-/", "-i", img.to_str().unwrap(), "::"]);
        for name in [
            "Long file name with spaces.text",
            "x.y.z.tar.gz",
            "Sibling directory",
            "deep     bin",
            "empty dir",
            "mixedCase.Txt",
        ] {
            assert!(
                listing.contains(name),
                "{spec}: mdir does not list {name}:\n{listing}"
            );
        }
        mtools_read_back(&img, &want);
    }
}

#[test]
fn sixty_four_mib_fat_with_100_files_builds_fast_and_checks_clean() {
    let spec = "#{ size: \"64M\", label: \"HUNDRED\", files: files() }";
    let mut want = Vec::new();
    for i in 0..100 {
        let len = 1000 + i * 5003;
        want.push((
            format!("dir{}/file number {i}.bin", i % 7),
            pattern(len, &format!("file {i} ")),
        ));
    }
    let text = fat_script(spec)
        + "fn files() { let f = #{}; for i in 0..100 { f[`dir${i % 7}/file number ${i}.bin`] = pattern(1000 + i * 5003, `file ${i} `.to_blob()); } f }\n";
    let (dir, path) = script("hundred.rhai", &text);
    let s = Server::start(&["-v", path.to_str().unwrap()]);
    let img = image(&s.uri, dir.path(), "fat.img");
    let (_, log) = s.stop();
    fsck_clean(&img);
    assert!(blkid(&img).contains("VERSION=FAT16"));
    mtools_read_back(&img, &want);
    let line = log
        .lines()
        .find(|l| l.contains("rebuild done in"))
        .unwrap_or_else(|| panic!("no rebuild timing in the log:\n{log}"));
    eprintln!("64 MiB FAT16 with 100 files: {line}");
}
