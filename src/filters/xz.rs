//! The `xz` filter: read-only random access to an .xz image through its
//! block index. Only the block holding a request is decompressed, into a
//! bounded per-connection LRU (`xz-max-block=`, `xz-max-depth=`), as
//! nbdkit-xz-filter. The compressed bytes come from `next.pread`, so it
//! works over any plugin (file, http, ...). May use `backend`, `params` and
//! liblzma (through `format`); must not import tokio or rhai.

mod format;

use super::FilterDef;
use crate::backend::{Backend, BackendError, CacheMode, Errno, Filter, FuaMode, Result};
use crate::params::{ConfigError, Params};
use format::Block;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

pub const DEF: FilterDef = FilterDef {
    name: "xz",
    params: &[
        (
            "xz-max-block",
            "largest block accepted, and so the memory one cached block may take (default 512M)",
        ),
        (
            "xz-max-depth",
            "how many decompressed blocks each connection keeps (default 8)",
        ),
    ],
    description: "serve the uncompressed contents of an .xz image, read-only",
    make,
};

const DEFAULT_MAX_BLOCK: u64 = 512 << 20;
const DEFAULT_MAX_DEPTH: usize = 8;

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let max_block = p.size("xz-max-block")?.unwrap_or(DEFAULT_MAX_BLOCK);
    if max_block == 0 {
        return Err(ConfigError::new(
            "xz-max-block=0: the largest block must be at least 1 byte, e.g. 64M",
        ));
    }
    let max_depth = match p.get("xz-max-depth") {
        None => DEFAULT_MAX_DEPTH,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(format!(
                    "xz-max-depth={v}: expected a number of blocks from 1 to 4096"
                )))
            }
        },
    };
    Ok(Arc::new(XzFilter {
        max_block,
        max_depth,
    }))
}

/// The process-wide filter: only its parameters.
pub struct XzFilter {
    max_block: u64,
    max_depth: usize,
}

impl XzFilter {
    pub fn new(max_block: u64, max_depth: usize) -> Self {
        XzFilter {
            max_block: max_block.max(1),
            max_depth: max_depth.max(1),
        }
    }
}

impl Filter for XzFilter {
    fn name(&self) -> String {
        "xz".into()
    }

    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        let csize = next.get_size()?;
        let mut read_at = |buf: &mut [u8], off: u64| -> format::FmtResult<()> {
            next.pread(buf, off, 0)
                .map_err(|e| format!("reading the .xz file at {off}: {e}"))
        };
        let blocks = format::read_index(csize, &mut read_at)
            .map_err(|e| BackendError::io(format!("xz: {e}")))?;
        let largest = blocks.iter().map(|b| b.usize).max().unwrap_or(0);
        if largest > self.max_block {
            return Err(BackendError::io(format!(
                "xz: the file's largest block is {largest} bytes, bigger than \
                 xz-max-block={} bytes. Random access needs small blocks: recompress \
                 with `xz --block-size=16MiB`, or raise xz-max-block= (each connection \
                 may keep xz-max-depth={} blocks in memory)",
                self.max_block, self.max_depth
            )));
        }
        // A block's compressed size is at most a little above its data.
        let limit = self.max_block + self.max_block / 8 + (1 << 16);
        if let Some(b) = blocks.iter().find(|b| b.unpadded > limit) {
            return Err(BackendError::io(format!(
                "xz: the block at offset {} is {} bytes compressed, too large for its \
                 {} bytes of data: the file is damaged",
                b.coffset, b.unpadded, b.usize
            )));
        }
        let size = blocks.last().map(|b| b.uoffset + b.usize).unwrap_or(0);
        Ok(Arc::new(XzHandle {
            next,
            blocks,
            size,
            depth: self.max_depth,
            cache: Mutex::new(VecDeque::new()),
            spare: Mutex::new(Vec::new()),
        }))
    }

    fn dump(&self) -> Vec<(String, String)> {
        vec![
            ("xz-max-block".into(), self.max_block.to_string()),
            ("xz-max-depth".into(), self.max_depth.to_string()),
        ]
    }
}

/// Buffers kept for reuse are at most this big (so 16 threads of a
/// connection keep at most 64 MiB of compressed-block buffers) ...
const KEEP_MAX: usize = 4 << 20;
/// ... and at most this many decoded blocks are kept spare per connection.
const SPARE_MAX: usize = 4;

