//! When a partition takes a snapshot.
//!
//! A snapshot writes out the whole state machine, so a policy that counts
//! entries (openraft's `LogsSinceLast`) makes every snapshot cost more than
//! the one before while the interval stays put: quadratic under steady
//! load. Here the trigger is the log a snapshot would leave behind it,
//! measured against the snapshot's own size:
//!
//! - never before one log segment's worth of records after the current
//!   snapshot (retention deletes whole segments, and a smaller snapshot
//!   interval buys a lagging replica nothing the log cannot give it);
//! - then, without retention, once those records take as many bytes as the
//!   current snapshot: what snapshots write stays within what the log
//!   wrote, however large the state grows;
//! - with a retention policy, at once, so the purge point — below which
//!   retention deletes — stays within a segment of the log's end.
//!
//! docs/raft-storage.md, "How often a partition snapshots".

/// What the decision looks at, for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// Bytes of the log's records after the current snapshot's last entry
    /// (all of them without a snapshot).
    pub log_bytes: u64,
    /// The current snapshot file's size; 0 without one.
    pub snapshot_bytes: u64,
    /// Whether the state machine has applied entries the snapshot lacks.
    pub applied_beyond: bool,
    /// The size at which the log seals a segment.
    pub segment_bytes: u64,
    /// Whether the log has a retention policy (segments below the purge
    /// point may be deleted).
    pub retention: bool,
}

impl Backlog {
    /// Whether a snapshot is due.
    pub(crate) fn snapshot_due(&self) -> bool {
        self.applied_beyond
            && self.log_bytes >= self.segment_bytes
            && (self.retention || self.log_bytes >= self.snapshot_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Backlog;

    const SEGMENT: u64 = 64 << 20;

    fn backlog(log_bytes: u64, snapshot_bytes: u64) -> Backlog {
        Backlog {
            log_bytes,
            snapshot_bytes,
            applied_beyond: true,
            segment_bytes: SEGMENT,
            retention: false,
        }
    }

    #[test]
    fn nothing_is_due_before_a_segment_of_log() {
        assert!(!backlog(SEGMENT - 1, 0).snapshot_due());
        assert!(backlog(SEGMENT, 0).snapshot_due());
    }

    #[test]
    fn without_retention_the_log_must_outgrow_the_snapshot() {
        let snapshot = 10 * SEGMENT;
        assert!(!backlog(snapshot - 1, snapshot).snapshot_due());
        assert!(backlog(snapshot, snapshot).snapshot_due());
    }

    #[test]
    fn with_retention_a_segment_of_log_is_enough() {
        let b = Backlog {
            retention: true,
            ..backlog(SEGMENT, 10 * SEGMENT)
        };
        assert!(b.snapshot_due());
        let short = Backlog {
            retention: true,
            ..backlog(SEGMENT - 1, 0)
        };
        assert!(!short.snapshot_due());
    }

    #[test]
    fn nothing_is_due_when_the_snapshot_has_everything_applied() {
        let b = Backlog {
            applied_beyond: false,
            ..backlog(100 * SEGMENT, 0)
        };
        assert!(!b.snapshot_due());
    }
}
