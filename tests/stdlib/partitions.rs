//! `std/mbr` and `std/gpt`: logical partitions against sfdisk's dump,
//! errors naming the partition, and a 2 TiB GPT passing sgdisk without
//! allocating.

use super::*;

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
