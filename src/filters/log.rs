//! The `log` filter: append a line per request (and its reply) to a file,
//! in nbdkit-log-filter's format:
//! `2020-08-06 02:07:23.080907 connection=1 Read id=1 offset=0x0 count=0x200 ...`
//! then `... connection=1 ...Read id=1 return=0` (or `return=-1 error=EIO`).
//! Connect lines give the export name (quoted as nbdkit's `shell_quote`)
//! and `tls=0|1`.
//! Parameters: `logfile=PATH`, `logappend=true|false` (default false:
//! truncate), `logscript=SCRIPT` (run by bash for every line, with `$act`,
//! `$type` ENTER/LEAVE/PRINT, `$connection`, `$id` and the line's
//! `key=value`s as shell variables, as nbdkit); without either the filter
//! is inactive. Only client requests are logged: the flush the server
//! makes of a connection's data at shutdown is not (as nbdkit).
//! Example: `nbdscript memory 1G --filter=log logfile=/tmp/nbd.log`.
//! Must not import tokio or rhai; it writes a file, so `is_blocking()` is true.

use super::value;
use super::FilterDef;
use crate::backend::{extent_type, flags, Backend, CacheMode, Extents, Filter, FuaMode, Result};
use crate::params::{ConfigError, Params};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "log",
    params: &[
        ("logfile", "the file the log is written to"),
        (
            "logappend",
            "true: append to the file instead of truncating it",
        ),
        (
            "logscript",
            "shell script run for every log line ($act, $type, $connection, $id, $offset, ...)",
        ),
    ],
    description: "log every request to a file",
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let append = value::boolean(p, "logappend", "log")?.unwrap_or(false);
    let file = match p.get("logfile") {
        None => None,
        Some(path) => {
            let mut o = OpenOptions::new();
            o.create(true);
            if append {
                o.append(true);
            } else {
                o.write(true).truncate(true);
            }
            Some(Mutex::new(o.open(path).map_err(|e| {
                ConfigError::new(format!("log: logfile={path}: cannot open: {e}"))
            })?))
        }
    };
    let log = Arc::new(Log {
        file,
        script: p.get("logscript").map(str::to_string),
        connections: AtomicU64::new(0),
    });
    log.line(None, "Ready thread_model=3");
    log.script(None, "Ready", Kind::Print, None, "thread_model=3");
    Ok(Arc::new(LogFilter { log }))
}

struct Log {
    file: Option<Mutex<File>>,
    /// `logscript=`: run for every line.
    script: Option<String>,
    connections: AtomicU64,
}

/// A log script's `$type`.
#[derive(Clone, Copy)]
enum Kind {
    Enter,
    Leave,
    Print,
}

/// `YYYY-MM-DD HH:MM:SS.uuuuuu` in local time, as nbdkit writes it.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("{}.{:06}", now.as_secs(), now.subsec_micros());
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
    )
}

impl Log {
    /// Run `logscript=` for one line, as nbdkit: the shell variables
    /// `act`, `connection`, `type`, `id`, then the line's own
    /// `key=value`s (`extents=(...)` is a bash array), then the script.
    /// Its status is ignored; its output goes to stderr, never to a
    /// client's stdout (`-s`).
    fn script(&self, conn: Option<u64>, act: &str, kind: Kind, id: Option<u64>, body: &str) {
        let Some(script) = &self.script else {
            return;
        };
        let mut text = format!("act={act}\n");
        if let Some(c) = conn {
            text.push_str(&format!("connection={c}\n"));
        }
        let t = match kind {
            Kind::Enter => "ENTER",
            Kind::Leave => "LEAVE",
            Kind::Print => "PRINT",
        };
        text.push_str(&format!("type={t}\n"));
        if let Some(i) = id {
            text.push_str(&format!("id={i}\n"));
        }
        text.push_str(body);
        text.push('\n');
        text.push_str(script);
        let shell = if std::path::Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let mut c = std::process::Command::new(shell);
        c.arg("-c").arg(text).stdin(std::process::Stdio::null());
        if let Ok(e) = std::io::stderr().as_fd().try_clone_to_owned() {
            c.stdout(e);
        }
        if let Err(e) = c.status() {
            tracing::warn!("log: logscript: cannot run {shell}: {e}");
        }
    }

    fn line(&self, conn: Option<u64>, text: &str) {
        let Some(f) = &self.file else {
            return;
        };
        let l = match conn {
            Some(c) => format!("{} connection={c} {text}\n", timestamp()),
            None => format!("{} {text}\n", timestamp()),
        };
        // A failed log write must not fail the request.
        let _ = f.lock().write_all(l.as_bytes());
    }
}

pub struct LogFilter {
    log: Arc<Log>,
}

/// A value as nbdkit's `shell_quote` writes it: as is when made only of
/// `[A-Za-z0-9.-_=,:/]` (and not empty), else in double quotes with
/// `$`, `` ` ``, `\` and `"` escaped.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || ".-_=,:/".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '$' | '`' | '\\' | '"') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn b(x: bool) -> u8 {
    x as u8
}

