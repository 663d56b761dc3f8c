//! What a client may see of a server-side message: error text sent in
//! replies (and handshake errors) never carries the server's paths.

/// A message as a client may see it: every absolute path is cut to its
/// last component (`/srv/disks/a.img: denied` → `a.img: denied`).
pub fn for_client(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find('/') {
        let starts_token = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "\"'`([{=,;<".contains(c));
        if !starts_token {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"'`)]},;:<>".contains(c))
            .unwrap_or(tail.len());
        let path = &tail[..end];
        match path.trim_end_matches('/').rsplit('/').next() {
            Some(base) if !base.is_empty() => out.push_str(base),
            _ => out.push_str(path),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::for_client;

    #[test]
    fn client_text_has_no_server_paths() {
        assert_eq!(
            for_client("open /srv/disks/a.img: Permission denied"),
            "open a.img: Permission denied"
        );
        assert_eq!(
            for_client("/home/u/p.rhai:3:5: pread: \"/etc/x\" failed"),
            "p.rhai:3:5: pread: \"x\" failed"
        );
        assert_eq!(for_client("read 512/4096 bytes"), "read 512/4096 bytes");
        assert_eq!(for_client("no path here"), "no path here");
        assert_eq!(for_client("dir /tmp/d/ gone"), "dir d gone");
    }
}
