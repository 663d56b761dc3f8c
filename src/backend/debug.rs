//! Backend debugging as nbdkit's `-v`: with [`set`] on, the stack wraps
//! every layer so that each call into it is logged at debug level under
//! the target `nbdkit_backend`, as `LAYER: open readonly=0 exportname=""
//! tls=0` (control path: opens and closes) and `LAYER: pread count=512
//! offset=0 flags=0x0` (data path). `-D nbdkit.backend.controlpath=0`
//! and `-D nbdkit.backend.datapath=0` turn either off, as in nbdkit.
//! Must not import tokio or rhai.

use super::{Backend, Extents, Result};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

static CONTROL: AtomicBool = AtomicBool::new(false);
static DATA: AtomicBool = AtomicBool::new(false);

/// The tracing target of these lines.
pub const TARGET: &str = "nbdkit_backend";

/// Log the control path (opens, closes) and the data path (requests).
pub fn set(controlpath: bool, datapath: bool) {
    CONTROL.store(controlpath, Relaxed);
    DATA.store(datapath, Relaxed);
}

/// Control-path lines are on.
pub fn control() -> bool {
    CONTROL.load(Relaxed)
}

fn data() -> bool {
    DATA.load(Relaxed)
}

/// Log opening `layer` (when the control path is logged).
pub fn open(layer: &str, readonly: bool, export_name: &str, tls: bool) {
    if control() {
        tracing::debug!(
            target: TARGET,
            "{layer}: open readonly={} exportname={export_name:?} tls={}",
            readonly as u8,
            tls as u8
        );
    }
}

/// `layer` wrapped so that its calls are logged; `layer` itself when
/// neither path is logged.
pub fn wrap(name: String, layer: Arc<dyn Backend>) -> Arc<dyn Backend> {
    if !control() && !data() {
        return layer;
    }
    Arc::new(Logged { name, inner: layer })
}

struct Logged {
    name: String,
    inner: Arc<dyn Backend>,
}

macro_rules! datapath {
    ($self:ident, $($arg:tt)*) => {
        if data() {
            tracing::debug!(target: TARGET, "{}: {}", $self.name, format_args!($($arg)*));
        }
    };
}

impl Backend for Logged {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn sparse_reads(&self) -> bool {
        self.inner.sparse_reads()
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "pread count={} offset={offset} flags={flags:#x}", buf.len());
        self.inner.pread(buf, offset, flags)
    }
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        datapath!(self, "pread count={count} offset={offset} flags={flags:#x}");
        self.inner.pread_owned(count, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "pwrite count={} offset={offset} flags={flags:#x}", buf.len());
        self.inner.pwrite(buf, offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "pwrite count={} offset={offset} flags={flags:#x}", buf.len());
        self.inner.pwrite_owned(buf, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        datapath!(self, "flush flags={flags:#x}");
        self.inner.flush(flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "trim count={count} offset={offset} flags={flags:#x}");
        self.inner.trim(count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "zero count={count} offset={offset} flags={flags:#x}");
        self.inner.zero(count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        datapath!(self, "extents count={count} offset={offset} flags={flags:#x}");
        self.inner.extents(count, offset, flags)
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        datapath!(self, "cache count={count} offset={offset} flags={flags:#x}");
        self.inner.cache(count, offset, flags)
    }
    fn close(&self) {
        if control() {
            tracing::debug!(target: TARGET, "{}: close", self.name);
        }
        self.inner.close()
    }
}
