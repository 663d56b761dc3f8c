//! The built-in script library (`std/mbr`, `std/gpt`, `std/fat`,
//! `std/sectors`), the `rebuild` callback and the image examples, checked
//! only by trusted tools: sfdisk, sgdisk, fsck.fat, mtools, blkid, dd, and
//! nbdkit's `pattern` plugin.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Write `text` as `NAME` in a fresh directory.
fn script(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

/// Copy the whole export into `dir/NAME` with nbdcopy.
fn image(uri: &str, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    run_ok("nbdcopy", &[uri, p.to_str().unwrap()]);
    p
}

/// Run an mtools program on an image (geometry checks off, as for any
/// non-floppy image).
fn mtools(prog: &str, args: &[&str]) -> std::process::Output {
    client(prog)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .args(args)
        .output()
        .unwrap()
}

fn mtools_ok(prog: &str, args: &[&str]) -> String {
    let out = mtools(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fsck.fat -n` must find nothing to fix.
fn fsck_clean(img: &Path) -> String {
    let out = run("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck.fat -n failed:\n{text}");
    assert!(!text.contains("Perform changes"), "{text}");
    assert!(!text.to_lowercase().contains("differ"), "{text}");
    text
}

/// `blkid -p` of an image: `(TYPE, LABEL)` and the raw output.
fn blkid(img: &Path) -> String {
    run_ok(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            "-s",
            "TYPE",
            "-s",
            "LABEL",
            "-s",
            "VERSION",
            img.to_str().unwrap(),
        ],
    )
}

/// Every file of the image, read back with `mcopy -s`, must be exactly
/// `want` (path -> bytes), nothing more.
fn mtools_read_back(img: &Path, want: &[(String, Vec<u8>)]) {
    let out = tempfile::tempdir().unwrap();
    let spec = format!("{}", img.display());
    mtools_ok(
        "mcopy",
        &["-s", "-n", "-i", &spec, "::*", out.path().to_str().unwrap()],
    );
    let mut got = Vec::new();
    walk(out.path(), out.path(), &mut got);
    got.sort();
    let mut want: Vec<(String, Vec<u8>)> = want.to_vec();
    want.sort();
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "files mcopy read back");
    for ((p, g), (_, w)) in got.iter().zip(&want) {
        assert!(
            g == w,
            "{p}: {} bytes read back, {} expected (or different bytes)",
            g.len(),
            w.len()
        );
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
}

/// What `pattern(len, text.to_blob())` makes in a script.
fn pattern(len: usize, text: &str) -> Vec<u8> {
    text.bytes().cycle().take(len).collect()
}

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

#[test]
fn mbr_with_logical_partitions_matches_sfdisk_dump() {
    let text = r#"
fn config(p) {
    import "std/mbr" as mbr;
    let d = disk("64M");
    mbr::write(d, [
        #{ start: "1M", size: "16M", type: "fat32", bootable: true },
        #{ start: 17 * 1048576, size: "8M", type: 0x83 },
        #{ start: "27M", size: "8M", type: "linux", logical: true },
        #{ start: "36M", size: "4M", type: "swap", logical: true },
        #{ start: "41M", size: "23M", type: "lvm", logical: true },
    ], #{ signature: 0x1234abcd });
    #{ disk: d }
}
fn get_size(h) { h.disk.size() }
fn pread(h, c, o) { h.disk.pread(c, o) }
"#;
    let (dir, path) = script("mbr.rhai", text);
    let s = Server::start(&[path.to_str().unwrap()]);
    let img = image(&s.uri, dir.path(), "mbr.img");
    let dump = run_ok("sfdisk", &["--dump", img.to_str().unwrap()]);
    let lines: Vec<String> = dump
        .lines()
        .filter(|l| l.contains(" : "))
        .map(|l| {
            l.split(" : ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<String>()
        })
        .collect();
    assert_eq!(
        lines,
        [
            "start=2048,size=32768,type=c,bootable",
            "start=34816,size=16384,type=83",
            "start=53248,size=77824,type=f",
            "start=55296,size=16384,type=83",
            "start=73728,size=8192,type=82",
            "start=83968,size=47104,type=8e",
        ],
        "{dump}"
    );
    assert!(dump.contains("label-id: 0x1234abcd"), "{dump}");
    // The partition table is consistent for fdisk too.
    let l = run_ok("sfdisk", &["--verify", img.to_str().unwrap()]);
    assert!(!l.to_lowercase().contains("overlap"), "{l}");
}

#[test]
fn mbr_errors_name_the_partition() {
    let text = r#"
fn config(p) {
    import "std/mbr" as mbr;
    let d = disk("8M");
    mbr::write(d, [ #{ start: "1M", size: "4M" }, #{ start: "3M", size: "1M" } ]);
    #{ disk: d }
}
fn get_size(h) { h.disk.size() }
fn pread(h, c, o) { h.disk.pread(c, o) }
"#;
    let (_dir, path) = script("bad.rhai", text);
    let out = nbdscript()
        .arg(&path)
        .args(["-U", "-", "--run", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mbr: partitions 1 and 2 overlap"), "{err}");
}

const GPT_8: &str = r#"
fn config(p) { #{ disk: () } }
fn rebuild(s) {
    import "std/gpt" as gpt;
    let d = disk("2T");
    let parts = [];
    for i in 0..7 { parts.push(#{ name: `part ${i + 1}`, type: ["linux", "swap", "lvm", "msdata", "raid", "home", "efi"][i], size: "100G" }); }
    parts.push(#{ name: "the rest: ÜTF-16", type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4" });
    s.parts = gpt::write(d, parts, #{ seed: "eight" });
    s.disk = d;
}
fn get_size(h) { h.disk.size() }
fn pread(h, c, o) { h.disk.pread(c, o) }
fn extents(h, c, o) { h.disk.extents(c, o) }
"#;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn gpt_2tib_eight_partitions_passes_sgdisk_without_allocating() {
    let (dir, path) = script("gpt.rhai", GPT_8);
    let s = Server::start(&[path.to_str().unwrap()]);
    let img = dir.path().join("gpt.img");
    // A sparse copy: qemu-img skips what block status reports as holes.
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &s.uri,
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 << 40);
    let v = run_ok("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let p = run_ok("sgdisk", &["-p", img.to_str().unwrap()]);
    for (n, code) in [
        (1, "8300"),
        (2, "8200"),
        (3, "8E00"),
        (4, "0700"),
        (5, "FD00"),
        (6, "8302"),
        (7, "EF00"),
        (8, "8300"),
    ] {
        let name = if n == 8 {
            "the rest: ÜTF-16".to_string()
        } else {
            format!("part {n}")
        };
        assert!(
            p.lines()
                .any(|l| l.split_whitespace().next() == Some(&n.to_string())
                    && l.contains(code)
                    && l.contains(&name)),
            "partition {n} ({code}, {name}) in:\n{p}"
        );
    }
    let i1 = run_ok("sgdisk", &["-i", "1", img.to_str().unwrap()]);
    assert!(i1.contains("First sector: 2048 "), "{i1}");
    assert!(i1.contains("Partition size: 209715200 sectors"), "{i1}");
    let rss = rss_kib(s.child.id());
    eprintln!("2 TiB GPT with 8 partitions: server RSS {rss} KiB");
    assert!(rss < 100 << 10, "RSS {rss} KiB");
    // Reproducible: a second server makes the same disk GUID.
    let s2 = Server::start(&[path.to_str().unwrap()]);
    let img2 = dir.path().join("gpt2.img");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &s2.uri,
            img2.to_str().unwrap(),
        ],
    );
    let g = |img: &Path| {
        run_ok("sgdisk", &["-p", img.to_str().unwrap()])
            .lines()
            .find(|l| l.starts_with("Disk identifier (GUID)"))
            .unwrap()
            .to_string()
    };
    assert_eq!(g(&img), g(&img2));
}

#[test]
fn efi_example_esp_holds_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&[&example("efi.rhai")]);
    let img = image(&s.uri, dir.path(), "efi.img");
    let v = run_ok("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let i1 = run_ok("sgdisk", &["-i", "1", img.to_str().unwrap()]);
    assert!(
        i1.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"),
        "{i1}"
    );
    assert!(
        i1.contains("Partition name: 'EFI system partition'"),
        "{i1}"
    );
    // Take partition 1 out with dd, where sgdisk says it is.
    let first: u64 = field(&i1, "First sector: ");
    let last: u64 = field(&i1, "Last sector: ");
    let esp = dir.path().join("esp.img");
    run_ok(
        "dd",
        &[
            &format!("if={}", img.display()),
            &format!("of={}", esp.display()),
            "bs=512",
            &format!("skip={first}"),
            &format!("count={}", last - first + 1),
            "status=none",
        ],
    );
    fsck_clean(&esp);
    let ids = blkid(&esp);
    assert!(
        ids.contains("TYPE=vfat") && ids.contains("LABEL=ESP") && ids.contains("VERSION=FAT32"),
        "{ids}"
    );
    mtools_read_back(
        &esp,
        &[
            (
                "EFI/BOOT/BOOTX64.EFI".into(),
                b"MZ (not a real boot loader: a test file)\n".to_vec(),
            ),
            (
                "EFI/BOOT/startup.nsh".into(),
                b"echo hello from nbdscript\r\n".to_vec(),
            ),
        ],
    );
    // mtools reads it in place too, at the partition's offset.
    let t = mtools_ok(
        "mtype",
        &[
            "-i",
            &format!("{}@@{}", img.display(), first * 512),
            "::/EFI/BOOT/startup.nsh",
        ],
    );
    assert_eq!(t, "echo hello from nbdscript\r\n");
}

fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
}

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

/// One nbdsh connection driven through its stdin: `dump PATH` copies the
/// whole export to PATH; `poke OFFSET` writes "poked" there.
const DRIVER: &str = r#"
import sys
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "dump":
        with open(arg, "wb") as f:
            f.write(h.pread(h.get_size(), 0))
    elif cmd == "poke":
        h.pwrite(b"poked", int(arg))
    print("ok", flush=True)
"#;

#[test]
fn floppy_example_rebuilds_for_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floppy.rhai");
    let original = std::fs::read_to_string(example("floppy.rhai")).unwrap();
    std::fs::write(&path, &original).unwrap();
    let s = LiveServer::start(&["-v", path.to_str().unwrap()]);
    let mut c = Client::start(&s.uri, DRIVER);
    let img = dir.path().join("floppy.img");
    let img_s = img.to_str().unwrap();
    assert_eq!(c.step(&format!("dump {img_s}")), "ok\n");
    fsck_clean(&img);
    let ids = blkid(&img);
    assert!(
        ids.contains("VERSION=FAT12") && ids.contains("LABEL=NBDFLOPPY"),
        "{ids}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1474560);
    assert_eq!(
        mtools_ok("mtype", &["-i", img_s, "::/docs/HELLO.TXT"]),
        "hello from a subdirectory\n"
    );
    assert!(!mtools("mtype", &["-i", img_s, "::/NEWFILE.TXT"])
        .status
        .success());

    // A write by the client, then a save with one more file: the rebuild
    // serves the new file on the same connection and drops the write.
    assert_eq!(c.step("poke 1400000"), "ok\n");
    let marker = "        \"empty/\": (),\n";
    assert!(original.contains(marker));
    // First a version whose rebuild fails: refused, the old image stays.
    std::fs::write(
        &path,
        original.replace(
            marker,
            &format!("{marker}        \"bad\": #{{ data: \"x\", time: \"yesterday\" }},\n"),
        ),
    )
    .unwrap();
    let l = s.wait_log_for("rebuild failed", 20);
    assert!(l.contains("fat: time \"yesterday\" is not"), "{l}");
    assert!(l.contains("refused"), "{l}");
    let added = original.replace(
        marker,
        &format!("{marker}        \"NEWFILE.TXT\": \"added while connected\\n\",\n"),
    );
    let t = Instant::now();
    std::fs::write(&path, added).unwrap();
    s.wait_log_for("rebuild done in", 20);
    assert_eq!(c.step(&format!("dump {img_s}")), "ok\n");
    eprintln!("save to rebuilt image read: {:?}", t.elapsed());
    fsck_clean(&img);
    assert_eq!(
        mtools_ok("mtype", &["-i", img_s, "::/NEWFILE.TXT"]),
        "added while connected\n"
    );
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(
        &bytes[1400000..1400005],
        &[0; 5],
        "the client's write was dropped by the rebuild"
    );
}

/// Each image example's header command runs as written (the binary on
/// PATH, in a scratch directory).
#[test]
fn image_examples_header_commands_run() {
    let bin_dir = Path::new(bin()).parent().unwrap().to_path_buf();
    for (name, expect) in [
        (
            "floppy.rhai",
            vec!["README   TXT", "Long file name.txt", "HELLO    TXT"],
        ),
        ("efi.rhai", vec!["EFI system partition", "EF00", "root"]),
        (
            "numbered.rhai",
            vec![
                "00000400  64 69 73 6b 2d 41 20 20",
                "|              2.|",
                "00000440",
            ],
        ),
    ] {
        let text = std::fs::read_to_string(example(name)).unwrap();
        assert!(text.starts_with("#!/usr/bin/env nbdscript\n"), "{name}");
        let header = text.lines().nth(1).unwrap();
        let cmd = header
            .split_once(".  ")
            .map(|x| x.1)
            .unwrap_or_else(|| panic!("{name}: no command in {header:?}"));
        assert!(cmd.starts_with(&format!("./{name} ")), "{cmd}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(example(name), dir.path().join(name)).unwrap();
        let out = client("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir.path())
            .env("PATH", format!("{}:{}", bin_dir.display(), sys_path()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {cmd}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for e in expect {
            assert!(stdout.contains(e), "{name}: {e:?} not in\n{stdout}");
        }
    }
}