impl Filter for LogFilter {
    fn name(&self) -> String {
        "log".into()
    }
    fn open(&self, next: Arc<dyn Backend>, readonly: bool) -> Result<Arc<dyn Backend>> {
        self.open_export(next, readonly, "", false)
    }
    fn open_export(
        &self,
        next: Arc<dyn Backend>,
        readonly: bool,
        export_name: &str,
        tls: bool,
    ) -> Result<Arc<dyn Backend>> {
        let conn = self.log.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.line(
            None,
            &format!("Preconnect id={conn} readonly={} ...", b(readonly)),
        );
        let ro = format!("readonly={}", b(readonly));
        self.log
            .script(None, "Preconnect", Kind::Enter, Some(conn), &ro);
        self.log
            .line(None, &format!("...Preconnect id={conn} return=0"));
        self.log
            .script(None, "Preconnect", Kind::Leave, Some(conn), "return=0");
        let size = next.get_size()?;
        let bs = next.block_size()?;
        let (mn, pr, mx) = bs.map_or((0, 0, 0), |b| (b.minimum, b.preferred, b.maximum));
        let fua = match next.can_fua()? {
            FuaMode::None => 0,
            FuaMode::Emulate => 1,
            FuaMode::Native => 2,
        };
        let cache = match next.can_cache()? {
            CacheMode::None => 0,
            CacheMode::Emulate => 1,
            CacheMode::Native => 2,
        };
        let zero = if readonly || !next.advertise_zero()? {
            0
        } else if next.can_zero()? {
            2
        } else {
            1
        };
        let fast_zero = zero != 0 && next.can_fast_zero()?;
        let connect = format!(
                "export={} tls={} size={size:#x} minsize={mn:#x} prefsize={pr:#x} maxsize={mx:#x} write={} flush={} rotational={} trim={} zero={} fua={fua} extents={} cache={cache} fast_zero={}",
                shell_quote(export_name),
                b(tls),
                b(!readonly && next.can_write()?),
                b(next.can_flush()?),
                b(next.is_rotational()?),
                b(next.can_trim()?),
                zero,
                b(next.can_extents()?),
                b(fast_zero),
        );
        self.log.line(Some(conn), &format!("Connect {connect}"));
        self.log
            .script(Some(conn), "Connect", Kind::Print, None, &connect);
        Ok(Arc::new(LogHandle {
            next,
            log: self.log.clone(),
            conn,
            ids: AtomicU64::new(0),
        }))
    }
}

struct LogHandle {
    next: Arc<dyn Backend>,
    log: Arc<Log>,
    conn: u64,
    ids: AtomicU64,
}

fn ext_type(t: u32) -> &'static str {
    match t & (extent_type::HOLE | extent_type::ZERO) {
        0 => "\"\"",
        1 => "\"hole\"",
        2 => "\"zero\"",
        _ => "\"hole,zero\"",
    }
}

