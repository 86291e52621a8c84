//! Whole-file replacement that a crash cannot tear.

use std::path::Path;
use std::sync::Arc;

use super::{FileSystem, LogFile};
use crate::error::{Error, Result};

/// Replaces `dir/name` with `bytes`: writes `name.tmp`, fdatasyncs it,
/// renames it over `name` and fsyncs `dir`. A crash at any point leaves the
/// old file or the new one, never a mix (a leftover `.tmp` is the caller's to
/// ignore). Returns the new file, open for reading and writing.
pub fn replace_durably(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<Arc<dyn LogFile>> {
    let tmp = dir.join(format!("{name}.tmp"));
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", tmp, e)),
    }
    let file = fs
        .create_new(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    // The content must be durable before the rename can make it the live
    // file, or a crash could leave the name pointing at unwritten bytes.
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &tmp, e))?;
    let path = dir.join(name);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    // The rename is durable only once the directory is.
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync dir", dir, e))?;
    Ok(file)
}
