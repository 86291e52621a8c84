//! Backups of a node's data: a directory that mirrors a data directory's
//! layout, so that it verifies, replays and restores like a stopped node's.
//!
//! ```text
//! <backup>/manifest.json                       written last (see `manifest`)
//! <backup>/node.meta                           if the node has one
//! <backup>/partitions/<p>/log/<segments>       same names; the committed prefix
//! <backup>/partitions/<p>/log/meta             the log's purge point, if any
//! <backup>/partitions/<p>/snapshots/current.snap   the projections, if any
//! ```
//!
//! [`backup_offline`] copies a stopped node's directory: each partition's
//! log up to the committed index its raft metadata records, and its current
//! snapshot. A running node's backup (`ClusterNode::backup`) builds a fresh
//! snapshot of each partition first and copies the log up to the index the
//! snapshot's state machine had applied by then.
//!
//! # Invariants
//!
//! - A backup directory with a manifest is a finished backup: the manifest
//!   is removed before anything else changes and written, atomically and
//!   durably, after every file it lists is durable.
//! - Each partition's log in a backup ends at a record boundary at its
//!   `committed_index`, and its snapshot covers no index beyond it.
//! - One backup at a time writes a directory (it holds an exclusive lock on
//!   `<backup>/LOCK`).
//! - A sealed segment already in the previous backup with the same size is
//!   not copied again (see `missive_log::backup`).
//! - After a backup completes, each partition of the node records the
//!   index it holds as its backup watermark ([`WATERMARK_FILE`]); the
//!   partition's log retention never deletes a segment above it.

mod manifest;

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use missive_log::fs::{FileSystem, StdFs};
use missive_log::verify;

pub use self::manifest::{
    MANIFEST_FILE, Manifest, ManifestFile, ManifestPartition, hex, parse_hash,
};
use crate::SNAPSHOT_DIR;
use crate::error::{Error, Result};
use crate::log_store::{LOG_DIR, META_FILE, MetaFile};
use crate::node::{NODE_META_FILE, PARTITIONS_DIR};
use crate::snapshot::SnapshotFile;

/// File name of the snapshot a backup holds for a partition.
pub const SNAPSHOT_FILE: &str = "current.snap";

/// Payload bound used when scanning logs for a backup (the log's default).
const MAX_RECORD_BYTES: u32 = 16 << 20;

/// Bytes read and written per step when copying a snapshot.
const COPY_CHUNK: usize = 1 << 20;

/// What one partition contributes to a backup.
#[derive(Debug)]
pub(crate) struct PartitionSource {
    /// The partition number.
    pub partition: u32,
    /// Its log directory.
    pub log_dir: PathBuf,
    /// The last index to copy (committed); `None`: no entry.
    pub up_to: Option<u64>,
    /// Its snapshot, opened, and the last index it covers.
    pub snapshot: Option<(SnapshotFile, Option<u64>)>,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Backs up the stopped node whose data directory is `data` into `to`.
/// Fails if the node is running (its logs are locked): a running node
/// backs itself up (`ClusterNode::backup`). Blocking.
pub fn backup_offline(data: &Path, to: &Path) -> Result<Manifest> {
    let partitions = partition_numbers(data)?;
    let mut sources = Vec::new();
    // Held until the copy is done: a node starting meanwhile must wait.
    let mut locks = Vec::new();
    for p in partitions {
        let pdir = data.join(PARTITIONS_DIR).join(p.to_string());
        let log_dir = pdir.join(LOG_DIR);
        match StdFs.lock_dir(&log_dir) {
            Ok(lock) => locks.push(lock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Backup {
                    path: data.to_owned(),
                    reason: "the node is running (its logs are locked): back it up with --node"
                        .into(),
                });
            }
            Err(e) => return Err(Error::io("lock", log_dir, e)),
        }
        let up_to = committed_index(&pdir)?;
        let snap_path = pdir.join(SNAPSHOT_DIR).join(SNAPSHOT_FILE);
        let snapshot = if snap_path.exists() {
            let file = SnapshotFile::open(&snap_path)?;
            let index = file.meta()?.last_log_id.map(|l| l.index);
            Some((file, index))
        } else {
            None
        };
        sources.push(PartitionSource {
            partition: p,
            log_dir,
            up_to,
            snapshot,
        });
    }
    let node_id = read_node_id(data);
    let manifest = write_backup(data, to, "offline", node_id, sources)?;
    // The node's next start bounds its retention by what this backup holds.
    for p in &manifest.partitions {
        if let Some(index) = p.committed_index {
            write_watermark(
                &data.join(PARTITIONS_DIR).join(p.partition.to_string()),
                index,
            )?;
        }
    }
    drop(locks);
    Ok(manifest)
}

