//! Offline access to a partition's raft files, for tools that run while
//! no node has the directory open: reading a partition's current snapshot
//! (replay starts from it) and seeding a fresh partition directory with a
//! snapshot and an empty log (restore builds a new cluster that way).
//!
//! # Invariants
//!
//! - Reading changes nothing: no lock, no cleanup of leftovers, so it is
//!   safe on a backup or beside a live node (a snapshot is replaced by
//!   rename, so an open file is always one whole snapshot).
//! - A snapshot's body is CRC-checked before any byte of it is handed out.
//! - Seeding writes exactly what a follower that installed the snapshot
//!   would hold: the snapshot current, the purged log id and chain hash in
//!   `raft-meta`, and a log that continues at the snapshot's next index,
//!   chaining on the snapshot's hash.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use missive_log::{ChainHash, Options};

use crate::SNAPSHOT_DIR;
use crate::applied_state::AppliedState;
use crate::error::{BoxError, Error, Result};
use crate::log_store::{LOG_DIR, META_FILE, PartitionLog};
use crate::node::meta;
use crate::snapshot::{SnapshotDir, check_body, read_head};
use crate::types::NodeId;

/// File name of a partition's current snapshot inside its snapshot
/// directory.
pub const CURRENT_SNAPSHOT: &str = "current.snap";

/// What a snapshot file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHead {
    /// The state the snapshot leaves a state machine in.
    pub state: AppliedState,
    /// The log's chain hash at the snapshot's last entry, if its builder
    /// knew it.
    pub chain_hash: Option<ChainHash>,
    /// Bytes of state machine data.
    pub data_len: u64,
}

/// A checked snapshot: its head and a reader of its data.
#[derive(Debug)]
pub struct SnapshotData {
    /// What its header says.
    pub head: SnapshotHead,
    /// The state machine's data, positioned at its first byte.
    pub data: std::io::Take<BufReader<File>>,
}

/// The current snapshot of the partition directory `pdir`:
/// `<pdir>/snapshots/current.snap`.
pub fn current_snapshot_path(pdir: &Path) -> std::path::PathBuf {
    pdir.join(SNAPSHOT_DIR).join(CURRENT_SNAPSHOT)
}

/// Reads the header of the snapshot at `path`; `None` if there is no file.
pub fn read_snapshot_head(path: &Path) -> Result<Option<SnapshotHead>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let (header, state) = read_head(&file, path)?;
    Ok(Some(SnapshotHead {
        state,
        chain_hash: header.chain_hash,
        data_len: header.data_len,
    }))
}

/// Opens the snapshot at `path`, checks its whole body against its CRC and
/// returns its data; `None` if there is no file.
pub fn open_snapshot(path: &Path) -> Result<Option<SnapshotData>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let (header, state) = read_head(&file, path)?;
    check_body(&file, path, &header, None)?;
    file.seek(SeekFrom::Start(header.data_offset()))
        .map_err(|e| Error::io("seek", path, e))?;
    Ok(Some(SnapshotData {
        head: SnapshotHead {
            state,
            chain_hash: header.chain_hash,
            data_len: header.data_len,
        },
        data: BufReader::with_capacity(64 << 10, file).take(header.data_len),
    }))
}

/// Seeds the fresh partition directory `pdir` with a snapshot of `state`
/// (whose data `write_data` streams) and an empty log that continues after
/// it, chaining on `chain_hash` — the source log's chain hash at the
/// snapshot's last entry. A node opening the directory starts from the
/// snapshot, as a follower does after installing it.
///
/// Refuses a directory that already holds a log or raft metadata, and a
/// state without a last applied entry. Blocking.
pub fn seed_partition(
    pdir: &Path,
    state: &AppliedState,
    chain_hash: ChainHash,
    write_data: impl FnOnce(&mut dyn Write) -> std::result::Result<(), BoxError>,
) -> Result<()> {
    let Some(last) = state.last_applied else {
        return Err(Error::Config(
            "a seeded partition needs a snapshot with a last applied entry".into(),
        ));
    };
    for existing in [pdir.join(LOG_DIR), pdir.join(META_FILE)] {
        if existing.exists() {
            return Err(Error::Config(format!(
                "{} already exists: seeding needs a fresh partition directory",
                existing.display()
            )));
        }
    }
    let snapshots = Arc::new(SnapshotDir::open(&pdir.join(SNAPSHOT_DIR))?);
    snapshots.build(state, Some(chain_hash), write_data)?;
    let log = PartitionLog::open(pdir, Options::default())?;
    // Linked, so the purge past the (empty) log's end takes the snapshot's
    // chain hash: `raft-meta` records it, then the log starts a carried
    // segment at `last + 1` chaining on it — every step durable before the
    // next, exactly as when a follower installs a snapshot.
    log.link_snapshots(snapshots);
    log.purge(last)?;
    Ok(())
}

/// Writes `<data>/node.meta` for node `id` of a cluster of `partitions`
/// partitions; refuses if one exists that says otherwise. Blocking.
pub fn create_node_meta(data: &Path, id: NodeId, partitions: u32) -> Result<()> {
    meta::open_or_create(data, id, Some(partitions), partitions).map(|_| ())
}

/// The node id and partition count in `<data>/node.meta`; `None` if the
/// directory has none (a backup may leave it out). Blocking.
pub fn read_node_meta(data: &Path) -> Result<Option<(NodeId, u32)>> {
    let path = data.join(meta::NODE_META_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let m = meta::parse(&text).map_err(|reason| Error::NodeMeta { path, reason })?;
    Ok(Some((m.id, m.partitions)))
}

/// The membership a log entry's `missive.v1.Membership` payload names.
pub fn decode_membership(
    m: &missive_proto::v1::Membership,
) -> Result<crate::types::ClusterMembership> {
    crate::pb::membership_from_pb(m)
}
