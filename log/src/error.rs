//! The one error type of missive-log.
//!
//! Fatal errors (`Io`, `Poisoned`, `Corruption`) are kept apart from errors
//! that only reject one call (`is_fatal` tells which): after a fatal error the
//! caller must stop using the log, or reopen it and let recovery decide.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result type of missive-log.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with a record or segment that failed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionKind {
    /// The file is shorter than a segment header.
    #[error("segment header is cut short")]
    ShortSegmentHeader,
    /// The segment does not start with the segment magic.
    #[error("segment header has the wrong magic")]
    BadSegmentMagic,
    /// The segment header's CRC does not match.
    #[error("segment header fails its CRC")]
    SegmentHeaderChecksum,
    /// A format version this code does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// A segment header sets a flag this code does not know.
    #[error("segment header sets unknown flags {0:#06x}")]
    UnknownSegmentFlags(u16),
    /// The segment's first index does not match its file name.
    #[error("segment header says first index {header}, its file name says {name}")]
    NameMismatch {
        /// First index in the header.
        header: u64,
        /// First index in the file name.
        name: u64,
    },
    /// A record is cut short by the end of the file.
    #[error("record is cut short")]
    ShortRecord,
    /// A record header lacks the record magic.
    #[error("record header has the wrong magic")]
    BadRecordMagic,
    /// A record's length field exceeds the configured maximum.
    #[error("record length {0} is out of bounds")]
    LengthOutOfBounds(u32),
    /// A record's CRC does not match.
    #[error("record fails its CRC")]
    RecordChecksum,
    /// A record's index is not the one after its predecessor.
    #[error("record has index {found}, expected {expected}")]
    IndexGap {
        /// The index the sequence calls for.
        expected: u64,
        /// The index the record carries.
        found: u64,
    },
    /// A record's chain hash does not follow from its predecessor's.
    #[error("record's chain hash does not follow from the previous record")]
    ChainBroken,
    /// A sealed segment does not start where the previous one ended.
    #[error("segment starts at index {found}, expected {expected}")]
    SegmentGap {
        /// The index the previous segment calls for.
        expected: u64,
        /// The segment's first index.
        found: u64,
    },
    /// A sealed segment holds no record.
    #[error("sealed segment holds no record")]
    EmptySealedSegment,
    /// The log's metadata file fails its checks.
    #[error("metadata file is invalid")]
    BadMeta,
}

/// Errors of missive-log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed. Fatal: the log is poisoned.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Stored bytes fail their checks somewhere other than a torn tail.
    /// Never repaired silently: the range must not be served.
    #[error("corruption in {segment} at byte {position}: {kind}")]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad record or header in that file.
        position: u64,
        /// What failed.
        kind: CorruptionKind,
    },
    /// An earlier write or fsync failed; the log refuses every call until it
    /// is reopened, because what reached the disk is unknown.
    #[error("log is poisoned by an earlier I/O error ({cause}); reopen it")]
    Poisoned {
        /// The error that poisoned the log.
        cause: Arc<str>,
    },
    /// Another process or handle holds the log directory.
    #[error("log directory {0} is locked by another process")]
    Locked(PathBuf),
    /// The index lies below the first visible index (purged).
    #[error("index {index} is purged; the first visible index is {first}")]
    Purged {
        /// The index asked for.
        index: u64,
        /// The first index still visible.
        first: u64,
    },
    /// The index lies at or beyond the end of the log.
    #[error("index {index} is beyond the end of the log (next index {next})")]
    BeyondEnd {
        /// The index asked for.
        index: u64,
        /// The next index the log will assign.
        next: u64,
    },
    /// The record was dropped by a truncation that ran while it was being
    /// read. Not a fault of the log: read again (the index may now lie
    /// beyond the end).
    #[error("index {index} was truncated away while it was being read")]
    Truncated {
        /// The index being read.
        index: u64,
    },
    /// An append asked for a specific first index that is not the next one.
    #[error("append expected to start at index {expected}, but the next index is {next}")]
    IndexMismatch {
        /// The index the caller expected.
        expected: u64,
        /// The log's next index.
        next: u64,
    },
    /// A record payload larger than the configured bound.
    #[error("record of {len} bytes exceeds the bound of {max} bytes")]
    RecordTooLarge {
        /// The payload length.
        len: usize,
        /// The configured bound.
        max: u32,
    },
    /// A range whose start lies after its end.
    #[error("invalid range {from}..{to}")]
    InvalidRange {
        /// Start of the range.
        from: u64,
        /// End of the range (exclusive).
        to: u64,
    },
    /// Invalid options passed to `Log::open`.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
}

impl Error {
    /// True when the log can no longer be used without reopening.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Corruption { .. } | Error::Poisoned { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        segment: impl Into<PathBuf>,
        position: u64,
        kind: CorruptionKind,
    ) -> Self {
        Error::Corruption {
            segment: segment.into(),
            position,
            kind,
        }
    }
}
