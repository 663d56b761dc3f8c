//! The `delay` filter: sleep before requests, to simulate a slow server,
//! as nbdkit-delay-filter. Values are seconds (`2`, `1.5`, `1s`) or
//! `NNms` / `NNus`. Parameters: `delay-read=` (alias `rdelay=`),
//! `delay-write=`, `delay-zero=`, `delay-trim=`, `delay-extents=`,
//! `delay-cache=`, `delay-flush=` (an extension), `wdelay=` (write, zero
//! and trim), `delay-fast-zero=true|false`, `delay-open=`, `delay-close=`.
//! Example: `nbdscript memory 1G --filter=delay delay-read=100ms delay-write=100ms`.
//! Must not import tokio or rhai; it blocks, so `is_blocking()` is true.

use super::value;
use super::FilterDef;
use crate::backend::{flags, Backend, BackendError, Errno, Extents, Filter, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;
use std::time::Duration;

pub const DEF: FilterDef = FilterDef {
    name: "delay",
    params: &[
        ("rdelay", "delay reads, e.g. 100ms or 1 (seconds)"),
        ("delay-read", "delay reads"),
        ("wdelay", "delay writes, zeroes and trims"),
        ("delay-write", "delay writes"),
        ("delay-zero", "delay zeroes"),
        ("delay-trim", "delay trims"),
        ("delay-extents", "delay block status"),
        ("delay-cache", "delay cache requests"),
        ("delay-flush", "delay flushes"),
        (
            "delay-fast-zero",
            "false: fail fast zero requests at once (default true)",
        ),
        ("delay-open", "delay opening a connection"),
        ("delay-close", "delay closing a connection"),
    ],
    description: "delay requests",
    make,
};

#[derive(Debug, Default, Clone)]
struct Delays {
    read: Duration,
    write: Duration,
    zero: Duration,
    trim: Duration,
    extents: Duration,
    cache: Duration,
    flush: Duration,
    open: Duration,
    close: Duration,
    fast_zero: bool,
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let mut d = Delays {
        fast_zero: true,
        ..Default::default()
    };
    for (k, v) in &p.items {
        let dur = || value::parse_duration(&format!("delay: {k}"), v);
        match k.as_str() {
            "rdelay" | "delay-read" => d.read = dur()?,
            "delay-write" => d.write = dur()?,
            "delay-zero" => d.zero = dur()?,
            "delay-trim" => d.trim = dur()?,
            "wdelay" => {
                d.write = dur()?;
                d.zero = d.write;
                d.trim = d.write;
            }
            "delay-extents" => d.extents = dur()?,
            "delay-cache" => d.cache = dur()?,
            "delay-flush" => d.flush = dur()?,
            "delay-open" => d.open = dur()?,
            "delay-close" => d.close = dur()?,
            "delay-fast-zero" => {
                d.fast_zero = value::boolean(p, "delay-fast-zero", "delay")?.unwrap_or(true)
            }
            _ => {}
        }
    }
    Ok(Arc::new(DelayFilter { d: Arc::new(d) }))
}

pub struct DelayFilter {
    d: Arc<Delays>,
}

/// Sleep before a request; cut short (ESHUTDOWN) when the server shuts
/// down or the client hangs up, so neither SIGINT nor a dead client
/// waits out a long delay.
fn sleep(d: Duration) -> Result<()> {
    if d.is_zero() || crate::backend::shutdown::sleep(d) {
        return Ok(());
    }
    Err(BackendError::new(
        Errno::Shutdown,
        "delay: interrupted: the server is shutting down or the client hung up",
    ))
}

impl Filter for DelayFilter {
    fn name(&self) -> String {
        "delay".into()
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        sleep(self.d.open)?;
        Ok(Arc::new(DelayHandle {
            next,
            d: self.d.clone(),
        }))
    }
}

struct DelayHandle {
    next: Arc<dyn Backend>,
    d: Arc<Delays>,
}

impl Backend for DelayHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn waits(&self) -> bool {
        true
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: u32) -> Result<()> {
        sleep(self.d.read)?;
        self.next.pread(buf, offset, flags)
    }
    fn pread_owned(&self, count: u32, offset: u64, flags: u32) -> Result<Vec<u8>> {
        sleep(self.d.read)?;
        self.next.pread_owned(count, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        sleep(self.d.write)?;
        self.next.pwrite(buf, offset, flags)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, flags: u32) -> Result<()> {
        sleep(self.d.write)?;
        self.next.pwrite_owned(buf, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        if f & flags::FAST_ZERO != 0 && !self.d.fast_zero && !self.d.zero.is_zero() {
            return Err(BackendError::new(
                Errno::NotSup,
                "delay: fast zero refused (delay-fast-zero=false)",
            ));
        }
        sleep(self.d.zero)?;
        self.next.zero(count, offset, f)
    }
    fn trim(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        sleep(self.d.trim)?;
        self.next.trim(count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: u32) -> Result<Extents> {
        sleep(self.d.extents)?;
        self.next.extents(count, offset, flags)
    }
    fn cache(&self, count: u64, offset: u64, flags: u32) -> Result<()> {
        sleep(self.d.cache)?;
        self.next.cache(count, offset, flags)
    }
    fn flush(&self, flags: u32) -> Result<()> {
        sleep(self.d.flush)?;
        self.next.flush(flags)
    }
    fn close(&self) {
        let _ = sleep(self.d.close);
        self.next.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};
    use std::time::Instant;

    #[test]
    fn delays() {
        let f = make(&params(&[("delay-read", "30ms"), ("wdelay", "20ms")])).unwrap();
        let h = f.open(disk(4096), false).unwrap();
        assert!(h.is_blocking());
        let t = Instant::now();
        let mut b = [0u8; 4];
        h.pread(&mut b, 0, 0).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(30));
        let t = Instant::now();
        h.zero(4, 0, 0).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        let t = Instant::now();
        h.flush(0).unwrap();
        assert!(t.elapsed() < Duration::from_millis(20));
        let f = make(&params(&[
            ("delay-zero", "1s"),
            ("delay-fast-zero", "false"),
        ]))
        .unwrap();
        let h = f.open(disk(4096), false).unwrap();
        let t = Instant::now();
        assert_eq!(
            h.zero(4, 0, flags::FAST_ZERO).unwrap_err().errno,
            Errno::NotSup
        );
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(make(&params(&[("rdelay", "soon")])).is_err());
    }
}
