//! The `sparse-random` plugin: a sparse disk of random data runs, as
//! nbdkit-sparse-random-plugin, byte for byte for the same `seed=`. The
//! disk is cut into 4 KiB blocks; which are data and which are holes is
//! drawn once at start-up by nbdkit's two-state chain (the chance of
//! leaving a data run is 4096/`runlength=`, of leaving a hole is chosen
//! so that about `percent=` of the disk is data), with nbdkit's
//! xoshiro256** generator seeded from `seed=`. A data block is one random
//! non-zero byte repeated (or, with `random-content=true`, random bytes),
//! drawn from `seed` + the block's offset. Extents report the holes.
//! Writes are checked, not stored: a write must match what is read
//! (else EIO), and trim/zero work only on holes, so one instance is both
//! source and target of a copy (`nbdcopy $uri $uri`).
//! Parameters: `size=` (required, the magic key), `seed=`, `percent=`,
//! `runlength=`, `random-content=`.
//! Must not import tokio or rhai.

use super::random::Xoshiro256;
use super::PluginDef;
use crate::backend::{
    extent_type, Backend, BackendError, CacheMode, Extents, FuaMode, Plugin, Result,
};
use crate::params::{parse_size, ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "sparse-random",
    aliases: &[],
    magic_key: Some("size"),
    params: &[
        ("size", "size of the disk, e.g. 10G (required)"),
        (
            "seed",
            "32-bit seed for repeatable data (default: the time)",
        ),
        (
            "percent",
            "percentage of the disk that is data, 0 to 100 (default 10)",
        ),
        (
            "runlength",
            "average length of a data run in bytes, e.g. 1M (default 16M)",
        ),
        (
            "random-content",
            "true: every byte of a data block random (default: one random byte repeated)",
        ),
    ],
    description: "a sparse disk of random data runs; writes are checked",
    callbacks: &["dump_plugin", "pwrite", "flush", "trim", "zero", "extents"],
    make,
};

/// The unit of data and holes, as nbdkit.
const BLOCK: u64 = 4096;

/// Most blocks a drawn map may have (4 TiB; a 128 MiB bitmap, a few
/// seconds to draw). `percent=0` and `percent=100` need no map.
const MAX_MAP_BLOCKS: u64 = 1 << 30;

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("sparse-random", &DEF.keys())?;
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new(
            "sparse-random: the parameter size= is required, e.g. sparse-random size=10G",
        )
    })?;
    let seed = match p.get("seed") {
        Some(v) => v.trim().parse::<u32>().map_err(|_| {
            ConfigError::new(format!(
                "sparse-random: seed={v}: expected an unsigned 32-bit number (0 to 4294967295)"
            ))
        })?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0),
    };
    let percent = match p.get("percent") {
        None => 10.0,
        Some(v) => {
            let t = v.trim();
            let t = t.strip_suffix('%').unwrap_or(t);
            match t.parse::<f64>() {
                Ok(x) if (0.0..=100.0).contains(&x) => x,
                _ => {
                    return Err(ConfigError::new(format!(
                        "sparse-random: percent={v}: expected a number from 0 to 100"
                    )))
                }
            }
        }
    };
    let runlength = match p.get("runlength") {
        None => 16 << 20,
        Some(v) => match parse_size(v) {
            Ok(0) => {
                return Err(ConfigError::new(format!(
                    "sparse-random: runlength={v}: must be greater than 0"
                )))
            }
            Ok(n) => n,
            Err(e) => return Err(ConfigError::new(format!("sparse-random: runlength={v}: {e}"))),
        },
    };
    let random_content = p
        .bool("random-content")
        .map_err(|e| ConfigError::new(format!("sparse-random: {e}")))?
        .unwrap_or(false);
    let map = Map::draw(size, seed, percent, runlength)?;
    Ok(Arc::new(SparseRandom(Arc::new(Disk {
        size,
        seed,
        random_content,
        map,
    }))))
}

/// Which blocks are data.
enum Map {
    AllHoles,
    AllData,
    /// Bit `b % 64` of word `b / 64` is set when block `b` is data.
    Bits { words: Vec<u64>, blocks: u64 },
}

impl Map {
    /// nbdkit's chain: in each block, stay or switch state with the
    /// probability of leaving the current one.
    fn draw(size: u64, seed: u32, percent: f64, runlength: u64) -> std::result::Result<Map, ConfigError> {
        if percent == 0.0 {
            return Ok(Map::AllHoles);
        }
        if percent == 100.0 {
            return Ok(Map::AllData);
        }
        let blocks = size.div_ceil(BLOCK);
        if blocks > MAX_MAP_BLOCKS {
            return Err(ConfigError::new(format!(
                "sparse-random: size={size} is too large: at most 4T unless percent=0 or percent=100 (the map of data blocks is drawn at start-up, one bit per 4K block)"
            )));
        }
        let p_dh = 1.0 / (runlength as f64 / BLOCK as f64);
        let p_hd = (percent / 100.0) * p_dh / (1.0 - percent / 100.0);
        let (t_dh, t_hd) = (p_dh * u64::MAX as f64, p_hd * u64::MAX as f64);
        let mut words = vec![0u64; blocks.div_ceil(64) as usize];
        let mut rng = Xoshiro256::seeded(seed as u64);
        let mut data = false;
        for b in 0..blocks {
            if data {
                words[(b / 64) as usize] |= 1 << (b % 64);
            }
            let t = if data { t_dh } else { t_hd };
            if rng.next_u64() as f64 <= t {
                data = !data;
            }
        }
        Ok(Map::Bits { words, blocks })
    }

