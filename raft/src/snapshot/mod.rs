//! Snapshots as files: the state machine's state at an index, streamed to
//! and from disk so that no snapshot is ever whole in memory.
//!
//! # Layout
//!
//! - `format`: the bytes of a snapshot file, writing one, checking one.
//! - `file`: [`SnapshotFile`], the snapshot data openraft passes around.
//! - `dir`: a partition's snapshot directory — the current snapshot and its
//!   atomic replacement by a newer one (built here or received).
//! - `policy`: when a partition takes a snapshot.
//!
//! # Invariants
//!
//! - A snapshot file becomes current only complete and durable (written to a
//!   temporary, fdatasynced, renamed, directory fsynced).
//! - The current snapshot never moves backwards: a build that finishes
//!   after a newer snapshot became current is discarded.
//! - A received snapshot is checked (length, CRC, and that its header
//!   matches the metadata it came with) before anything uses it.

mod dir;
mod file;
mod format;
mod policy;

pub(crate) use dir::SnapshotDir;
pub use file::SnapshotFile;
pub use format::MAX_STATE_BYTES;
pub(crate) use format::{check_body, read_head};
pub(crate) use policy::Backlog;
