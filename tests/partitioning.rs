//! The partitioning plugin: images checked with sfdisk, sgdisk and blkid,
//! compared byte for byte with nbdkit-partitioning-plugin on the same
//! files (GPT unique partition GUIDs and the CRCs over them are random in
//! both, so those fields are masked), and writes through to the files.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Partition files in `dir`: sizes chosen to need rounding and padding.
fn parts(dir: &Path) -> Vec<String> {
    let sizes = [1usize, 511, 1 << 20, 5, 1023, 3000, 100_000];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = dir.join(format!("p{}", i + 1));
            let bytes: Vec<u8> = (0..n).map(|j| (j * 7 + i + 1) as u8 | 1).collect();
            std::fs::write(&p, bytes).unwrap();
            format!("p{}", i + 1)
        })
        .collect()
}

/// `nbdcopy` the export of `server ARGS` (run in `dir`) to bytes.
fn image(server: &str, dir: &Path, args: &[String]) -> Vec<u8> {
    let mut c = if server == "nbdkit" {
        Command::new("nbdkit")
    } else {
        nbdscript()
    };
    let out = c
        .current_dir(dir)
        .env("PATH", sys_path())
        .args(["-U", "-", "partitioning"])
        .args(args)
        .args(["--run", "nbdcopy \"$uri\" -"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{server} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Zero what nbdkit draws at random in a GPT: each entry's unique GUID,
/// and the header and entry-array CRCs, in both headers and arrays.
fn mask_gpt(mut b: Vec<u8>) -> Vec<u8> {
    let le = |b: &[u8], o: usize, n: usize| {
        b[o..o + n]
            .iter()
            .rev()
            .fold(0u64, |a, &x| a << 8 | x as u64)
    };
    let last = b.len() - 512;
    for h in [512, last] {
        assert_eq!(&b[h..h + 8], b"EFI PART");
        let (pe, n) = (le(&b, h + 72, 8) as usize * 512, le(&b, h + 80, 4) as usize);
        b[h + 16..h + 20].fill(0);
        b[h + 88..h + 92].fill(0);
        for i in 0..n {
            b[pe + 128 * i + 16..pe + 128 * i + 32].fill(0);
        }
    }
    b
}

fn tool(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .env("PATH", sys_path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn mbr_is_byte_identical_to_nbdkit_and_sfdisk_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = parts(dir.path());
    // Three primaries with settings that change between files.
    let args = strs(&[
        "mbr-id=0x82",
        "alignment=512",
        "p1",
        "p2",
        "mbr-id=default",
        "alignment=4096",
        "p3",
    ]);
    let ours = image("nbdscript", dir.path(), &args);
    assert_eq!(ours, image("nbdkit", dir.path(), &args));
    let img = dir.path().join("mbr.img");
    std::fs::write(&img, &ours).unwrap();
    let dump = tool("sfdisk", &["--dump", img.to_str().unwrap()]);
    for want in [
        "mbr.img1 : start=           1, size=           1, type=82, bootable",
        "mbr.img2 : start=           2, size=           1, type=82",
        "mbr.img3 : start=           8, size=        2048, type=83",
    ] {
        assert!(dump.contains(want), "{want}\n{dump}");
    }
    assert_eq!(
        &ours[8 * 512..8 * 512 + (1 << 20)],
        &std::fs::read(dir.path().join("p3")).unwrap()[..]
    );
    // Seven files: three primaries, an extended partition, four logical.
    let mut args = p.clone();
    args.push("partition-type=mbr".into());
    let ours = image("nbdscript", dir.path(), &args);
    assert_eq!(ours, image("nbdkit", dir.path(), &args));
    std::fs::write(&img, &ours).unwrap();
    let dump = tool("sfdisk", &["--dump", img.to_str().unwrap()]);
    for want in [
        "mbr.img4 : start=        8192, size=        8388, type=f",
        "mbr.img5 : start=       10240, size=           1, type=83",
        "mbr.img8 : start=       16384, size=         196, type=83",
    ] {
        assert!(dump.contains(want), "{want}\n{dump}");
    }
    assert!(tool("blkid", &["-p", img.to_str().unwrap()]).contains("PTTYPE=\"dos\""));
}

#[test]
fn gpt_matches_nbdkit_but_the_random_guids_and_sgdisk_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = parts(dir.path());
    // More than four files: GPT by default, as nbdkit.
    let mut args = vec![
        p[0].clone(),
        "type-guid=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F".into(),
    ];
    args.extend(p[1..].iter().cloned());
    let ours = image("nbdscript", dir.path(), &args);
    let theirs = image("nbdkit", dir.path(), &args);
    assert_eq!(ours.len(), theirs.len());
    let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    assert!(differ > 0, "unique GUIDs should be random");
    assert!(
        mask_gpt(ours.clone()) == mask_gpt(theirs),
        "differs beyond GUIDs and CRCs"
    );
    let img = dir.path().join("gpt.img");
    std::fs::write(&img, &ours).unwrap();
    let img = img.to_str().unwrap();
    let v = tool("sgdisk", &["-v", img]);
    assert!(v.contains("No problems found"), "{v}");
    let list = tool("sgdisk", &["-p", img]);
    assert!(
        list.contains("   1            2048            2048   512 bytes   8300  p1"),
        "{list}"
    );
    assert!(
        list.contains("   7           14336           14531   98.0 KiB    8200  p7"),
        "{list}"
    );
    let i1 = tool("sgdisk", &["-i", "1", img]);
    let i2 = tool("sgdisk", &["-i", "2", img]);
    assert!(
        i1.contains("Partition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{i1}"
    );
    assert!(
        i2.contains("Partition GUID code: 0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
        "{i2}"
    );
    assert!(tool("blkid", &["-p", img]).contains("PTTYPE=\"gpt\""));
    // Two runs give different unique GUIDs.
    assert_ne!(ours, image("nbdscript", dir.path(), &args));
}

/// A filesystem in a partition, written through the disk: the writes
/// land in its file, a copy of the whole disk back onto itself passes
/// (tables and padding unchanged), and changing the table is EIO.
#[test]
fn writes_go_to_the_files_and_tables_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs.img");
    std::fs::write(dir.path().join("small"), b"x").unwrap();
    let fs_s = fs.to_str().unwrap();
    tool("truncate", &["-s", "8M", fs_s]);
    tool("mke2fs", &["-q", "-F", "-t", "ext2", fs_s]);
    let s = Server::start(&[
        "-v",
        "partitioning",
        dir.path().join("small").to_str().unwrap(),
        fs_s,
        "partition-type=gpt",
    ]);
    let url = format!("nbd+unix:///?socket={}", s.sock.display());
    let disk = dir.path().join("disk.img");
    let disk_s = disk.to_str().unwrap();
    run_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &url, disk_s],
    );
    let found = tool("blkid", &["-p", "-O", &(4096 * 512).to_string(), disk_s]);
    assert!(found.contains("TYPE=\"ext2\""), "{found}");
    // The whole disk written back as it is.
    run_ok("nbdcopy", &[disk_s, &s.uri]);
    let script = "import errno
h.pwrite(b\"hello\", 4096 * 512 + 3000)
h.flush()
def eio(f):
    try:
        f()
        return \"written\"
    except nbd.Error as e:
        return e.errnum == errno.EIO
print(eio(lambda: h.pwrite(b\"\\x01\", 512 + 20)))
print(eio(lambda: h.pwrite(b\"\\x01\", 600 * 512)))
print(eio(lambda: h.pwrite(bytes(512), 600 * 512)))";
    assert_eq!(
        s.nbdsh(script).split_whitespace().collect::<Vec<_>>(),
        ["True", "True", "written"]
    );
    assert_eq!(&std::fs::read(&fs).unwrap()[3000..3005], b"hello");
    let (_, err) = s.stop();
    assert!(err.contains("partitioning: attempt to change the partition table of the virtual disk (GPT primary at offset 532)"), "{err}");
    assert!(
        err.contains(
            "partitioning: write of non-zero bytes to padding between partitions (offset 307200)"
        ),
        "{err}"
    );
}

#[test]
fn errors_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    tool("truncate", &["-s", "3T", big.to_str().unwrap()]);
    let big = big.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = nbdscript()
            .env("PATH", sys_path())
            .args(["-U", "-", "partitioning"])
            .args(args)
            .args(["--run", "nbdinfo --size \"$uri\""])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&[big, "partition-type=mbr"]);
    assert!(!ok && err.contains("partitioning: partition-type=mbr: an MBR partition table supports a virtual disk of about 2 TB, but the 1 file(s) total 3298534883328 bytes"), "{err}");
    // Without partition-type=, a GPT.
    let (ok, out, err) = run(&[big]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        (3298534883328u64 + (2048 + 33) * 512).to_string()
    );
    let (ok, _, err) = run(&["alignment=1000", big]);
    assert!(
        !ok && err.contains(
            "partitioning: alignment=1000: give a power of two from 512 (the sector size) to 1M"
        ),
        "{err}"
    );
    let (ok, _, err) = run(&[]);
    assert!(
        !ok && err.contains("partitioning: at least one file= is required"),
        "{err}"
    );
    let out = nbdscript()
        .args(["partitioning", "--dump-plugin"])
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains("name=partitioning\n") && o.contains("magic_config_key=file\n"),
        "{o}"
    );
    let help =
        String::from_utf8_lossy(&nbdscript().arg("--help").output().unwrap().stdout).into_owned();
    assert!(
        help.contains("partitioning") && help.contains("type-guid="),
        "{help}"
    );
}
