//! A partition's snapshot directory: the current snapshot and its atomic
//! replacement.
//!
//! ```text
//! <snapshots dir>/current.snap   the current snapshot
//! <snapshots dir>/*.tmp          snapshots being built or received (removed on open)
//! ```

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use missive_log::ChainHash;

use super::file::SnapshotFile;
use super::format::{self, check_body, copy_checked, read_head};
use crate::applied_state::AppliedState;
use crate::error::{BoxError, Error, Result};
use crate::types::{LogId, SnapshotMeta};

/// File name of the current snapshot.
const CURRENT: &str = "current.snap";

/// The data of a snapshot, positioned at its start, for a state machine to
/// install.
pub(crate) type DataReader = std::io::Take<BufReader<File>>;

/// What is known of the current snapshot without reading it.
#[derive(Clone, Debug)]
struct Current {
    /// The state it leaves a state machine in.
    state: AppliedState,
    /// The chain hash of its last entry, if its builder knew it.
    chain_hash: Option<ChainHash>,
}

/// A partition's snapshot directory.
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    /// The directory.
    dir: PathBuf,
    /// The current snapshot's applied state and chain hash, `None` if
    /// there is none. Held while the current snapshot is replaced, so
    /// replacements are ordered and never move backwards.
    current: Mutex<Option<Current>>,
    /// Makes temporary file names unique.
    tmp_seq: AtomicU64,
}

impl SnapshotDir {
    /// Opens (creating if needed) the directory, removing what an
    /// interrupted build or install left. Blocking.
    pub fn open(dir: &Path) -> Result<SnapshotDir> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        let path = dir.join(CURRENT);
        let current = match File::open(&path) {
            Ok(f) => {
                let (header, state) = read_head(&f, &path)?;
                Some(Current {
                    state,
                    chain_hash: header.chain_hash,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", path, e)),
        };
        Ok(SnapshotDir {
            dir: dir.to_owned(),
            current: Mutex::new(current),
            tmp_seq: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        // Updated by single assignments after the file work: still coherent
        // after a panic elsewhere.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}.tmp"))
    }

    /// The applied state of the current snapshot.
    pub fn current_state(&self) -> Option<AppliedState> {
        self.lock().as_ref().map(|c| c.state.clone())
    }

    /// The current snapshot's last entry and its file's size, if there is
    /// one. Blocking (a `stat`).
    pub fn current_extent(&self) -> Result<Option<(Option<LogId>, u64)>> {
        let current = self.lock();
        let Some(Current { state, .. }) = &*current else {
            return Ok(None);
        };
        // Under the lock, so the size is that of the file `state` describes.
        let path = self.dir.join(CURRENT);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        Ok(Some((state.last_applied, bytes)))
    }

    /// The chain hash of entry `last` as the current snapshot carries it,
    /// if the current snapshot ends at `last` and carries one. Never does
    /// I/O.
    pub fn chain_hash_of(&self, last: LogId) -> Option<ChainHash> {
        self.lock()
            .as_ref()
            .filter(|c| c.state.last_applied == Some(last))
            .and_then(|c| c.chain_hash)
    }

    /// The current snapshot, opened. Blocking.
    pub fn current(&self) -> Result<Option<(SnapshotMeta, SnapshotFile)>> {
        let current = self.lock();
        let Some(Current { state, .. }) = &*current else {
            return Ok(None);
        };
        // Opened under the lock, so the file is the one `state` describes.
        let path = self.dir.join(CURRENT);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(Some((
            state.snapshot_meta(),
            SnapshotFile::from_parts(path, file),
        )))
    }

    /// Writes a snapshot of `state` — whose last entry has `chain_hash` in
    /// the log, if known — with the data `write_data` streams, and makes it
    /// current unless a snapshot at least as new already is. Blocking.
    pub fn build(
        &self,
        state: &AppliedState,
        chain_hash: Option<ChainHash>,
        write_data: impl FnOnce(&mut dyn std::io::Write) -> std::result::Result<(), BoxError>,
    ) -> Result<SnapshotFile> {
        let tmp = self.tmp_path("build");
        let built = format::write_file(&tmp, state, chain_hash, write_data);
        let opened = built.and_then(|_| File::open(&tmp).map_err(|e| Error::io("open", &tmp, e)));
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let mut current = self.lock();
        let newer = current
            .as_ref()
            .is_none_or(|c| c.state.last_applied < state.last_applied);
        if newer {
            self.make_current(&tmp)?;
            *current = Some(Current {
                state: state.clone(),
                chain_hash,
            });
            Ok(SnapshotFile::from_parts(self.dir.join(CURRENT), file))
        } else {
            // A newer snapshot was installed meanwhile; this one is still a
            // valid answer to the caller, through its open handle.
            std::fs::remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
            Ok(SnapshotFile::from_parts(tmp, file))
        }
    }

    /// Copies the received snapshot `src` here, checking it and that it is
    /// the snapshot `meta` describes, and makes it current. Returns its
    /// applied state and its data, for the state machine to install.
    /// Blocking.
    pub fn install(
        &self,
        meta: &SnapshotMeta,
        src: &SnapshotFile,
    ) -> Result<(AppliedState, DataReader)> {
        let tmp = self.tmp_path("install");
        let copied = copy_checked(src.file(), src.path(), &tmp).and_then(|(header, state)| {
            if state != AppliedState::from_snapshot_meta(meta) {
                return Err(Error::corrupt_snapshot(
                    src.path(),
                    "its header does not match the snapshot metadata it came with",
                ));
            }
            let file = File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
            Ok((header, state, file))
        });
        let (header, state, file) = match copied {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let mut current = self.lock();
        self.make_current(&tmp)?;
        *current = Some(Current {
            state: state.clone(),
            chain_hash: header.chain_hash,
        });
        drop(current);
        // Read through the handle opened before the rename: a later
        // replacement of the current snapshot cannot swap the data.
        let data = data_reader(file, &header, &tmp)?;
        Ok((state, data))
    }

    /// The data of the current snapshot after checking its CRC, for a state
    /// machine that fell behind its own snapshot (a crash between making a
    /// snapshot current and installing it). Blocking.
    pub fn current_data(&self) -> Result<Option<(AppliedState, DataReader)>> {
        let current = self.lock();
        let Some(Current { state, .. }) = current.clone() else {
            return Ok(None);
        };
        let path = self.dir.join(CURRENT);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        drop(current);
        let (header, _) = read_head(&file, &path)?;
        check_body(&file, &path, &header, None)?;
        Ok(Some((state, data_reader(file, &header, &path)?)))
    }

    /// Renames `tmp` over the current snapshot, durably.
    fn make_current(&self, tmp: &Path) -> Result<()> {
        let path = self.dir.join(CURRENT);
        std::fs::rename(tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync dir", &self.dir, e))
    }
}

fn data_reader(mut file: File, header: &format::Header, path: &Path) -> Result<DataReader> {
    file.seek(SeekFrom::Start(header.data_offset()))
        .map_err(|e| Error::io("seek", path, e))?;
    Ok(BufReader::with_capacity(64 << 10, file).take(header.data_len))
}
