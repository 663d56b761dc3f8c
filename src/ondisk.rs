//! On-disk encodings that native plugins and the script library share:
//! CRC-32 and CRC-32C (table-driven) and GUIDs in the byte order GPT and
//! Microsoft store them.

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC-32 (IEEE 802.3, as zlib, GPT and PNG), reflected polynomial.
static CRC32: [u32; 256] = crc_table(0xEDB8_8320);
/// CRC-32C (Castagnoli, as iSCSI, ext4 and btrfs metadata).
static CRC32C: [u32; 256] = crc_table(0x82F6_3B78);

fn crc(table: &[u32; 256], data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, b| {
        table[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// CRC-32 of `data` (IEEE; `crc32(b"123456789") == 0xCBF43926`).
pub fn crc32(data: &[u8]) -> u32 {
    crc(&CRC32, data)
}

/// CRC-32C of `data` (`crc32c(b"123456789") == 0xE3069283`).
pub fn crc32c(data: &[u8]) -> u32 {
    crc(&CRC32C, data)
}

/// A GUID's text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, braces and
/// case optional) as the 16 bytes GPT and Microsoft store: the first
/// three groups little-endian, the last two as written.
pub fn guid_bytes(text: &str) -> Result<[u8; 16], String> {
    let t = text.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    let groups: Vec<&str> = t.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let bad = || {
        format!("guid: {text:?} is not a GUID (expected 8-4-4-4-12 hex digits, like C12A7328-F81F-11D2-BA4B-00A0C93EC93B)")
    };
    if groups.len() != 5
        || groups
            .iter()
            .zip(lens)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(bad());
    }
    let hex: Vec<u8> = groups
        .concat()
        .as_bytes()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    let mut out = [0u8; 16];
    out.copy_from_slice(&hex);
    out[0..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    Ok(out)
}

