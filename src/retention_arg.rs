//! The log retention flags of `missive node` and `missive serve`.
//!
//! Retention deletes whole sealed segments of a partition's log, oldest
//! first, and only those the node no longer needs: wholly below the purge
//! point (covered by the latest snapshot) and wholly at or below the index
//! the last completed backup holds, when a backup was ever taken
//! (docs/backup-and-audit.md). It runs each time a snapshot moves the purge
//! point. Without these flags nothing is ever deleted.

use missive_log::Retention;

/// Milliseconds in a day, for `--retention-max-age-days`.
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Delete a partition's log segments whose newest record is older than
    /// this many days (only segments covered by the latest snapshot and the
    /// last completed backup). Default: keep forever.
    #[arg(long)]
    retention_max_age_days: Option<u64>,
    /// Delete a partition's oldest log segments while its log takes more
    /// than this many bytes (same bounds). Default: no limit.
    #[arg(long)]
    retention_max_bytes: Option<u64>,
}

impl RetentionArgs {
    /// The log's retention policy.
    pub fn policy(&self) -> Retention {
        Retention {
            max_age_ms: self
                .retention_max_age_days
                .map(|d| d.saturating_mul(DAY_MS)),
            max_total_bytes: self.retention_max_bytes,
        }
    }
}
