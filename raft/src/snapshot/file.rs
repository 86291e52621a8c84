//! [`SnapshotFile`]: the snapshot data openraft passes between the state
//! machine and the network.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::format::read_head;
use crate::error::{Error, Result};
use crate::types::SnapshotMeta;

/// A complete snapshot file, open for reading.
///
/// The file is self-describing (its header carries the snapshot metadata and
/// a CRC of the rest), so sending a snapshot is sending this file's bytes,
/// and receiving one is writing them to a file and [`SnapshotFile::open`]ing
/// it. The open handle keeps the bytes readable even if a newer snapshot
/// replaces this one meanwhile.
#[derive(Debug)]
pub struct SnapshotFile {
    /// Where the file was opened (it may have been replaced since).
    path: PathBuf,
    /// The open file.
    file: File,
}

impl SnapshotFile {
    /// Opens the snapshot file at `path` and checks its header. The body is
    /// checked when the snapshot is installed.
    pub fn open(path: impl AsRef<Path>) -> Result<SnapshotFile> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        read_head(&file, &path)?;
        Ok(SnapshotFile { path, file })
    }

    pub(crate) fn from_parts(path: PathBuf, file: File) -> Self {
        SnapshotFile { path, file }
    }

    /// Where the file was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for streaming its bytes (with positional reads: its
    /// cursor may be anywhere).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The metadata in the file's header.
    pub fn meta(&self) -> Result<SnapshotMeta> {
        let (_, state) = read_head(&self.file, &self.path)?;
        Ok(state.snapshot_meta())
    }
}
