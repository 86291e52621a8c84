//! The log retention flags of `missive node` and `missive serve`.
//!
//! Retention deletes whole sealed segments of a partition's log, oldest
//! first, and only those the node no longer needs: wholly below the purge
//! point (covered by the latest snapshot) and wholly at or below the index
//! the last completed backup holds, when a backup was ever taken
//! (docs/backup-and-audit.md). It runs each time a snapshot moves the purge
//! point. `--retention-max-age-days` also bounds history in the
//! projections: leaders expire messages and conversation events older than
//! it (missive_api::retention). Without these flags nothing is ever deleted.

use missive_log::Retention;

/// Milliseconds in a day, for `--retention-max-age-days`.
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Remove messages and conversation events older than this many days
    /// from the projections, and delete a partition's log segments whose
    /// newest record is older (only segments covered by the latest snapshot
    /// and the last completed backup). Default: keep forever.
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

impl RetentionArgs {
    /// How long history stays in the projections; `None`: forever.
    pub fn history(&self) -> Option<std::time::Duration> {
        self.retention_max_age_days
            .map(|d| std::time::Duration::from_millis(d.saturating_mul(DAY_MS)))
    }

    /// The chat options these flags set.
    pub fn chat_options(&self) -> missive_api::ChatOptions {
        missive_api::ChatOptions {
            history_retention: self.history(),
            ..Default::default()
        }
    }
}
