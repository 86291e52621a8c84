//! The one error type of missive-raft.
//!
//! openraft's storage traits speak `std::io::Error`, so every [`Error`] turns
//! into one (`From<Error> for io::Error`) with its message intact and a kind
//! that says what happened: I/O failures keep the operating system's kind,
//! corrupt or undecodable bytes are `InvalidData`, misuse is `InvalidInput`.
//!
//! Fatal errors (the disk or the bytes on it cannot be trusted) are kept apart
//! from errors that reject one call; [`Error::is_fatal`] tells which.

use std::io;
use std::path::PathBuf;

/// Result type of missive-raft.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised by an application's state machine, carried through as is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of missive-raft.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The partition's log failed (its own error says how, and whether it is
    /// fatal).
    #[error("log: {0}")]
    Log(#[from] missive_log::Error),

    /// A file of the raft store (metadata, snapshot) could not be read or
    /// written. Fatal: what reached the disk is unknown.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// The raft metadata file (vote, committed and purged log ids) fails its
    /// checks. Never repaired silently: a node that lost its vote could vote
    /// twice in one term.
    #[error("raft metadata file {path} is corrupt: {reason}")]
    CorruptMeta {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: &'static str,
    },

    /// An earlier write or sync of this file failed; every later write fails
    /// until the store is reopened, because what reached the disk is unknown
    /// and retrying an fsync can report success for data that was dropped.
    #[error("{path} is poisoned by an earlier I/O error ({cause}); reopen the store")]
    Poisoned {
        /// The file.
        path: PathBuf,
        /// The error that poisoned it.
        cause: String,
    },

    /// A log record's payload is not a valid `missive.v1.LogEntry` envelope.
    #[error("log record {index} does not hold a valid entry envelope: {reason}")]
    CorruptEnvelope {
        /// The record's index.
        index: u64,
        /// What failed.
        reason: String,
    },

    /// A log record was written by a newer (or broken) writer: its envelope
    /// version is not the one this build understands, so applying it could
    /// silently misapply it.
    #[error("log record {index} has envelope version {version}, this build reads only {known}")]
    UnknownEnvelopeVersion {
        /// The record's index.
        index: u64,
        /// The version it carries.
        version: u32,
        /// The version this build writes and reads.
        known: u32,
    },

    /// A snapshot file fails its checks.
    #[error("snapshot file {path} is corrupt: {reason}")]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// A membership configuration that openraft would reject (an empty voter
    /// set, or one node with two addresses).
    #[error("invalid membership: {0}")]
    InvalidMembership(String),

    /// Entries handed to `append` do not continue the entries before them.
    /// Rejected so that no entry is ever stored under an index it was not
    /// given.
    #[error("append of entries starting at index {found} does not follow index {last}")]
    NonContiguousAppend {
        /// The last index accepted so far.
        last: u64,
        /// The first index of the rejected entries.
        found: u64,
    },

    /// The thread that writes the log has stopped (the store is closing, or a
    /// previous error ended it).
    #[error("the log writer of {0} has stopped")]
    WriterStopped(PathBuf),

    /// The application's state machine failed.
    #[error("state machine: {0}")]
    StateMachine(BoxError),

    /// The node metadata file is unreadable or belongs to another node or
    /// cluster shape. Fatal: the node must not serve this directory.
    #[error("node metadata {path}: {reason}")]
    NodeMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A partition number outside the cluster's.
    #[error("partition {partition} does not exist (the cluster has {partitions})")]
    UnknownPartition {
        /// The partition asked for.
        partition: u32,
        /// How many the cluster has.
        partitions: u32,
    },

    /// This node does not lead the partition. Retryable: a write looks for
    /// the leader again; callers of `Node::write` never see it.
    #[error("node does not lead partition {partition} (leader: {leader:?})")]
    NotLeader {
        /// The partition.
        partition: u32,
        /// The leader, if known.
        leader: Option<crate::types::NodeId>,
    },

    /// No leader could take the call in time. Retryable later.
    #[error("partition {partition} is unavailable: {reason}")]
    Unavailable {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },

    /// A write was sent but its fate is unknown (the leader failed or lost
    /// leadership meanwhile): it may or may not commit. Not retried here,
    /// because retrying could apply it twice.
    #[error("write to partition {partition} has an unknown outcome: {reason}")]
    OutcomeUnknown {
        /// The partition.
        partition: u32,
        /// What happened.
        reason: String,
    },

    /// A call to a peer failed.
    #[error("peer call failed: {0}")]
    Rpc(Box<tonic::Status>),

    /// openraft refused an operation (for example initializing twice) or
    /// has stopped.
    #[error("raft: {0}")]
    Raft(String),

    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The internal server could not be set up.
    #[error("transport: {0}")]
    Transport(String),

    /// A backup could not be made or read: its target is busy or not a
    /// backup, or its manifest is invalid. Changes nothing of the node.
    #[error("backup {path}: {reason}")]
    Backup {
        /// The backup directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// True when the store can no longer be trusted without a restart.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Log(e) => e.is_fatal(),
            Error::Io { .. }
            | Error::CorruptMeta { .. }
            | Error::Poisoned { .. }
            | Error::CorruptEnvelope { .. }
            | Error::UnknownEnvelopeVersion { .. }
            | Error::CorruptSnapshot { .. }
            | Error::WriterStopped(_)
            | Error::StateMachine(_)
            | Error::NodeMeta { .. } => true,
            Error::InvalidMembership(_)
            | Error::NonContiguousAppend { .. }
            | Error::UnknownPartition { .. }
            | Error::NotLeader { .. }
            | Error::Unavailable { .. }
            | Error::OutcomeUnknown { .. }
            | Error::Rpc(_)
            | Error::Raft(_)
            | Error::Config(_)
            | Error::Transport(_)
            | Error::Backup { .. } => false,
        }
    }

    /// True for a write that surely was not proposed and may be sent again.
    pub fn is_retryable_write(&self) -> bool {
        matches!(self, Error::NotLeader { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt_snapshot(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::CorruptSnapshot {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An `io::Error` with this error's kind and message, for when the error
    /// itself must stay (one failed write reported to several callers).
    pub(crate) fn to_io(&self) -> io::Error {
        io::Error::new(self.kind(), self.to_string())
    }

    /// The `io::ErrorKind` openraft sees for this error.
    fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::Log(missive_log::Error::Io { source, .. }) => source.kind(),
            Error::Log(missive_log::Error::Corruption { .. })
            | Error::CorruptMeta { .. }
            | Error::CorruptEnvelope { .. }
            | Error::UnknownEnvelopeVersion { .. }
            | Error::CorruptSnapshot { .. }
            | Error::NodeMeta { .. } => io::ErrorKind::InvalidData,
            Error::Log(
                missive_log::Error::IndexMismatch { .. }
                | missive_log::Error::RecordTooLarge { .. }
                | missive_log::Error::InvalidRange { .. }
                | missive_log::Error::InvalidOption(_),
            )
            | Error::InvalidMembership(_)
            | Error::NonContiguousAppend { .. }
            | Error::UnknownPartition { .. }
            | Error::Config(_)
            | Error::Backup { .. } => io::ErrorKind::InvalidInput,
            Error::NotLeader { .. } | Error::Unavailable { .. } => io::ErrorKind::WouldBlock,
            Error::OutcomeUnknown { .. } | Error::Rpc(_) | Error::Transport(_) => {
                io::ErrorKind::ConnectionAborted
            }
            Error::Raft(_) => io::ErrorKind::Other,
            Error::Log(
                missive_log::Error::Purged { .. } | missive_log::Error::BeyondEnd { .. },
            ) => io::ErrorKind::NotFound,
            Error::Log(missive_log::Error::Locked(_)) => io::ErrorKind::WouldBlock,
            Error::WriterStopped(_) => io::ErrorKind::BrokenPipe,
            Error::Log(_) | Error::Poisoned { .. } | Error::StateMachine(_) => io::ErrorKind::Other,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}
