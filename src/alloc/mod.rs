//! Storage allocators: the `Allocator` contract (read, write, fill, zero,
//! blit, extents) and its implementations `sparse`, `malloc` and `zstd`,
//! chosen with nbdkit's `allocator=TYPE[,KEY=VALUE...]` syntax.
//! Must not import tokio, rhai, or anything else in this crate.

mod malloc;
mod sparse;
mod table;
#[cfg(test)]
mod tests;
mod zstd;

pub use malloc::Malloc;
pub use sparse::Sparse;
pub use table::{is_zero, PAGE};
pub use zstd::Zstd;

use std::fmt;
use std::sync::Arc;

/// Extent type bits as the allocators report them (same values as
/// `base:allocation`): a hole reads as zero and holds no memory.
pub const HOLE: u32 = 1;
pub const ZERO: u32 = 2;

/// Largest size any allocator addresses.
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// An allocator failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// Memory could not be had (mlock limit, allocation failure).
    NoMem(String),
    /// An offset or length beyond what the allocator addresses.
    Range(String),
    /// A bad `allocator=` string.
    Config(String),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NoMem(m) | AllocError::Range(m) | AllocError::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AllocError {}

pub type Result<T> = std::result::Result<T, AllocError>;

/// One extent reported by an allocator: `typ` is 0 (data), `ZERO`, or
/// `HOLE | ZERO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocExtent {
    pub offset: u64,
    pub length: u64,
    pub typ: u32,
}

impl AllocExtent {
    /// Append `[from, to)` of type `typ` to `out`, merged into the last
    /// extent when that one has the same type and ends at `from`; an empty
    /// range adds nothing. Allocators build their extent lists with it.
    pub fn push_merged(out: &mut Vec<AllocExtent>, from: u64, to: u64, typ: u32) {
        if to <= from {
            return;
        }
        match out.last_mut() {
            Some(l) if l.typ == typ && l.offset + l.length == from => l.length += to - from,
            _ => out.push(AllocExtent {
                offset: from,
                length: to - from,
                typ,
            }),
        }
    }
}

/// RAM storage addressed by byte offset; unwritten bytes read as zero.
/// Every method is safe to call from many threads at once.
pub trait Allocator: Send + Sync + 'static {
    /// `sparse`, `malloc` or `zstd`.
    fn name(&self) -> &'static str;
    /// The disk will be about this big (malloc grows to it).
    fn set_size_hint(&self, _size: u64) -> Result<()> {
        Ok(())
    }
    /// Fill `buf` from `offset`.
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Store `buf` at `offset`.
    fn write(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Set `count` bytes at `offset` to `byte`.
    fn fill(&self, byte: u8, count: u64, offset: u64) -> Result<()>;
    /// Set `count` bytes at `offset` to zero, freeing whole pages.
    fn zero(&self, count: u64, offset: u64) -> Result<()>;
    /// Copy `count` bytes from `src` at `src_offset` to `dst_offset` here.
    fn blit(
        &self,
        src: &dyn Allocator,
        count: u64,
        src_offset: u64,
        dst_offset: u64,
    ) -> Result<()> {
        let mut buf = vec![0u8; count.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(buf.len() as u64) as usize;
            src.read(&mut buf[..n], src_offset + done)?;
            self.write(&buf[..n], dst_offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
    /// Describe `[offset, offset+count)` as ascending contiguous extents.
    /// Never claims HOLE or ZERO where a non-zero byte is stored.
    fn extents(&self, count: u64, offset: u64) -> Result<Vec<AllocExtent>>;
    /// True when calls may take long (compression): the server should run
    /// them on its worker pool rather than inline.
    fn is_blocking(&self) -> bool {
        false
    }
    /// Preferred request size (nbdkit: 32768 for sparse and zstd, 512 for malloc).
    fn preferred_block(&self) -> u32 {
        32768
    }
    /// A one-line summary of memory use (bytes stored, compression ratio).
    fn stats(&self) -> String {
        String::new()
    }
    /// Finish buffered work now (zstd: compress its write-back cache).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Bytes held and the memory holding them, live.
    fn usage(&self) -> AllocUsage {
        AllocUsage {
            stored: 0,
            used: 0,
            compressed: false,
        }
    }
}

/// What an allocator holds and what that costs, at this moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocUsage {
    /// Bytes of the disk held in memory (whole pages or blocks written).
    pub stored: u64,
    /// Bytes of memory holding them.
    pub used: u64,
    /// True when the allocator compresses (`used` is not simply `stored`).
    pub compressed: bool,
}

impl AllocUsage {
    /// `stored / used`; 1 when nothing is stored.
    pub fn ratio(&self) -> f64 {
        if self.used == 0 {
            1.0
        } else {
            self.stored as f64 / self.used as f64
        }
    }
}

/// `--dump-plugin` lines of a plugin serving `a`: its name, its stats line
/// and, for a compressing allocator, the live compression ratio.
pub fn dump_lines(a: &dyn Allocator) -> Vec<(String, String)> {
    let mut v = vec![
        ("allocator".to_string(), a.name().to_string()),
        ("allocator_stats".to_string(), a.stats()),
    ];
    let u = a.usage();
    if u.compressed {
        v.push(("compression_ratio".into(), format!("{:.3}", u.ratio())));
    }
    v
}

/// A parsed `allocator=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocSpec {
    Sparse,
    Malloc { mlock: bool },
    Zstd,
}

impl AllocSpec {
    /// Parse `sparse`, `malloc`, `malloc,mlock=true`, `zstd`.
    pub fn parse(s: &str) -> Result<AllocSpec> {
        let mut parts = s.split(',');
        let kind = parts.next().unwrap_or("").trim();
        let mut mlock = false;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, "true"));
            match (kind, k.trim()) {
                ("malloc", "mlock") => {
                    mlock = match v.trim().to_ascii_lowercase().as_str() {
                        "1" | "true" | "on" | "yes" => true,
                        "0" | "false" | "off" | "no" => false,
                        _ => {
                            return Err(AllocError::Config(format!(
                                "allocator={s}: mlock={v} is not a boolean"
                            )))
                        }
                    }
                }
                _ => {
                    return Err(AllocError::Config(format!(
                        "allocator={s}: unknown allocator parameter {k:?} for {kind}"
                    )))
                }
            }
        }
        match kind {
            "sparse" => Ok(AllocSpec::Sparse),
            "malloc" => Ok(AllocSpec::Malloc { mlock }),
            "zstd" => Ok(AllocSpec::Zstd),
            _ => Err(AllocError::Config(format!(
                "allocator={s}: unknown allocator {kind:?}; use sparse, malloc[,mlock=true] or zstd"
            ))),
        }
    }

    /// Make an allocator of this kind for a disk of about `size` bytes.
    pub fn create(&self, size: u64) -> Result<Arc<dyn Allocator>> {
        let a: Arc<dyn Allocator> = match self {
            AllocSpec::Sparse => Arc::new(Sparse::with_size(size)),
            AllocSpec::Malloc { mlock } => Arc::new(Malloc::new(size, *mlock)?),
            AllocSpec::Zstd => Arc::new(Zstd::with_size(size)),
        };
        a.set_size_hint(size)?;
        Ok(a)
    }
}