thread_local! {
    /// The compressed bytes of the block being decoded on this thread.
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A cached block: filled once by whichever request decodes it first.
type Slot = Arc<OnceLock<Result<Arc<Vec<u8>>>>>;

/// One connection: the index and its LRU of decompressed blocks.
struct XzHandle {
    next: Arc<dyn Backend>,
    blocks: Vec<Block>,
    size: u64,
    depth: usize,
    /// Most recently used first: `(block index, slot)`.
    cache: Mutex<VecDeque<(usize, Slot)>>,
    /// Buffers of evicted blocks no request still holds, for the next
    /// decode: no fresh pages to fault in and no zero-fill per miss.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl XzHandle {
    /// The index of the block holding uncompressed `offset`.
    fn find(&self, offset: u64) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.uoffset + b.usize <= offset);
        (i < self.blocks.len()).then_some(i)
    }

    /// Block `i`, decompressed: from the LRU or read and decoded now.
    fn block(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        // Find or insert the slot under the lock; decode outside it. Other
        // requests for the same block wait on the slot instead of decoding
        // it again.
        let slot = {
            let mut c = self.cache.lock();
            let slot = match c.iter().position(|(j, _)| *j == i) {
                Some(pos) => c.remove(pos).map(|(_, s)| s).unwrap_or_default(),
                None => Slot::default(),
            };
            c.push_front((i, slot.clone()));
            let keep = self.depth.min(c.len());
            let evicted: Vec<Slot> = c.drain(keep..).map(|(_, s)| s).collect();
            drop(c);
            self.recycle(evicted);
            slot
        };
        let r = slot.get_or_init(|| self.decode(i)).clone();
        if r.is_err() {
            // Forget a failure so a later request tries again.
            let mut c = self.cache.lock();
            c.retain(|(_, s)| !Arc::ptr_eq(s, &slot));
        }
        r
    }

    /// Keep the buffers of evicted blocks that no request holds any more.
    fn recycle(&self, evicted: Vec<Slot>) {
        for s in evicted {
            let Ok(lock) = Arc::try_unwrap(s) else {
                continue;
            };
            if let Some(Ok(data)) = lock.into_inner() {
                if let Ok(v) = Arc::try_unwrap(data) {
                    let mut sp = self.spare.lock();
                    if sp.len() < SPARE_MAX && v.capacity() <= KEEP_MAX {
                        sp.push(v);
                    }
                }
            }
        }
    }

    fn decode(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let b = &self.blocks[i];
        let len = usize::try_from(b.total())
            .map_err(|_| BackendError::io("xz: block too large for this machine"))?;
        let out = self.spare.lock().pop().unwrap_or_default();
        let data = RAW.with(|r| {
            let mut raw = r.borrow_mut();
            // Only growth is zero-filled; the buffer is kept per thread.
            raw.resize(len, 0);
            self.next.pread(&mut raw[..len], b.coffset, 0)?;
            let data = format::decode_block(b, &raw[..len], out)
                .map_err(|e| BackendError::io(format!("xz: {e}")));
            if raw.capacity() > KEEP_MAX {
                *raw = Vec::new(); // do not keep a big block's buffer
            }
            data
        })?;
        Ok(Arc::new(data))
    }
}

impl Backend for XzHandle {
    fn next(&self) -> Option<&dyn Backend> {
        Some(self.next.as_ref())
    }
    fn is_blocking(&self) -> bool {
        true
    }
    /// Decompressing a block is long: add connection threads so requests
    /// overlap.
    fn waits(&self) -> bool {
        true
    }
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        Ok(FuaMode::None)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Emulate)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let i = self.find(off).ok_or_else(|| {
                BackendError::new(Errno::Inval, format!("xz: read at {off} beyond the end"))
            })?;
            let data = self.block(i)?;
            let start = (off - self.blocks[i].uoffset) as usize;
            let n = (data.len() - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[start..start + n]);
            done += n;
        }
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _flags: u32) -> Result<()> {
        Err(BackendError::new(
            Errno::Perm,
            "xz: the xz filter is read-only",
        ))
    }
    fn trim(&self, _c: u64, _o: u64, _f: u32) -> Result<()> {
        Err(BackendError::new(
            Errno::Perm,
            "xz: the xz filter is read-only",
        ))
    }
    fn zero(&self, _c: u64, _o: u64, _f: u32) -> Result<()> {
        Err(BackendError::new(
            Errno::Perm,
            "xz: the xz filter is read-only",
        ))
    }
    fn cache(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        let end = offset.saturating_add(count).min(self.size);
        let mut off = offset;
        while off < end {
            let Some(i) = self.find(off) else { break };
            self.block(i)?;
            off = self.blocks[i].uoffset + self.blocks[i].usize;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