/// File name, in a partition directory, of the backup watermark: the last
/// log index the last completed backup of this partition holds. Retention
/// deletes no segment holding a record above it (`missive_log::Log::
/// set_retention_floor`), so an incremental backup always finds every
/// record after the one before. Text: a version line, then the index.
pub const WATERMARK_FILE: &str = "backup-watermark";

const WATERMARK_VERSION_LINE: &str = "missive-backup-watermark 1";

/// The backup watermark of partition directory `pdir`, if a backup
/// recorded one. Blocking.
pub fn read_watermark(pdir: &Path) -> Result<Option<u64>> {
    let path = pdir.join(WATERMARK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut lines = text.lines();
    match (lines.next(), lines.next().map(|l| l.trim().parse::<u64>())) {
        (Some(WATERMARK_VERSION_LINE), Some(Ok(index))) => Ok(Some(index)),
        _ => Err(Error::Backup {
            path,
            reason: "invalid backup watermark".into(),
        }),
    }
}

/// Records `index` as partition directory `pdir`'s backup watermark,
/// atomically and durably. Blocking.
pub fn write_watermark(pdir: &Path, index: u64) -> Result<()> {
    let tmp = pdir.join(format!("{WATERMARK_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    writeln!(f, "{WATERMARK_VERSION_LINE}\n{index}").map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    let path = pdir.join(WATERMARK_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    manifest::sync_dir(pdir)
}

/// The committed index partition directory `pdir`'s raft metadata
/// records; `None` if it records none (or has no metadata, which is never
/// created here). For a partition whose node is its only voter that is
/// the log's last valid record (the metadata's own copy may trail it:
/// see `log_store::meta`, "The sole voter"), found by reading the log.
/// Blocking.
pub fn committed_index(pdir: &Path) -> Result<Option<u64>> {
    if !pdir.join(META_FILE).exists() {
        return Ok(None);
    }
    let meta = MetaFile::open(std::sync::Arc::new(StdFs), pdir)?.get();
    let saved = meta.committed.map(|l| l.index);
    if !meta.sole_voter {
        return Ok(saved);
    }
    let mut last = None;
    verify::read_dir(&StdFs, &pdir.join(LOG_DIR), MAX_RECORD_BYTES, |h, _| {
        last = Some(h.index);
        ControlFlow::Continue(())
    })?;
    Ok(saved.max(last).max(meta.purged.map(|l| l.index)))
}

/// The partitions of the data directory `data`, from its `partitions/`
/// folder (a node's directory, or a backup's).
pub fn partition_numbers(data: &Path) -> Result<Vec<u32>> {
    let dir = data.join(PARTITIONS_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        if let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push(p);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The node id in `data/node.meta`, if it can be read.
fn read_node_id(data: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(data.join(NODE_META_FILE)).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "id").then(|| v.trim().parse().ok())?
    })
}

/// Writes a backup of `sources` (and `data/node.meta`) into `to`. Blocking.
pub(crate) fn write_backup(
    data: &Path,
    to: &Path,
    kind: &str,
    node_id: Option<u64>,
    sources: Vec<PartitionSource>,
) -> Result<Manifest> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("create", to, e))?;
    let _lock = StdFs.lock_dir(to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Backup {
                path: to.to_owned(),
                reason: "another backup is writing this directory".into(),
            }
        } else {
            Error::io("lock", to, e)
        }
    })?;
    // An unreadable previous manifest only costs a full copy.
    let previous = Manifest::read(to).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring the previous backup's manifest");
        None
    });
    let prev = |path: &str| previous.as_ref().and_then(|m| m.file(path));
    // From here on the directory is not a finished backup.
    Manifest::remove(to)?;
    let mut manifest = Manifest {
        kind: kind.to_owned(),
        created_ms: 0,
        node_id,
        partition_count: sources.len() as u32,
        files: Vec::new(),
        partitions: Vec::new(),
        bytes_copied: 0,
        bytes_skipped: 0,
    };
    let node_meta = data.join(NODE_META_FILE);
    if node_meta.exists() {
        let f = File::open(&node_meta).map_err(|e| Error::io("open", &node_meta, e))?;
        let (file, copied) = copy_file(&f, &node_meta, to, NODE_META_FILE, &prev)?;
        add(&mut manifest, file, copied);
    }
    for src in sources {
        let rel = format!("{PARTITIONS_DIR}/{}", src.partition);
        let pdir = to.join(PARTITIONS_DIR).join(src.partition.to_string());
        let log_rel = format!("{rel}/{LOG_DIR}");
        let copied = missive_log::backup::copy_log(
            &StdFs,
            &src.log_dir,
            &pdir.join(LOG_DIR),
            src.up_to,
            MAX_RECORD_BYTES,
            &|name| prev(&format!("{log_rel}/{name}")),
        )?;
        for f in copied.files {
            let file = ManifestFile {
                path: format!("{log_rel}/{}", f.name),
                size: f.size,
                blake3: f.blake3,
            };
            add(&mut manifest, file, f.copied);
        }
        let snap_dir = pdir.join(SNAPSHOT_DIR);
        let snapshot_index = match &src.snapshot {
            Some((snap, index)) => {
                std::fs::create_dir_all(&snap_dir)
                    .map_err(|e| Error::io("create", &snap_dir, e))?;
                let rel_dir = format!("{rel}/{SNAPSHOT_DIR}");
                let (file, copied) = copy_file(
                    snap.file(),
                    snap.path(),
                    &snap_dir,
                    SNAPSHOT_FILE,
                    &|name| prev(&format!("{rel_dir}/{name}")),
                )?;
                add(
                    &mut manifest,
                    ManifestFile {
                        path: format!("{rel_dir}/{}", file.path),
                        ..file
                    },
                    copied,
                );
                *index
            }
            None => {
                // A snapshot left from an earlier backup would not match.
                let stale = snap_dir.join(SNAPSHOT_FILE);
                match std::fs::remove_file(&stale) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", stale, e)),
                }
                None
            }
        };
        manifest.partitions.push(ManifestPartition {
            partition: src.partition,
            committed_index: copied.last_index,
            head_hash: copied.head_hash,
            snapshot_index,
        });
    }
    manifest.created_ms = now_ms();
    manifest.write(to)?;
    Ok(manifest)
}

