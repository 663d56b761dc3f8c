//! The `malloc` allocator: one flat anonymous mapping (`MAP_NORESERVE`, so
//! pages never written cost no RSS), optionally `mlock`ed. Requests lock
//! one of 1024 striped `RwLock`s per 32 KiB chunk, so different connections
//! run in parallel. A bitmap of written 4 KiB blocks lets `extents` report
//! never-written and zeroed blocks as holes, and zeroing whole blocks gives
//! their memory back with `MADV_DONTNEED` (unless locked).
//! Must not import anything outside `alloc`.

use super::table::{chunks, is_zero};
use super::{AllocError, AllocExtent, AllocUsage, Allocator, Result, HOLE, ZERO};
use parking_lot::RwLock;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const STRIPE_SHIFT: u32 = 15;
const STRIPES: usize = 1024;
const BLOCK_SHIFT: u32 = 12;
const BLOCK: u64 = 1 << BLOCK_SHIFT;

#[repr(align(64))]
#[derive(Default)]
struct Stripe(RwLock<()>);

pub struct Malloc {
    base: NonNull<u8>,
    len: u64,
    mlocked: bool,
    /// Whether MADV_DONTNEED may be used on 4 KiB blocks.
    can_discard: bool,
    stripes: Box<[Stripe]>,
    /// Bit per 4 KiB block: set when the block may hold a non-zero byte.
    written: Box<[AtomicU64]>,
}

// The mapping is only touched through raw pointers under the stripe locks.
unsafe impl Send for Malloc {}
unsafe impl Sync for Malloc {}

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

fn memlock_limit() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "unknown".into();
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", r.rlim_cur / 1024)
    }
}

impl Malloc {
    /// Reserve `size` bytes; with `mlock`, lock them into RAM.
    pub fn new(size: u64, mlock: bool) -> Result<Malloc> {
        let len = usize::try_from(size)
            .map_err(|_| AllocError::NoMem(format!("malloc: {size} bytes is too large")))?;
        let base = if len == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(AllocError::NoMem(format!(
                    "malloc: cannot reserve {size} bytes: {}",
                    errno_str()
                )));
            }
            NonNull::new(p as *mut u8)
                .ok_or_else(|| AllocError::NoMem("malloc: mmap returned NULL".into()))?
        };
        // SAFETY: sysconf has no memory effects.
        let pagesize = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let blocks = size.div_ceil(BLOCK);
        let mut m = Malloc {
            base,
            len: size,
            mlocked: false,
            can_discard: pagesize == BLOCK as libc::c_long && !mlock,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            written: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        if mlock && len > 0 {
            // SAFETY: the range is our own mapping.
            if unsafe { libc::mlock(m.base.as_ptr() as *const libc::c_void, len) } != 0 {
                return Err(AllocError::NoMem(format!(
                    "allocator=malloc,mlock=true: cannot lock {size} bytes in RAM: {}; \
                     the locked-memory limit is {} (raise it with `ulimit -l`, \
                     or use allocator=malloc without mlock)",
                    errno_str(),
                    memlock_limit()
                )));
            }
            m.mlocked = true;
        }
        Ok(m)
    }

    /// Whether the region is locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.mlocked
    }

    fn check(&self, count: u64, offset: u64) -> Result<()> {
        match offset.checked_add(count) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(AllocError::Range(format!(
                "malloc: request of {count} bytes at offset {offset} is beyond the {} byte region",
                self.len
            ))),
        }
    }

    fn stripe(&self, chunk: u64) -> &RwLock<()> {
        &self.stripes[(chunk as usize) % STRIPES].0
    }

    fn ptr(&self, offset: u64) -> *mut u8 {
        // SAFETY (callers): offset was checked against len.
        unsafe { self.base.as_ptr().add(offset as usize) }
    }

    fn is_written(&self, block: u64) -> bool {
        self.written[(block / 64) as usize].load(Relaxed) & (1 << (block % 64)) != 0
    }

    fn mark(&self, offset: u64, len: u64) {
        for b in offset >> BLOCK_SHIFT..=(offset + len - 1) >> BLOCK_SHIFT {
            let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
            if self.written[w].load(Relaxed) & bit == 0 {
                self.written[w].fetch_or(bit, Relaxed);
            }
        }
    }

    fn unmark(&self, block: u64) {
        self.written[(block / 64) as usize].fetch_and(!(1 << (block % 64)), Relaxed);
    }

    /// Zero `[offset, offset+len)` inside one stripe chunk (write-locked).
    fn zero_locked(&self, offset: u64, len: u64) {
        let end = offset + len;
        for b in offset >> BLOCK_SHIFT..=(end - 1) >> BLOCK_SHIFT {
            if !self.is_written(b) {
                continue;
            }
            let bs = (b << BLOCK_SHIFT).max(offset);
            let be = ((b + 1) << BLOCK_SHIFT).min(end).min(self.len);
            let whole = bs == b << BLOCK_SHIFT && be == (b + 1) << BLOCK_SHIFT;
            let p = self.ptr(bs);
            // SAFETY: [bs, be) is inside the mapping and write-locked.
            let slice = unsafe { std::slice::from_raw_parts_mut(p, (be - bs) as usize) };
            if whole
                && self.can_discard
                // SAFETY: a page-aligned whole page of our mapping.
                && unsafe { libc::madvise(p as *mut libc::c_void, BLOCK as usize, libc::MADV_DONTNEED) }
                    == 0
            {
                self.unmark(b);
                continue;
            }
            slice.fill(0);
            let bstart = b << BLOCK_SHIFT;
            let blen = BLOCK.min(self.len - bstart) as usize;
            // SAFETY: the block is inside the mapping and write-locked.
            let block = unsafe { std::slice::from_raw_parts(self.ptr(bstart), blen) };
            if whole || is_zero(block) {
                self.unmark(b);
            }
        }
    }
}

