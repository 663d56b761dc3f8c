//! The `noparallel` filter: less parallelism than the plugin allows, as
//! nbdkit-noparallel-filter. `serialize=requests` (default: one request
//! at a time per connection), `all-requests` (one at a time in the whole
//! process), `connections` (one client at a time: a second client waits
//! in its handshake until the first leaves; multi-conn is not
//! advertised).
//! Example: `nbdscript --filter=noparallel file disk.img serialize=connections`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{shutdown, Backend, Extents, Filter, Result, ThreadModel};
use crate::params::{ConfigError, Params};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::Arc;
use std::time::Duration;

pub const DEF: FilterDef = FilterDef {
    name: "noparallel",
    params: &[(
        "serialize",
        "requests (default: one at a time per connection), all-requests or connections",
    )],
    description: "serialize requests or connections",
    make,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serialize {
    Requests,
    AllRequests,
    Connections,
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let mode = match p.get("serialize") {
        None | Some("requests") | Some("request") => Serialize::Requests,
        Some("all-requests") | Some("all_requests") => Serialize::AllRequests,
        Some("connections") | Some("connection") => Serialize::Connections,
        Some(m) => {
            return Err(ConfigError::new(format!(
                "noparallel: unknown serialize mode '{m}' (expected requests, all-requests or connections)"
            )))
        }
    };
    Ok(Arc::new(NoparallelFilter {
        mode,
        shared: Arc::new(Shared::default()),
    }))
}

/// What every connection of one filter shares.
#[derive(Default)]
struct Shared {
    /// Held around each call in `all-requests` mode.
    requests: Mutex<()>,
    /// A connection is open (`connections` mode).
    busy: Mutex<bool>,
    freed: Condvar,
}

pub struct NoparallelFilter {
    mode: Serialize,
    shared: Arc<Shared>,
}

impl Filter for NoparallelFilter {
    fn name(&self) -> String {
        "noparallel".into()
    }
    fn dump(&self) -> Vec<(String, String)> {
        let m = match self.mode {
            Serialize::Requests => "serialize_requests",
            Serialize::AllRequests => "serialize_all_requests",
            Serialize::Connections => "serialize_connections",
        };
        vec![("thread_model".into(), m.into())]
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        if self.mode == Serialize::Connections {
            let mut busy = self.shared.busy.lock();
            while *busy {
                if shutdown::begun() {
                    return Err(crate::backend::BackendError::new(
                        crate::backend::Errno::Shutdown,
                        "noparallel: server is shutting down",
                    ));
                }
                self.shared
                    .freed
                    .wait_for(&mut busy, Duration::from_millis(200));
            }
            *busy = true;
        }
        Ok(Arc::new(NoparallelHandle {
            next,
            mode: self.mode,
            shared: self.shared.clone(),
        }))
    }
}

struct NoparallelHandle {
    next: Arc<dyn Backend>,
    mode: Serialize,
    shared: Arc<Shared>,
}

impl NoparallelHandle {
    fn guard(&self) -> Option<MutexGuard<'_, ()>> {
        (self.mode != Serialize::Requests).then(|| self.shared.requests.lock())
    }
}

impl Backend for NoparallelHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn sparse_reads(&self) -> bool {
        self.next.sparse_reads() // reads pass unchanged
    }
    fn thread_model(&self) -> ThreadModel {
        let mine = match self.mode {
            Serialize::Requests => ThreadModel::SerializeRequests,
            _ => ThreadModel::SerializeAllRequests,
        };
        mine.min(self.next.thread_model())
    }
    fn can_multi_conn(&self) -> Result<bool> {
        if self.mode == Serialize::Connections {
            Ok(false)
        } else {
            self.next.can_multi_conn()
        }
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.pread(buf, offset, flags)
    }
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        let _g = self.guard();
        self.next.pread_owned(count, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.pwrite(buf, offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.pwrite_owned(buf, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.flush(flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.trim(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.zero(count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        let _g = self.guard();
        self.next.extents(count, offset, flags)
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        let _g = self.guard();
        self.next.cache(count, offset, flags)
    }
    fn close(&self) {
        self.next.close();
        if self.mode == Serialize::Connections {
            *self.shared.busy.lock() = false;
            self.shared.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn connections_wait_for_the_one_open() {
        let f = make(&params(&[("serialize", "connections")])).unwrap();
        let a = f.open(disk(4096), false).unwrap();
        assert!(!a.can_multi_conn().unwrap());
        assert_eq!(a.thread_model(), ThreadModel::SerializeAllRequests);
        let f2 = f.clone();
        let t = std::thread::spawn(move || {
            let b = f2.open(disk(4096), false).unwrap();
            b.close();
            std::time::Instant::now()
        });
        std::thread::sleep(Duration::from_millis(300));
        let closed = std::time::Instant::now();
        a.close();
        let opened = t.join().unwrap();
        assert!(opened >= closed, "the second open did not wait");
        let r = make(&params(&[])).unwrap().open(disk(4096), false).unwrap();
        assert_eq!(r.thread_model(), ThreadModel::SerializeRequests);
        assert!(make(&params(&[("serialize", "x")])).is_err());
    }
}