fn add(manifest: &mut Manifest, file: ManifestFile, copied: bool) {
    if copied {
        manifest.bytes_copied += file.size;
    } else {
        manifest.bytes_skipped += file.size;
    }
    manifest.files.push(file);
}

/// Copies the whole of `src` (at `src_path`) to `dir/name` durably, unless
/// the previous backup recorded the same size and checksum and `dir` still
/// holds a file of that size. Returns the file (its `path` is `name`) and
/// whether it was written.
fn copy_file(
    src: &File,
    src_path: &Path,
    dir: &Path,
    name: &str,
    prev: missive_log::backup::Previous<'_>,
) -> Result<(ManifestFile, bool)> {
    let len = src
        .metadata()
        .map_err(|e| Error::io("stat", src_path, e))?
        .len();
    let mut buf = vec![0u8; COPY_CHUNK.min(len as usize).max(1)];
    let mut hasher = blake3::Hasher::new();
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io("read", src_path, e))?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    let blake3 = *hasher.finalize().as_bytes();
    let file = ManifestFile {
        path: name.to_owned(),
        size: len,
        blake3,
    };
    let target = dir.join(name);
    let there = std::fs::metadata(&target).map(|m| m.len()).ok();
    if prev(name) == Some((len, blake3)) && there == Some(len) {
        return Ok((file, false));
    }
    let tmp = dir.join(format!("{name}.tmp"));
    let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io("read", src_path, e))?;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", &tmp, e))?;
        at += n as u64;
    }
    // Durable before the rename, and the rename before the manifest.
    out.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| Error::io("rename", &target, e))?;
    manifest::sync_dir(dir)?;
    Ok((file, true))
}
