//! The log's small metadata file: the first visible index after a purge.
//!
//! Purge is logical, so the purge point must survive a restart without
//! touching segments. The file is replaced atomically (write a temporary,
//! fdatasync it, rename over, fsync the directory), so it is either the old
//! or the new version and never torn; a CRC guards against bit rot.

use std::path::Path;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{u32_at, u64_at};
use crate::fs::{FileSystem, replace_durably};

/// File name of the metadata file inside a log directory.
pub const META_FILE: &str = "meta";
const MAGIC: [u8; 8] = *b"MSVLOGMT";
const LEN: usize = 24;

/// Reads the purge point, if one was ever written.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(META_FILE);
    let file = match fs.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut b = [0u8; LEN];
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != LEN as u64 {
        return Err(Error::corruption(path, 0, CorruptionKind::BadMeta));
    }
    file.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    if b[0..8] != MAGIC || crc32fast::hash(&b[..20]) != u32_at(&b, 20) {
        return Err(Error::corruption(path, 0, CorruptionKind::BadMeta));
    }
    Ok(Some(u64_at(&b, 8)))
}

/// Durably replaces the purge point.
pub fn write(fs: &dyn FileSystem, dir: &Path, first_visible: u64) -> Result<()> {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&first_visible.to_le_bytes());
    // 16..20 reserved.
    let crc = crc32fast::hash(&b[..20]);
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    replace_durably(fs, dir, META_FILE, &b).map(drop)
}
