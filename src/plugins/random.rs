//! The `random` plugin: a disk of pseudo-random bytes defined by `seed=`,
//! byte for byte as nbdkit-random-plugin (byte i is the low byte of the
//! third xoshiro256** output after seeding with splitmix64 from seed+i).
//! Writes succeed only when they match what would be read (else EIO), so
//! `nbdcopy $uri $uri` tests copying; trim and zero fail with EIO.
//! Parameters: `size=` (required, the magic key), `seed=` (a 32-bit
//! number; default the time at start-up).
//! Example: `nbdscript random size=1G seed=42 --run 'nbdcopy $uri - | md5sum'`.
//! Must not import tokio or rhai.

use super::PluginDef;
use crate::backend::{Backend, BackendError, CacheMode, Plugin, Result};
use crate::params::{ConfigError, Params};
use std::sync::Arc;

pub const DEF: PluginDef = PluginDef {
    name: "random",
    aliases: &[],
    magic_key: Some("size"),
    params: &[
        ("size", "size of the disk, e.g. 1G (required)"),
        (
            "seed",
            "32-bit seed for repeatable data (default: the time)",
        ),
    ],
    description: "a disk of repeatable pseudo-random bytes",
    callbacks: &["dump_plugin", "pwrite", "trim", "zero"],
    make,
};

fn make(p: &Params) -> std::result::Result<Arc<dyn Plugin>, ConfigError> {
    p.check_known("random", &DEF.keys())?;
    let size = p.size("size")?.ok_or_else(|| {
        ConfigError::new("random: the parameter size= is required, e.g. random size=1G")
    })?;
    let seed = match p.get("seed") {
        Some(v) => v.trim().parse::<u32>().map_err(|_| {
            ConfigError::new(format!(
                "random: seed={v}: expected an unsigned 32-bit number (0 to 4294967295)"
            ))
        })?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0),
    };
    Ok(Arc::new(Random { size, seed }))
}

pub struct Random {
    size: u64,
    seed: u32,
}

impl Plugin for Random {
    fn name(&self) -> String {
        "random".into()
    }
    fn open(&self, _readonly: bool, _export: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(RandomHandle {
            size: self.size,
            seed: self.seed,
        }))
    }
    fn dump(&self) -> Vec<(String, String)> {
        vec![("seed".into(), self.seed.to_string())]
    }
}

struct RandomHandle {
    size: u64,
    seed: u32,
}

/// nbdkit's generator (common/include/random.h): xoshiro256** seeded
/// with splitmix64 from a 64-bit seed. Not cryptographic; repeatable.
pub(crate) struct Xoshiro256([u64; 4]);

#[inline]
fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Xoshiro256 {
    /// nbdkit's `xsrandom (seed, &state)`.
    #[inline]
    pub(crate) fn seeded(mut seed: u64) -> Self {
        Xoshiro256([
            splitmix(&mut seed),
            splitmix(&mut seed),
            splitmix(&mut seed),
            splitmix(&mut seed),
        ])
    }

    /// nbdkit's `xrandom (&state)`: 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

/// The byte nbdkit's random plugin serves at `offset` for `seed`.
#[inline]
pub fn random_byte(seed: u32, offset: u64) -> u8 {
    let mut s = Xoshiro256::seeded((seed as u64).wrapping_add(offset));
    s.next_u64();
    s.next_u64();
    (s.next_u64() & 255) as u8
}

impl Backend for RandomHandle {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }
    /// About 10 ns a byte: a 64k read is too long for the reactor.
    fn is_blocking(&self) -> bool {
        true
    }
    fn waits(&self) -> bool {
        false
    }
    fn can_write(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<CacheMode> {
        Ok(CacheMode::Native)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, _flags: u32) -> Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = random_byte(self.seed, offset.wrapping_add(i as u64));
        }
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _flags: u32) -> Result<()> {
        for (i, &b) in buf.iter().enumerate() {
            if b != random_byte(self.seed, offset.wrapping_add(i as u64)) {
                return Err(BackendError::io("data written does not match expected"));
            }
        }
        Ok(())
    }
    fn trim(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(BackendError::io(
            "attempt to trim or zero non-sparse random disk",
        ))
    }
    fn zero(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Err(BackendError::io(
            "attempt to trim or zero non-sparse random disk",
        ))
    }
    fn cache(&self, _count: u64, _offset: u64, _flags: u32) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Errno;

    #[test]
    fn matches_nbdkit_seed_1() {
        // nbdkit random size=16 seed=1 | od -tx1
        let want = [
            0x14, 0x05, 0x51, 0x7e, 0xae, 0x48, 0x96, 0x06, 0x17, 0x72, 0xad, 0x7b, 0xf8, 0x18,
            0x75, 0xff,
        ];
        let p = make(&Params::new(vec![
            ("size".into(), "16".into()),
            ("seed".into(), "1".into()),
        ]))
        .unwrap();
        let h = p.open(false, "").unwrap();
        let mut b = [0u8; 16];
        h.pread(&mut b, 0, 0).unwrap();
        assert_eq!(b, want);
        h.pwrite(&b[3..9], 3, 0).unwrap();
        assert_eq!(h.pwrite(&[0, 0], 0, 0).unwrap_err().errno, Errno::Io);
        assert_eq!(h.zero(2, 0, 0).unwrap_err().errno, Errno::Io);
        assert!(make(&Params::new(vec![
            ("size".into(), "16".into()),
            ("seed".into(), "-1".into()),
        ]))
        .is_err());
    }
}
