//! Offline rebuild and comparison of the projections: what `missive log
//! replay`, `restore` and `diff` and the replay benchmark run, with no node
//! running.
//!
//! The log is the source of truth; the projections are what the chat state
//! machine makes of it. A rebuild reads a partition's segments straight
//! from disk (`missive_log::verify::read_dir`: every CRC and the hash chain
//! checked, purged records included, since purge is logical) and applies
//! the commands to a fresh store through the [`StateMachine`] trait,
//! exactly as a node applies them — only in larger batches.
//!
//! # Layout
//!
//! - `source`: [`Source`], a directory laid out like a node's data
//!   directory (a stopped node's, or a backup of one).
//! - `stop`: [`StopAt`], where a rebuild stops, and how a time becomes an
//!   index.
//! - `rebuild`: [`rebuild_partition`], one partition's projections at a
//!   stop point: the snapshot if it lies at or before it, then the log.
//! - `restore`: [`seed_restored`], a rebuilt partition made the start of a
//!   new one-node cluster (new epoch, snapshot, empty chained log).
//! - `compare`: [`compare_stores`], two projection stores table by table,
//!   key by key.
//!
//! # Invariants
//!
//! - The source is only read: no lock taken, nothing cleaned up, so it may
//!   be a backup, a copy, or a stopped node's directory.
//! - A rebuild writes only into a store that did not exist before it.
//! - Entries are applied in log order, each exactly once, with no gap: a
//!   log that lacks entries the stop point needs is refused with the range
//!   it lacks, never replayed around the hole.
//!
//! [`StateMachine`]: missive_raft::StateMachine

mod compare;
mod rebuild;
mod restore;
mod source;
mod stop;

pub use compare::{Comparison, Difference, Side, compare_stores};
pub use rebuild::{DEFAULT_BATCH, Progress, Rebuilt, rebuild_partition};
pub use restore::{epoch_of, new_epoch, restored_state, seed_restored};
pub use source::Source;
pub use stop::{StopAt, Target, resolve};

use std::path::PathBuf;

/// Why an offline rebuild or comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Log(#[from] missive_log::Error),
    #[error("{0}")]
    Raft(#[from] missive_raft::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("apply: {0}")]
    Apply(String),
    #[error("{path}: corruption in {segment} at byte {position}: {kind}")]
    Corruption {
        path: PathBuf,
        segment: PathBuf,
        position: u64,
        kind: String,
    },
    #[error("{path}: record {index} is not a missive.v1.LogEntry: {reason}")]
    BadEntry {
        path: PathBuf,
        index: u64,
        reason: String,
    },
    /// The log on disk does not hold entries the stop point needs.
    #[error("partition {partition}: {reason}")]
    Missing { partition: u32, reason: String },
    /// The source is not laid out like a data directory.
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// The output exists already.
    #[error("{0} exists already: a rebuild writes only into a new store")]
    OutputExists(PathBuf),
}

impl OfflineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OfflineError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<redb::DatabaseError> for OfflineError {
    fn from(e: redb::DatabaseError) -> Self {
        OfflineError::Store(e.into())
    }
}
