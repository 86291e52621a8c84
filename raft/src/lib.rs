//! missive-raft: replication of a partition's log with openraft.
//!
//! Each partition is one Raft group whose log *is* the partition's
//! missive-log: one write path both replicates and records history. The Raft
//! index of an entry is its record index; each record's payload is the
//! entry's `missive.v1.LogEntry` envelope; the record's timestamp is the one
//! the leader assigned, identical on every replica, because the log's hash
//! chain covers it.
//!
//! # Layout
//!
//! - [`types`]: the openraft type configuration ([`TypeConfig`]) and the
//!   entry, command, reply and node types it names.
//! - `pb`: conversions between openraft's types and the `missive.v1`
//!   protobuf types (the only place the protobuf types are used).
//! - `log_store`: [`LogStore`], openraft's `RaftLogStorage` over missive-log,
//!   and [`LogReader`].
//! - [`state_machine`]: the [`StateMachine`] trait an application
//!   implements.
//! - `applied_state`: [`AppliedState`], a state machine's position, and its
//!   bytes.
//! - `sm_store`: [`StateMachineStore`], openraft's `RaftStateMachine` over any
//!   [`StateMachine`].
//! - `snapshot`: snapshots as files ([`SnapshotFile`]).
//! - `error`: [`Error`].
//! - [`partition`]: which partition a key lives in (jump consistent hash).
//! - [`network`]: the internal gRPC transport (`missive.v1.RaftInternal`),
//!   client and server, with the cluster secret.
//! - [`node`]: [`Node`], a cluster member with P partitions: writes
//!   forwarded to leaders, status, membership, leader spreading.
//! - [`kv`]: a key-value state machine, for tests and benchmarks.
//! - [`backup`]: backups of a node's data (offline, and the layout and
//!   manifest `Node::backup` writes).
//! - [`offline`]: a stopped partition's snapshot, read; a fresh partition
//!   seeded with a snapshot (replay and restore tools).
//! - [`pace`]: the budget the node's large background writes (snapshot
//!   builds, the projection store's durable commits) share, so that they
//!   do not reach the disk in bursts the logs' fdatasyncs wait behind.
//!
//! # A partition directory
//!
//! ```text
//! <partition dir>/raft-meta     vote, committed and last purged log id
//! <partition dir>/log/          the missive-log segments
//! <partition dir>/snapshots/    the current snapshot
//! ```
//!
//! # Invariants
//!
//! - Vote and committed log id are durable before openraft's call returns;
//!   an append is reported flushed only after its fdatasync.
//! - A restarted node starts as a follower, never as the leader it was
//!   ([`LogStore::raft_config`]): a leader's log may lose entries it already
//!   sent, and one log id must never name two entries.
//! - An entry is stored under the index it carries, or not at all.
//! - Timestamps are assigned once, by the leader's store, and never change.
//! - No snapshot is held whole in memory.
//!
//! This crate is generic over the state machine it replicates: no chat
//! vocabulary belongs here. It drives missive-log (which has no runtime)
//! from tokio, doing its blocking I/O on dedicated or blocking threads.

// Storage code: an I/O or decoding failure is an error, never a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod applied_state;
pub mod backup;
mod error;
pub mod kv;
mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod offline;
pub mod pace;
pub mod partition;
mod pb;
mod sm_store;
mod snapshot;
pub mod state_machine;
pub mod types;

pub use applied_state::AppliedState;
pub use error::{BoxError, Error, Result};
pub use log_store::{
    LOG_DIR, LogReader, LogStore, MAX_GROUP_ENTRIES, MAX_GROUP_LINGER, MAX_READ_BYTES, META_FILE,
    WRITE_QUEUE_DEPTH,
};
pub use network::{ClusterSecret, SECRET_HEADER};
pub use node::{DEFAULT_PARTITIONS, Node as ClusterNode, NodeConfig, NodeStatus};
pub use sm_store::{MAX_APPLY_BATCH, RaftSnapshot, SnapshotBuilder, StateMachineStore};
pub use snapshot::{MAX_STATE_BYTES, SnapshotFile};
pub use state_machine::{CommandEntry, SnapshotSource, StateMachine};
pub use types::{Command, Entry, Node, NodeId, Payload, Reply, TypeConfig};

/// Name of the snapshot directory inside a partition directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
