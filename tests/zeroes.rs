//! How write zeroes and extents are shown to clients by the nozero and
//! noextents filters, compared with nbdkit's log filter lines and
//! nbdinfo's map.

use crate::common::*;

/// Run `nbdsh` steps against `PROG -U - ARGS logfile=LOG`; the log's
/// lines without timestamps (and nbdkit's `Fork`).
fn log_of(prog: &str, args: &[&str], py: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let lf = format!("logfile={}", log.display());
    let mut a = vec!["-U", "-"];
    a.extend(args);
    a.push(&lf);
    let cmd = format!("nbdsh -u \"$uri\" -c '{py}'");
    a.extend(["--run", &cmd]);
    let out = run(prog, &a);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .filter(|l| *l != "Fork")
        .map(|l| {
            // The memory plugins' block sizes differ; not the filters'.
            let w: Vec<&str> = l
                .split(' ')
                .filter(|w| {
                    !w.starts_with("minsize=")
                        && !w.starts_with("prefsize=")
                        && !w.starts_with("maxsize=")
                })
                .collect();
            format!("{}\n", w.join(" "))
        })
        .collect()
}

#[test]
fn noextents_shows_everything_as_data_as_nbdkit() {
    let map = |prog: &str, filter: bool| {
        let mut a = vec!["-U", "-"];
        if filter {
            a.push("--filter=noextents");
        }
        a.extend([
            "memory",
            "1M",
            "--run",
            "nbdsh -u \"$uri\" -c 'h.pwrite(b\"x\" * 4096, 65536)' && nbdinfo --map \"$uri\"",
        ]);
        run_ok(prog, &a)
    };
    let ours = map(bin(), true);
    assert_eq!(
        ours.split_whitespace().collect::<Vec<_>>(),
        ["0", "1048576", "0", "data"]
    );
    assert_eq!(ours, map("nbdkit", true));
    // Without the filter the holes show.
    assert!(map(bin(), false).contains("hole,zero"));
}
