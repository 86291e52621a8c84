//! missive-log: the segmented, append-only log that is missive's source of
//! truth.
//!
//! One [`Log`] per directory (in missive: per partition). Records are framed
//! with a CRC32 and chained with BLAKE3, so a bit flip is caught on read and a
//! changed history is caught by its head hash. Appends from many threads are
//! group-committed — one write and one fdatasync per batch — and acknowledged
//! only once durable. docs/log-format.md describes every byte on disk.
//!
//! # Layout
//!
//! - [`format`]: the byte layout of segment and record headers, the chain hash.
//! - `scan`: sequential validation of a segment's records (shared by
//!   recovery, index rebuilds and the verifier).
//! - `index`: the sparse per-segment index (a cache, rebuilt when stale).
//! - `meta`: the durable purge point (and the chain hash a purge beyond
//!   the end carried in).
//! - `recovery`: from a directory to a ready log (torn tails, corruption).
//! - `log`: [`Log`] — group commit, reads, truncation, purge, retention.
//! - `segment`: sealed (memory-mapped) and active (pread) segments, and the
//!   range iterator [`Entries`].
//! - [`fs`]: the file-system trait, the real one, and the simulated crash disk.
//! - [`verify`]: offline verification and reading for operators' tools.
//! - [`backup`]: copying a log's committed prefix into a backup.
//!
//! # Invariants
//!
//! - Readers see only durable records.
//! - A segment file that is mapped is never truncated or unlinked.
//! - After a failed write or sync every call fails until the log is reopened.
//! - Corruption outside a torn tail is reported, never silently cut.
//!
//! This crate has no async runtime, no consensus and no chat vocabulary: it
//! stores opaque payloads under increasing indexes.

// Storage code returns errors; it never unwraps them. Tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backup;
mod error;
pub mod format;
pub mod fs;
mod index;
mod log;
mod meta;
mod options;
mod recovery;
mod scan;
mod segment;
pub mod verify;

pub use error::{CorruptionKind, Error, Result};
pub use format::{ChainHash, GENESIS_HASH};
pub use log::{Log, LogState, Record, SegmentInfo};
pub use options::{Clock, Options, Recovery, Retention, SyncMode};
pub use recovery::{RecoveryReport, TornTail};
pub use segment::{Entries, Entry};
