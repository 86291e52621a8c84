//! Options of `Log::open`.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fs::{FileSystem, StdFs};

/// Whether appends wait for fdatasync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Every batch is fdatasynced before it is acknowledged. The only mode a
    /// server may run.
    #[default]
    Fdatasync,
    /// No fdatasync at all: an acknowledged append can be lost on power
    /// failure. Exists so benchmarks can separate the cost of fsync from the
    /// rest of the write path; nothing else may use it.
    NoSyncBenchmarkOnly,
}

/// How much of the log `Log::open` checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Scan the active (last) segment record by record and trust the CRC'd
    /// sparse indexes of sealed segments, so opening costs the same whatever
    /// the log's size. Sealed records are still checked by CRC on every read.
    #[default]
    TailOnly,
    /// Also scan every sealed segment: CRC, index continuity and hash chain.
    /// Costs a full read of the log.
    Full,
}

/// When sealed segments below the purge point are deleted from disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete a purged segment once its newest record is older than this
    /// many milliseconds.
    pub max_age_ms: Option<u64>,
    /// Delete the oldest purged segments while the log's segments take more
    /// than this many bytes.
    pub max_total_bytes: Option<u64>,
}

impl Retention {
    /// The default: keep every segment forever, so the log stays the full
    /// history that replay, backup and audit read.
    pub const KEEP_FOREVER: Retention = Retention {
        max_age_ms: None,
        max_total_bytes: None,
    };
}

/// The wall clock, in milliseconds since the Unix epoch. Injected so that
/// retention tests need no sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// A clock reading `f`.
    pub fn new(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    /// The system clock.
    pub fn system() -> Self {
        Clock::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Options of `Log::open`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where file I/O goes.
    pub fs: Arc<dyn FileSystem>,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Bound on one record's payload; larger appends are refused.
    pub max_record_bytes: u32,
    /// A sparse index entry is kept at least every this many bytes.
    pub index_interval_bytes: u64,
    /// The active segment is kept this many bytes ahead of its records in
    /// zeros, written and made durable with a batch, so that later batches
    /// overwrite allocated blocks and their fdatasync has no file metadata
    /// to commit (docs/log-design.md, "Prepared space"). 0 turns it off:
    /// every batch then extends the file.
    pub prepare_bytes: u64,
    /// The index the first record of a new, empty log gets.
    pub initial_index: u64,
    /// Whether appends wait for fdatasync.
    pub sync: SyncMode,
    /// How much `open` checks.
    pub recovery: Recovery,
    /// When purged segments are deleted.
    pub retention: Retention,
    /// The wall clock retention compares record timestamps with.
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fs: Arc::new(StdFs),
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            index_interval_bytes: 4096,
            prepare_bytes: 1 << 20,
            initial_index: 0,
            sync: SyncMode::Fdatasync,
            recovery: Recovery::TailOnly,
            retention: Retention::KEEP_FOREVER,
            clock: Clock::system(),
        }
    }
}
