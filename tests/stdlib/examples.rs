//! The image examples: the EFI example's ESP holds its file, the floppy
//! example rebuilds for a connected client, and every header command
//! runs as written.

use super::*;

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
