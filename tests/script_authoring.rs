//! What a script author sees: reloads that never stall in a busy
//! directory, top-level declarations in callbacks, every mistake in the
//! log at the default level as `file:line:col: callback: message`,
//! did-you-mean warnings, parameters, `--dump-plugin`, and the examples'
//! header commands run as written. This module owns the helpers the
//! submodules (reloads, mistakes, invocation) share.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod invocation;
mod mistakes;
mod reload;

impl LiveServer {
    /// Run each python statement on one nbdsh connection; the errno name
    /// each raised ("ok" when none).
    fn nbdsh_errnos(&self, stmts: &[&str]) -> Vec<String> {
        let mut py = String::from(
            "import errno\ndef many(n, off):\n    for i in range(n):\n        try:\n            h.pread(512, off)\n        except nbd.Error:\n            pass\n",
        );
        for st in stmts {
            py.push_str(&format!(
                "try:\n    {st}\n    print('ok')\nexcept nbd.Error as e:\n    print(errno.errorcode[e.errnum])\n"
            ));
        }
        let out = client("nbdsh")
            .args(["-u", &self.uri, "-c", &py])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}