impl Drop for Malloc {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping our own mapping, which nothing references any more.
            unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len as usize) };
        }
    }
}

impl Allocator for Malloc {
    fn name(&self) -> &'static str {
        "malloc"
    }

    fn set_size_hint(&self, size: u64) -> Result<()> {
        if size > self.len {
            return Err(AllocError::Range(format!(
                "malloc: cannot grow the {} byte region to {size} bytes",
                self.len
            )));
        }
        Ok(())
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        for c in chunks(offset, buf.len() as u64, STRIPE_SHIFT) {
            let _g = self.stripe(c.page).read();
            let src = self.ptr(offset + c.done as u64);
            // SAFETY: in range (checked), and no writer holds this stripe.
            unsafe { std::ptr::copy_nonoverlapping(src, buf[c.done..].as_mut_ptr(), c.len) };
        }
        Ok(())
    }

    fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        for c in chunks(offset, buf.len() as u64, STRIPE_SHIFT) {
            let off = offset + c.done as u64;
            let data = &buf[c.done..c.done + c.len];
            let _g = self.stripe(c.page).write();
            if is_zero(data) {
                self.zero_locked(off, c.len as u64);
            } else {
                self.mark(off, c.len as u64);
                // SAFETY: in range (checked), and this stripe is write-locked.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(off), c.len) };
            }
        }
        Ok(())
    }

    fn fill(&self, byte: u8, count: u64, offset: u64) -> Result<()> {
        if byte == 0 {
            return self.zero(count, offset);
        }
        self.check(count, offset)?;
        for c in chunks(offset, count, STRIPE_SHIFT) {
            let off = offset + c.done as u64;
            let _g = self.stripe(c.page).write();
            self.mark(off, c.len as u64);
            // SAFETY: in range (checked), and this stripe is write-locked.
            unsafe { std::ptr::write_bytes(self.ptr(off), byte, c.len) };
        }
        Ok(())
    }

    fn zero(&self, count: u64, offset: u64) -> Result<()> {
        self.check(count, offset)?;
        for c in chunks(offset, count, STRIPE_SHIFT) {
            let _g = self.stripe(c.page).write();
            self.zero_locked(offset + c.done as u64, c.len as u64);
        }
        Ok(())
    }

    fn extents(&self, count: u64, offset: u64) -> Result<Vec<AllocExtent>> {
        self.check(count, offset)?;
        let mut out: Vec<AllocExtent> = Vec::new();
        let end = offset + count;
        let mut pos = offset;
        while pos < end {
            let b = pos >> BLOCK_SHIFT;
            let word = self.written[(b / 64) as usize].load(Relaxed);
            // Skip a whole empty word of blocks at once.
            let (typ, next) = if word == 0 {
                (HOLE | ZERO, ((b / 64 + 1) * 64) << BLOCK_SHIFT)
            } else if word & (1 << (b % 64)) != 0 {
                (0, (b + 1) << BLOCK_SHIFT)
            } else {
                (HOLE | ZERO, (b + 1) << BLOCK_SHIFT)
            };
            let next = next.min(end);
            match out.last_mut() {
                Some(l) if l.typ == typ => l.length += next - pos,
                _ => out.push(AllocExtent {
                    offset: pos,
                    length: next - pos,
                    typ,
                }),
            }
            pos = next;
        }
        Ok(out)
    }

    fn preferred_block(&self) -> u32 {
        512
    }

    fn usage(&self) -> AllocUsage {
        let written: u64 = self
            .written
            .iter()
            .map(|w| w.load(Relaxed).count_ones() as u64)
            .sum();
        AllocUsage {
            stored: written * BLOCK,
            used: written * BLOCK,
            compressed: false,
        }
    }

    fn stats(&self) -> String {
        let written: u64 = self
            .written
            .iter()
            .map(|w| w.load(Relaxed).count_ones() as u64)
            .sum();
        format!(
            "malloc: {} byte region{}, {} bytes in written 4 KiB blocks",
            self.len,
            if self.mlocked { " (mlocked)" } else { "" },
            written * BLOCK
        )
    }
}
