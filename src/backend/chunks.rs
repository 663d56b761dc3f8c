//! Walking a range in chunks that may hold data: the one walk behind every
//! emulation by smaller requests (zero by `pwrite` at the top of the chain
//! or in the plugin layer, cache by reading). Ranges a layer's extents
//! report as reading zeros are skipped; the request's time budget and
//! shutdown are checked before each chunk (see [`budget`]).
//! Must not import tokio or rhai.

use super::{budget, extent_type, flags, Backend, Result};

/// Largest buffer allocated for emulating zero or cache in one step.
pub const EMULATE_CHUNK: u64 = 1 << 20;

/// The start of a range, by the layer's extents.
enum Run {
    /// This many bytes read as zeros.
    Zero(u64),
    /// This many bytes may hold data.
    Data(u64),
}

/// Call `f(pos, len)` for the chunks (at most [`EMULATE_CHUNK`]) of
/// `[offset, offset+count)` of `layer` that do not read as zeros (by its
/// extents when `extents` is true), checking the request's time budget
/// and shutdown before each. `what` names the work in the error.
pub fn each_data_chunk(
    layer: &dyn Backend,
    extents: bool,
    what: &str,
    count: u64,
    offset: u64,
    mut f: impl FnMut(u64, usize) -> Result<()>,
) -> Result<()> {
    let end = offset + count;
    let mut pos = offset;
    let mut data_until = offset;
    while pos < end {
        budget::check(what, pos - offset, count)?;
        if pos >= data_until {
            match zero_run(layer, extents, end - pos, pos) {
                Run::Zero(n) => {
                    pos += n;
                    continue;
                }
                Run::Data(n) => data_until = pos + n,
            }
        }
        let n = (data_until - pos).min(EMULATE_CHUNK) as usize;
        f(pos, n)?;
        pos += n as u64;
    }
    Ok(())
}

/// Write zeros over `[offset, offset+count)` of `layer` with `pwrite`
/// (skipping what already reads as zeros), the last write with
/// `last_flags` and the others with `flags`. Returns whether anything was
/// written.
pub fn write_zeros(
    layer: &dyn Backend,
    extents: bool,
    what: &str,
    count: u64,
    offset: u64,
    flags: u32,
    last_flags: u32,
) -> Result<bool> {
    let zeros = vec![0u8; count.min(EMULATE_CHUNK) as usize];
    // Each chunk is written once the next is known, so the last one can
    // carry `last_flags` (FUA, as nbdkit puts it on its last write).
    let mut pending: Option<(u64, usize)> = None;
    each_data_chunk(layer, extents, what, count, offset, |pos, n| {
        match pending.replace((pos, n)) {
            Some((p, m)) => layer.pwrite(&zeros[..m], p, flags),
            None => Ok(()),
        }
    })?;
    match pending {
        Some((p, m)) => layer.pwrite(&zeros[..m], p, last_flags).map(|()| true),
        None => Ok(false),
    }
}

/// Does `[offset, offset+count)` start with bytes that read as zeros (by
/// the layer's extents)? Without extents, or if they fail, it is all data.
fn zero_run(layer: &dyn Backend, extents: bool, count: u64, offset: u64) -> Run {
    if !extents {
        return Run::Data(count);
    }
    match layer.extents(count, offset, flags::REQ_ONE) {
        Ok(e) => match e.as_slice().first() {
            Some(x) if x.offset == offset && x.length > 0 => {
                let n = x.length.min(count);
                if x.typ & extent_type::ZERO != 0 {
                    Run::Zero(n)
                } else {
                    Run::Data(n)
                }
            }
            _ => Run::Data(count),
        },
        Err(_) => Run::Data(count),
    }
}