impl LogHandle {
    /// Log the call, run it, log the result.
    fn logged<T>(
        &self,
        act: &str,
        args: &str,
        run: impl FnOnce() -> Result<T>,
        extra: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        if crate::backend::shutdown::in_server_call() {
            return run();
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let sep = if args.is_empty() { "" } else { " " };
        self.log
            .line(Some(self.conn), &format!("{act} id={id}{sep}{args} ..."));
        self.log
            .script(Some(self.conn), act, Kind::Enter, Some(id), args);
        let r = run();
        let tail = match &r {
            Ok(v) => {
                let x = extra(v);
                format!("{x}{}return=0", if x.is_empty() { "" } else { " " })
            }
            Err(e) => format!("return=-1 error={}", e.errno.name()),
        };
        self.log
            .line(Some(self.conn), &format!("...{act} id={id} {tail}"));
        self.log
            .script(Some(self.conn), act, Kind::Leave, Some(id), &tail);
        r
    }
}

fn none<T>(_: &T) -> String {
    String::new()
}

fn fua(f: u32) -> u8 {
    b(f & flags::FUA != 0)
}

impl Backend for LogHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.next)
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn pread(&self, buf: &mut [u8], offset: u64, f: u32) -> Result<()> {
        let args = format!("offset={offset:#x} count={:#x}", buf.len());
        self.logged("Read", &args, || self.next.pread(buf, offset, f), none)
    }
    fn pread_owned(&self, count: u32, offset: u64, f: u32) -> Result<Vec<u8>> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.logged(
            "Read",
            &args,
            || self.next.pread_owned(count, offset, f),
            none,
        )
    }
    fn pwrite(&self, buf: &[u8], offset: u64, f: u32) -> Result<()> {
        let args = format!("offset={offset:#x} count={:#x} fua={}", buf.len(), fua(f));
        self.logged("Write", &args, || self.next.pwrite(buf, offset, f), none)
    }
    fn pwrite_owned(&self, buf: Vec<u8>, offset: u64, f: u32) -> Result<()> {
        let args = format!("offset={offset:#x} count={:#x} fua={}", buf.len(), fua(f));
        self.logged(
            "Write",
            &args,
            || self.next.pwrite_owned(buf, offset, f),
            none,
        )
    }
    fn flush(&self, f: u32) -> Result<()> {
        self.logged("Flush", "", || self.next.flush(f), none)
    }
    fn trim(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x} fua={}", fua(f));
        self.logged("Trim", &args, || self.next.trim(count, offset, f), none)
    }
    fn zero(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
            b(f & flags::MAY_TRIM != 0),
            fua(f),
            b(f & flags::FAST_ZERO != 0)
        );
        self.logged("Zero", &args, || self.next.zero(count, offset, f), none)
    }
    fn cache(&self, count: u64, offset: u64, f: u32) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.logged("Cache", &args, || self.next.cache(count, offset, f), none)
    }
    fn extents(&self, count: u64, offset: u64, f: u32) -> Result<Extents> {
        let args = format!(
            "offset={offset:#x} count={count:#x} req_one={}",
            b(f & flags::REQ_ONE != 0)
        );
        self.logged(
            "Extents",
            &args,
            || self.next.extents(count, offset, f),
            |e: &Extents| {
                let items: Vec<String> = e
                    .as_slice()
                    .iter()
                    .map(|x| format!("{:#x} {:#x} {}", x.offset, x.length, ext_type(x.typ)))
                    .collect();
                format!("extents=({})", items.join(" "))
            },
        )
    }
    fn close(&self) {
        let n = self.ids.load(Ordering::Relaxed);
        self.log
            .line(Some(self.conn), &format!("Disconnect transactions={n}"));
        let t = format!("transactions={n}");
        self.log
            .script(Some(self.conn), "Disconnect", Kind::Print, None, &t);
        self.next.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::{disk, params};

    #[test]
    fn export_names_are_quoted_as_nbdkit() {
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("ab/c.d-e_f=g,h:i"), "ab/c.d-e_f=g,h:i");
        assert_eq!(shell_quote("a b$"), "\"a b\\$\"");
        assert_eq!(shell_quote("q\"`\\"), "\"q\\\"\\`\\\\\"");
    }

    #[test]
    fn lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let p = path.to_str().unwrap();
        let f = make(&params(&[("logfile", p)])).unwrap();
        let h = f.open(disk(4096), false).unwrap();
        assert!(h.is_blocking());
        let mut buf = [0u8; 512];
        h.pread(&mut buf, 0, 0).unwrap();
        h.pwrite(&buf, 512, flags::FUA).unwrap();
        h.zero(4096, 0, flags::MAY_TRIM).unwrap();
        h.extents(4096, 0, 0).unwrap();
        h.close();
        let full = (crate::plugins::full::DEF.make)(&params(&[("size", "1M")]))
            .unwrap()
            .open(false, "")
            .unwrap();
        let h2 = f.open(full, false).unwrap();
        assert!(h2.pwrite(&buf, 0, 0).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        let pre: Vec<&str> = text.lines().filter(|x| x.contains("Preconnect")).collect();
        assert!(
            pre[0].ends_with(" Preconnect id=1 readonly=0 ..."),
            "{}",
            pre[0]
        );
        assert!(
            pre[1].ends_with(" ...Preconnect id=1 return=0"),
            "{}",
            pre[1]
        );
        let l: Vec<&str> = text.lines().filter(|x| !x.contains("Preconnect")).collect();
        assert!(l[0].ends_with(" Ready thread_model=3"), "{}", l[0]);
        assert!(
            l[1].contains("connection=1 Connect export=\"\" tls=0 size=0x1000 "),
            "{}",
            l[1]
        );
        assert!(
            l[2].ends_with("connection=1 Read id=1 offset=0x0 count=0x200 ..."),
            "{}",
            l[2]
        );
        assert!(
            l[3].ends_with("connection=1 ...Read id=1 return=0"),
            "{}",
            l[3]
        );
        assert!(
            l[4].ends_with("Write id=2 offset=0x200 count=0x200 fua=1 ..."),
            "{}",
            l[4]
        );
        assert!(l[6].ends_with("Zero id=3 offset=0x0 count=0x1000 trim=1 fua=0 fast=0 ..."));
        assert!(
            l[9].contains("...Extents id=4 extents=(0x0 0x1000 "),
            "{}",
            l[9]
        );
        assert!(
            l[10].ends_with("connection=1 Disconnect transactions=4"),
            "{}",
            l[10]
        );
        assert!(l[11].contains("connection=2 Connect"), "{}", l[11]);
        assert!(
            l[13].ends_with("connection=2 ...Write id=1 return=-1 error=ENOSPC"),
            "{}",
            l[13]
        );
        // Timestamp shape.
        assert_eq!(&l[0][4..5], "-");
        assert_eq!(&l[0][19..20], ".");
        // logappend keeps the old lines.
        let f = make(&params(&[("logfile", p), ("logappend", "true")])).unwrap();
        drop(f);
        assert!(std::fs::read_to_string(&path).unwrap().len() > text.len());
    }
}
