//! The public API served in process ([`TestServer`]) and checked with
//! real clients: the adapter's capabilities, extents, handles and
//! filters as a client sees them.

use super::*;
use crate::backend::Stack;
use crate::server::inprocess::TestServer;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, RwLock};

/// 1 MiB; the second half is a hole that reads as zeros.
struct Disk {
    data: RwLock<Vec<u8>>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Plugin for Disk {
    type Handle = usize;
    fn open(&self, _readonly: bool, _export_name: &str) -> Result<usize> {
        Ok(self.opened.fetch_add(1, SeqCst))
    }
    fn close(&self, _h: &usize) {
        self.closed.fetch_add(1, SeqCst);
    }
    fn get_size(&self, _: &usize) -> Result<u64> {
        Ok(1 << 20)
    }
    fn capabilities(&self, _: &usize) -> Result<Capabilities> {
        Ok(Capabilities {
            write: true,
            extents: true,
            description: Some("in-process disk".into()),
            ..Capabilities::default()
        })
    }
    fn pread(&self, _: &usize, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.data.read().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn pwrite(&self, _: &usize, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        if offset >= 1 << 19 {
            return Err(Error::new(Errno::NoSpc, "the second half is read-only"));
        }
        let o = offset as usize;
        self.data.write().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn extents(&self, _: &usize, count: u64, offset: u64, _flags: u32) -> Result<Vec<Extent>> {
        let half = 1 << 19;
        let mut v = Vec::new();
        if offset < half {
            v.push(Extent {
                offset,
                length: half - offset,
                typ: extent_type::DATA,
            });
        }
        let start = offset.max(half);
        v.push(Extent {
            offset: start,
            length: (offset + count).saturating_sub(start).max(1),
            typ: extent_type::HOLE | extent_type::ZERO,
        });
        Ok(v)
    }
}

/// Inverts every byte read and written.
struct Invert;

impl Filter for Invert {
    type Handle = ();
    fn open(&self, _next: &Next, _readonly: bool) -> Result<()> {
        Ok(())
    }
    fn pread(&self, next: &Next, _: &(), buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        next.pread(buf, offset, flags)?;
        buf.iter_mut().for_each(|b| *b = !*b);
        Ok(())
    }
    fn pwrite(&self, next: &Next, _: &(), buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        let inv: Vec<u8> = buf.iter().map(|b| !b).collect();
        next.pwrite(&inv, offset, flags)
    }
}

fn client(prog: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("timeout")
        .env("PATH", "/usr/bin:/bin:/usr/sbin")
        .args(["-k", "5", "60", prog])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn a_plugin_and_a_filter_served_in_process() {
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let disk = Disk {
        data: RwLock::new(vec![0; 1 << 20]),
        opened: opened.clone(),
        closed: closed.clone(),
    };
    let stack = Stack::with_filters(
        Arc::new(adapter::PluginLayer(Arc::new(disk))),
        vec![Arc::new(adapter::FilterLayer(Arc::new(Invert)))],
    );
    let server = TestServer::start(stack);
    let uri = server.uri();

    let (ok, info) = client("nbdinfo", &[&uri]);
    assert!(ok, "{info}");
    for want in [
        "export-size: 1048576 (1M)",
        "description: in-process disk",
        "is_read_only: false",
        "can_trim: false",
        "can_multi_conn: false",
    ] {
        assert!(info.contains(want), "{want:?} not in\n{info}");
    }
    // The filter inverts: zeros below read as 0xff; a write of 0x5a is
    // stored as 0xa5 and reads back as 0x5a.
    let (ok, io) = client(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0xff 0 4096",
            "-c",
            "write -P 0x5a 4096 4096",
            "-c",
            "read -P 0x5a 4096 4096",
            &uri,
        ],
    );
    assert!(ok && !io.contains("failed"), "{io}");
    // The plugin's errno reaches the client.
    let (_, io) = client(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 1 600000 512", &uri],
    );
    assert!(io.contains("No space left on device"), "{io}");
    // Extents pass through the filter: data, then a hole reading as zeros.
    let (ok, map) = client("nbdinfo", &["--map", &uri]);
    assert!(ok, "{map}");
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["0", "524288", "0"], "{map}");
    assert_eq!(rows[1][..3], ["524288", "524288", "3"], "{map}");
    drop(server);
    // One handle per connection (a client may connect more than once),
    // each closed.
    assert!(opened.load(SeqCst) >= 4);
    assert_eq!(closed.load(SeqCst), opened.load(SeqCst));
}
