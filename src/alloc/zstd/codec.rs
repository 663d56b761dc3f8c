//! Compression for the `zstd` allocator: a per-thread context at the one
//! level pages are stored at, a cheap test of whether a page is worth
//! compressing, the two compressed
//! forms of a page (one zstd frame, or 8 independent 4 KiB sub-frames a
//! small read decompresses alone; either holds its data without the
//! trailing zeros), and each thread's page buffer, which
//! remembers the last page it decompressed (a hot-page cache of one page per
//! thread: sequential small reads decompress a page once).
//! Must not import anything outside `alloc`.

use super::super::table::PAGE;
use super::super::{AllocError, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use zstd::bulk::{Compressor, Decompressor};

/// Level pages are stored at: one above nbdkit's ZSTD_CLEVEL_DEFAULT (3),
/// about 2% smaller for a fifth more time on 32 KiB pages (measured on
/// system files), which pays for this process's larger binary.
pub const LEVEL: i32 = 4;
/// Sub-frame size of a split page.
pub const SUB: usize = 4096;
const SUBS: usize = PAGE / SUB;
/// A split page starts with the end offset of each sub-frame (u16 LE).
const INDEX: usize = SUBS * 2;

pub type Raw = Box<[u8; PAGE]>;

pub fn new_raw() -> Raw {
    match vec![0u8; PAGE].into_boxed_slice().try_into() {
        Ok(p) => p,
        Err(_) => Box::new([0u8; PAGE]),
    }
}

/// A thread's page-sized buffer and the generation of the compressed page
/// it holds decompressed (0: none).
struct PageBuf {
    page: Option<Raw>,
    gen: u64,
}

thread_local! {
    static CCTX: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    /// Compression output; copied into an exact-size box so the heap is
    /// not left with the unused tail of a worst-case-sized buffer.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BUF: RefCell<PageBuf> = const { RefCell::new(PageBuf { page: None, gen: 0 }) };
}

/// Every compressed page gets a generation from this counter, unique in the
/// process, so a thread's decompressed copy can never be mistaken for
/// another page's (or the same page's older) contents.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

pub fn next_gen() -> u64 {
    NEXT_GEN.fetch_add(1, Relaxed)
}

fn zerr(what: &str, e: std::io::Error) -> AllocError {
    AllocError::NoMem(format!("zstd: {what}: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> AllocError {
    AllocError::Config(format!("zstd: corrupt page: {what}"))
}

/// Compress `src` at LEVEL with this thread's context and hand the
/// output to `f`.
fn compress_with<T>(src: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<T> {
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(Compressor::new(LEVEL).map_err(|e| zerr("context", e))?);
        }
        let cc = c
            .as_mut()
            .ok_or_else(|| AllocError::NoMem("zstd: no context".into()))?;
        OUT.with(|o| {
            let mut out = o.borrow_mut();
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(PAGE));
            cc.compress_to_buffer(src, &mut *out)
                .map_err(|e| zerr("compress", e))?;
            Ok(f(&out))
        })
    })
}

/// `new` in the memory of `old`, resized with `realloc`: glibc keeps a
/// chunk in the arena it came from, so a page re-packed by the compactor's
/// thread does not move into that thread's arena while its old bytes are
/// freed in another (which would hold both copies until a trim).
pub fn refill(old: Box<[u8]>, new: &[u8]) -> Box<[u8]> {
    let mut v = Vec::from(old);
    v.clear();
    v.reserve_exact(new.len());
    v.extend_from_slice(new);
    v.into_boxed_slice()
}

