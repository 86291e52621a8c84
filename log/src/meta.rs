//! The log's small metadata file: the first visible index after a purge,
//! and — after a purge beyond the end — the chain hash the log continues
//! from.
//!
//! Purge is logical, so the purge point must survive a restart without
//! touching segments. The file is replaced atomically (write a temporary,
//! fdatasync it, rename over, fsync the directory), so it is either the old
//! or the new version and never torn; a CRC guards against bit rot.
//!
//! Two shapes, told apart by length (docs/log-format.md has both):
//!
//! - version 1, 24 bytes: the purge point alone. Written for every purge
//!   that carries no hash, so logs that never jumped stay readable by older
//!   code.
//! - version 2, 64 bytes: the purge point and the chain hash of the record
//!   before it, carried in by a purge beyond the end. Recovery needs it to
//!   finish a jump that a crash interrupted before the new segment (whose
//!   header also holds the hash) was durable. Older code refuses a file of
//!   this length as corrupt instead of restarting the chain.

use std::path::Path;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{ChainHash, hash_at, u32_at, u64_at};
use crate::fs::{FileSystem, replace_durably};

/// File name of the metadata file inside a log directory.
pub const META_FILE: &str = "meta";
const MAGIC: [u8; 8] = *b"MSVLOGMT";
/// Length of a version 1 file (purge point only).
const V1_LEN: usize = 24;
/// Length of a version 2 file (purge point and carried hash).
const V2_LEN: usize = 64;
/// The version field of a version 2 file (bytes 16..18; zero in version 1).
const V2: u16 = 2;

/// What the metadata file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The first visible index: everything below it is purged.
    pub first_visible: u64,
    /// The chain hash of record `first_visible - 1` in the history this log
    /// replicates, when a purge beyond the end carried it in.
    pub carried: Option<ChainHash>,
}

/// Reads the metadata, if a purge ever wrote it.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Meta>> {
    let path = dir.join(META_FILE);
    let file = match fs.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let bad = || Error::corruption(&path, 0, CorruptionKind::BadMeta);
    let len = match usize::try_from(len) {
        Ok(n @ (V1_LEN | V2_LEN)) => n,
        _ => return Err(bad()),
    };
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let crc_at = len - 4;
    if b[0..8] != MAGIC || crc32fast::hash(&b[..crc_at]) != u32_at(&b, crc_at) {
        return Err(bad());
    }
    let carried = if len == V2_LEN {
        if u16::from_le_bytes([b[16], b[17]]) != V2 || u16::from_le_bytes([b[18], b[19]]) != 0 {
            return Err(bad());
        }
        Some(hash_at(&b, 24))
    } else {
        None
    };
    Ok(Some(Meta {
        first_visible: u64_at(&b, 8),
        carried,
    }))
}

/// Durably replaces the metadata: version 1 without a carried hash,
/// version 2 with one.
pub fn write(fs: &dyn FileSystem, dir: &Path, meta: Meta) -> Result<()> {
    let mut b = match meta.carried {
        None => vec![0u8; V1_LEN],
        Some(hash) => {
            let mut b = vec![0u8; V2_LEN];
            b[16..18].copy_from_slice(&V2.to_le_bytes());
            // 18..20 flags, 20..24 reserved: zero.
            b[24..56].copy_from_slice(&hash);
            // 56..60 reserved: zero.
            b
        }
    };
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&meta.first_visible.to_le_bytes());
    let crc_at = b.len() - 4;
    let crc = crc32fast::hash(&b[..crc_at]);
    b[crc_at..].copy_from_slice(&crc.to_le_bytes());
    replace_durably(fs, dir, META_FILE, &b).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn both_shapes_round_trip_and_a_flipped_bit_is_caught() {
        let fs = SimFs::new();
        let dir = Path::new("/m");
        fs.create_dir_all(dir).expect("mkdir");
        for meta in [
            Meta {
                first_visible: 42,
                carried: None,
            },
            Meta {
                first_visible: 43,
                carried: Some([7; 32]),
            },
        ] {
            write(&fs, dir, meta).expect("write");
            assert_eq!(read(&fs, dir).expect("read"), Some(meta));
            let path = dir.join(META_FILE);
            let file = fs.open(&path, true).expect("open");
            let len = file.len().expect("len") as usize;
            assert_eq!(len, if meta.carried.is_some() { 64 } else { 24 });
            for byte in 0..len {
                let mut b = vec![0u8; len];
                file.read_exact_at(&mut b, 0).expect("read");
                b[byte] ^= 0x04;
                file.write_all_at(&b, 0).expect("write");
                assert!(
                    read(&fs, dir).is_err(),
                    "flip in byte {byte} went unnoticed"
                );
                b[byte] ^= 0x04;
                file.write_all_at(&b, 0).expect("restore");
            }
        }
    }
}
