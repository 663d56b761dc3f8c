//! Twin runs: the same command line served by nbdkit and by nbdscript,
//! for tests that compare bytes or a client's output between the two.

use super::{nbdkit_bytes, nbdscript, nbdscript_bytes, sys_path};
use std::process::Command;

/// The same export from nbdkit and nbdscript must be identical bytes.
pub fn same_bytes(args: &[&str]) -> Vec<u8> {
    let theirs = nbdkit_bytes(args).unwrap_or_else(|e| panic!("nbdkit {args:?}: {e}"));
    let ours = nbdscript_bytes(args).unwrap_or_else(|e| panic!("nbdscript {args:?}: {e}"));
    assert_eq!(
        theirs.len(),
        ours.len(),
        "sizes differ for {args:?}: nbdkit {} nbdscript {}",
        theirs.len(),
        ours.len()
    );
    if let Some(i) = theirs.iter().zip(&ours).position(|(a, b)| a != b) {
        panic!(
            "{args:?}: first difference at byte {i}: nbdkit {:#x} nbdscript {:#x}",
            theirs[i], ours[i]
        );
    }
    ours
}

/// Run `cmd` under `--run` with both servers; returns (nbdkit, nbdscript) stdout.
pub fn both_run(args: &[&str], cmd: &str) -> (String, String) {
    let go = |mut c: Command| {
        let out = c
            .env("PATH", sys_path())
            .args(args)
            .arg("--run")
            .arg(cmd)
            .output()
            .expect("run server");
        assert!(
            out.status.success(),
            "{args:?} --run failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut k = Command::new("nbdkit");
    k.arg("-U").arg("-");
    (go(k), go(nbdscript()))
}

/// An nbdsh `-c` command line for `--run` (the script in single quotes).
pub fn nbdsh_cmd(script: &str) -> String {
    assert!(!script.contains('\''), "keep single quotes out of scripts");
    format!("nbdsh -u \"$uri\" -c '{script}'")
}
