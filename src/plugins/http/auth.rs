//! Credentials for the `http` plugin: nbdkit's password forms (`-` prompts,
//! `+FILE` reads a file, `-FD` reads a descriptor, anything else is the
//! password) and the Basic `Authorization` header. No network, no tokio.

use std::io::{BufRead, IsTerminal, Read};
use std::os::fd::FromRawFd;

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn strip_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

/// Turn a `password=` value into the password.
pub fn read_password(v: &str) -> Result<String, String> {
    if v == "-" {
        return prompt();
    }
    if let Some(path) = v.strip_prefix('+') {
        return std::fs::read_to_string(path)
            .map(strip_newline)
            .map_err(|e| format!("cannot read the password file {path}: {e}"));
    }
    if let Some(fd) = v.strip_prefix('-') {
        if let Ok(fd) = fd.parse::<i32>() {
            if fd < 3 {
                return Err(format!(
                    "password=-{fd}: use a descriptor of 3 or more (0-2 are stdio)"
                ));
            }
            // SAFETY: the user handed us this descriptor to read the
            // password from; we take ownership and close it after reading.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut s = String::new();
            f.read_to_string(&mut s)
                .map_err(|e| format!("cannot read the password from descriptor {fd}: {e}"))?;
            return Ok(strip_newline(s));
        }
    }
    Ok(v.to_string())
}

/// Ask on the terminal with echo off, or read a line from stdin.
fn prompt() -> Result<String, String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut old: Option<libc::termios> = None;
    if tty {
        eprint!("password: ");
        // SAFETY: termios calls on stdin with a zeroed struct they fill.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                old = Some(t);
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSAFLUSH, &t);
            }
        }
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = old {
        // SAFETY: restore the settings read above.
        unsafe {
            libc::tcsetattr(0, libc::TCSAFLUSH, &t);
        }
        eprintln!();
    }
    r.map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(strip_newline(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_basic() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn password_forms() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(
            read_password(&format!("+{}", f.display())).unwrap(),
            "s3cret"
        );
        assert_eq!(read_password("plain").unwrap(), "plain");
        assert!(read_password("+/nonexistent/pw").is_err());
        assert!(read_password("-1").is_err());
    }
}