/// Length of `buf` without its trailing zero bytes.
pub fn data_len(buf: &[u8]) -> usize {
    let mut end = buf.len();
    while end >= 8 {
        let w = u64::from_ne_bytes(buf[end - 8..end].try_into().unwrap_or([1; 8]));
        if w != 0 {
            break;
        }
        end -= 8;
    }
    while end > 0 && buf[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// `src` as one zstd frame at LEVEL, without its trailing zeros (the frame
/// says how many bytes it holds; `decompress` zero-fills the rest).
pub fn compress(src: &[u8]) -> Result<Box<[u8]>> {
    compress_with(&src[..data_len(src)], |c| Box::from(c))
}

/// Bytes of a 32 KiB page compressing must promise to save before it is
/// worth a zstd call while the disk is being written (pages that promise
/// less are kept as they are until the idle pass).
pub const MIN_GAIN: usize = PAGE / 8;
/// Size of the window sampled in each 4 KiB block (512 bytes: enough to
/// tell random (estimated 7.9 to 8 bits a byte) from what fio writes (7.5)
/// and from anything under 7, at half the counting of 1 KiB).
const WIN: usize = 512;

/// `c * log2(c)` for every count a window can hold.
fn clogc() -> &'static [f32; WIN + 1] {
    static T: std::sync::OnceLock<[f32; WIN + 1]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        std::array::from_fn(|c| {
            if c < 2 {
                0.0
            } else {
                c as f32 * (c as f32).log2()
            }
        })
    })
}

/// Whether a page is worth a zstd call now: an estimate of its compressed
/// size from the byte entropy of a 512-byte window of each 4 KiB block (plus
/// the small-sample bias, so random bytes estimate 8 bits) must be at least
/// MIN_GAIN below PAGE. Only counting, no compression: random data and
/// data barely shrinking (random with a little structure, as fio writes)
/// costs a few microseconds per page; text, code, zeros and anything with
/// a skewed byte histogram is compressed as it is written. Order-0 entropy
/// ignores repeats, so the estimate errs towards compressing nothing that
/// only long matches would shrink; the idle pass tries those pages.
/// Blocks in `known` are taken to gain nothing, without sampling (a random
/// write into a page kept as it is samples only the block it changed).
pub fn worth_compressing(page: &[u8; PAGE], known: u8) -> bool {
    // Miller-Madow bias of 256 symbols in WIN samples, in bits per byte.
    const BIAS: f32 = 255.0 / (2.0 * WIN as f32 * std::f32::consts::LN_2);
    let t = clogc();
    let n_log_n = t[WIN];
    let mut bits = 0.0f32;
    for w in 0..SUBS {
        if known & (1 << w) != 0 {
            bits += 8.0;
            continue;
        }
        let start = w * SUB + (w * 384) % (SUB - WIN);
        let mut h = [0u16; 256];
        for &b in &page[start..start + WIN] {
            h[b as usize] += 1;
        }
        let sum: f32 = h.iter().map(|&c| t[c as usize]).sum();
        let per_byte = (n_log_n - sum) / WIN as f32;
        bits += if per_byte < 0.01 {
            0.0 // one byte value: zstd makes it a few bytes
        } else {
            (per_byte + BIAS).min(8.0)
        };
    }
    let estimate = bits / 8.0 * SUB as f32;
    estimate + MIN_GAIN as f32 <= PAGE as f32
}

/// `page` as 8 independent sub-frames: an all-zero sub-block takes no
/// bytes, one zstd cannot shrink is kept as it is, and a frame holds its
/// sub-block without the trailing zeros (as `compress`: reading it
/// decompresses the data and zero-fills the rest, instead of having zstd
/// expand a run of zeros a few bytes at a time).
pub fn split(page: &[u8; PAGE]) -> Result<Box<[u8]>> {
    let mut v = Vec::with_capacity(PAGE / 2);
    v.resize(INDEX, 0);
    for (i, sub) in page.chunks(SUB).enumerate() {
        let n = data_len(sub);
        if n > 0 {
            compress_with(&sub[..n], |c| {
                if c.len() < SUB {
                    v.extend_from_slice(c)
                } else {
                    v.extend_from_slice(sub)
                }
            })?;
        }
        let end = u16::try_from(v.len() - INDEX).unwrap_or(u16::MAX);
        v[2 * i..2 * i + 2].copy_from_slice(&end.to_le_bytes());
    }
    Ok(v.into_boxed_slice())
}