    fn is_data(&self, b: u64) -> bool {
        match self {
            Map::AllHoles => false,
            Map::AllData => true,
            Map::Bits { words, blocks } => {
                b < *blocks && words[(b / 64) as usize] & (1 << (b % 64)) != 0
            }
        }
    }

    /// The first block at or after `b` (before `limit`) whose state
    /// differs from block `b`'s, or `limit`.
    fn run_end(&self, b: u64, limit: u64) -> u64 {
        let Map::Bits { words, blocks } = self else {
            return limit;
        };
        let limit = limit.min(*blocks);
        if b >= limit {
            return limit;
        }
        let flip = if self.is_data(b) { !0u64 } else { 0 };
        let mut w = b / 64;
        // Bits at or after b in the first word, others masked off.
        let mut bits = (words[w as usize] ^ flip) & (!0u64 << (b % 64));
        loop {
            if bits != 0 {
                return (w * 64 + bits.trailing_zeros() as u64).min(limit);
            }
            w += 1;
            if w * 64 >= limit {
                return limit;
            }
            bits = words[w as usize] ^ flip;
        }
    }
}

struct Disk {
    size: u64,
    seed: u32,
    random_content: bool,
    map: Map,
}

impl Disk {
    /// The 4096 bytes of data block `b` (nbdkit seeds from the block's
    /// offset).
    fn data_block(&self, b: u64, out: &mut [u8; BLOCK as usize]) {
        let mut rng = Xoshiro256::seeded((self.seed as u64).wrapping_add(b * BLOCK));
        if self.random_content {
            for x in out.iter_mut() {
                *x = rng.next_u64() as u8;
            }
        } else {
            let v = (rng.next_u64() & 255) as u8;
            out.fill(v.max(1));
        }
    }

    /// Walk `[offset, offset+len)` block by block: `f(part, block, skip)`
    /// for each block's piece, `skip` bytes into the block.
    fn each_block(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(std::ops::Range<usize>, u64, usize) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let b = pos / BLOCK;
            let skip = (pos % BLOCK) as usize;
            let n = (BLOCK as usize - skip).min(len - done);
            f(done..done + n, b, skip)?;
            done += n;
        }
        Ok(())
    }
}

pub struct SparseRandom(Arc<Disk>);

impl Plugin for SparseRandom {
    fn name(&self) -> String {
        "sparse-random".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(Handle(self.0.clone())))
    }
    fn dump(&self) -> Vec<(String, String)> {
        vec![("seed".into(), self.0.seed.to_string())]
    }
}

struct Handle(Arc<Disk>);

impl Backend for Handle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.0.size)
    }
    /// Random content costs a few µs a block.
    fn is_blocking(&self) -> bool {
        true
    }
    fn waits(&self) -> bool {
        false
    }
    fn can_write(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_fua(&self) -> Result<FuaMode> {
        Ok(FuaMode::Emulate)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }

    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        let d = &*self.0;
        let mut block = [0u8; BLOCK as usize];
        d.each_block(offset, buf.len(), |part, b, skip| {
            if d.map.is_data(b) {
                d.data_block(b, &mut block);
                let n = part.len();
                buf[part].copy_from_slice(&block[skip..skip + n]);
            } else {
                buf[part].fill(0);
            }
            Ok(())
        })
    }

    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        let d = &*self.0;
        let mut block = [0u8; BLOCK as usize];
        d.each_block(offset, buf.len(), |part, b, skip| {
            let ok = if d.map.is_data(b) {
                d.data_block(b, &mut block);
                let n = part.len();
                buf[part] == block[skip..skip + n]
            } else {
                buf[part].iter().all(|&x| x == 0)
            };
            if ok {
                Ok(())
            } else {
                Err(BackendError::io(format!(
                    "sparse-random: data written at block {b} (offset {}) does not match expected",
                    b * BLOCK
                )))
            }
        })
    }

    fn flush(&self, _flags: u32) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.only_holes(count, offset)
    }

    fn zero(&self, count: u64, offset: u64, _flags: u32) -> Result<()> {
        self.only_holes(count, offset)
    }

    fn extents(&self, count: u64, offset: u64, _flags: u32) -> Result<Extents> {
        let d = &*self.0;
        let mut e = Extents::new(offset, count);
        let end = offset.saturating_add(count).min(d.size);
        let last = end.div_ceil(BLOCK);
        let mut pos = offset;
        while pos < end && e.len() < Extents::MAX {
            let b = pos / BLOCK;
            let next = (d.map.run_end(b, last) * BLOCK).min(end).max(pos + 1);
            let typ = if d.map.is_data(b) {
                extent_type::DATA
            } else {
                extent_type::HOLE | extent_type::ZERO
            };
            e.add(pos, next - pos, typ)?;
            pos = next;
        }
        Ok(e)
    }

    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

impl Handle {
    /// EIO unless every block `[offset, offset+count)` touches is a hole.
    fn only_holes(&self, count: u64, offset: u64) -> Result<()> {
        let d = &*self.0;
        if count == 0 {
            return Ok(());
        }
        let first = offset / BLOCK;
        let last = offset.saturating_add(count).div_ceil(BLOCK);
        let mut b = first;
        while b < last {
            if d.map.is_data(b) {
                return Err(BackendError::io(format!(
                    "sparse-random: trying to trim or zero data (block {b}, offset {}); only holes may be trimmed or zeroed",
                    b * BLOCK
                )));
            }
            b = d.map.run_end(b, last).max(b + 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