/// The bytes of sub-frame `i` of a split page.
pub fn sub_range(data: &[u8], i: usize) -> Result<&[u8]> {
    let end = |k: usize| -> usize {
        data.get(2 * k..2 * k + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let a = if i == 0 { 0 } else { end(i - 1) };
    let b = end(i);
    data.get(INDEX + a..INDEX + b)
        .ok_or_else(|| corrupt(format_args!("sub-frame {i} out of bounds")))
}

/// Decompress sub-frame `i` of a split page into `dst` (SUB bytes).
fn read_sub(data: &[u8], i: usize, dst: &mut [u8]) -> Result<()> {
    let f = sub_range(data, i)?;
    match f.len() {
        0 => dst.fill(0),
        SUB => dst.copy_from_slice(f),
        _ => decompress(f, dst)?,
    }
    Ok(())
}

/// Ask the CPU to start loading the cache line holding `data[at]` (no
/// effect past the end, nor off x86_64).
#[inline(always)]
fn prefetch(data: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = data.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint: it never faults and changes no
        // state the program can see; the address is inside `data`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((b as *const u8).cast()) };
    }
}

/// Bytes `[inpg, inpg + out.len())` of a split page: only the sub-frames
/// the range touches are decompressed, whole ones straight into `out`.
/// The first sub-frame's bytes are fetched from memory while its index
/// entry is: their place guessed as if sub-frames were all the same size
/// (exact when they are, as in a page of one kind of data), so a random
/// small read waits for one cache miss there instead of two in a row.
pub fn read_split(data: &[u8], inpg: usize, out: &mut [u8]) -> Result<()> {
    let first = inpg / SUB;
    let guess = INDEX + data.len().saturating_sub(INDEX) * first / SUBS;
    for k in 0..4 {
        prefetch(data, guess + 64 * k);
    }
    let mut done = 0;
    while done < out.len() {
        let pos = inpg + done;
        let (i, off) = (pos / SUB, pos % SUB);
        let n = (SUB - off).min(out.len() - done);
        if n == SUB {
            read_sub(data, i, &mut out[done..done + SUB])?;
        } else {
            let mut t = [0u8; SUB];
            read_sub(data, i, &mut t)?;
            out[done..done + n].copy_from_slice(&t[off..off + n]);
        }
        done += n;
    }
    Ok(())
}

/// Decompress one frame into `dst`: the frame's bytes, then zeros up to
/// `dst.len()` (frames hold their data without its trailing zeros).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<()> {
    DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(Decompressor::new().map_err(|e| zerr("context", e))?);
        }
        let dd = d
            .as_mut()
            .ok_or_else(|| AllocError::NoMem("zstd: no context".into()))?;
        match dd.decompress_to_buffer(src, dst) {
            Ok(n) if n <= dst.len() => {
                dst[n..].fill(0);
                Ok(())
            }
            Ok(n) => Err(corrupt(format_args!("{n} bytes instead of {}", dst.len()))),
            Err(e) => Err(corrupt(e)),
        }
    })
}

/// A page's bytes from its compressed form: `split` or one frame.
pub fn unpack(data: &[u8], split: bool, dst: &mut [u8; PAGE]) -> Result<()> {
    if split {
        read_split(data, 0, &mut dst[..])
    } else {
        decompress(data, &mut dst[..])
    }
}

/// Run `f` on the decompressed page of generation `gen`, decompressing it
/// into this thread's buffer unless that still holds it.
pub fn with_page<T>(gen: u64, data: &[u8], f: impl FnOnce(&[u8; PAGE]) -> T) -> Result<T> {
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        let b = &mut *b;
        let page = b.page.get_or_insert_with(new_raw);
        if b.gen != gen || gen == 0 {
            b.gen = 0;
            decompress(data, &mut page[..])?;
            b.gen = gen;
        }
        Ok(f(page))
    })
}

/// Run `f` with this thread's page buffer as scratch space (forgetting the
/// page it held).
pub fn with_scratch<T>(f: impl FnOnce(&mut [u8; PAGE]) -> T) -> T {
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.gen = 0;
        f(b.page.get_or_insert_with(new_raw))
    })
}
