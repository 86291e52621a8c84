//! [`Node::backup`]: a running node writes a consistent backup of its data
//! while writes go on (the layout and manifest are `crate::backup`'s).
//!
//! Per partition: a fresh snapshot of the state machine is built first (at
//! the index it had applied, A₀); then the index it has applied by now, A
//! ≥ A₀, is the backup's point for that partition. Everything up to A is
//! committed, so the log's records up to A never change; once they are
//! durable in this node's log, sealed segments are copied as they are and
//! the active one up to the end of record A. The snapshot covers at most
//! A, so snapshot plus log replays to exactly the state at A. Writes
//! acknowledged through this node before the backup began were applied
//! here before it answered them, so they lie at or below A.

use std::path::Path;
use std::time::Duration;

use super::{Node, partition_dir};
use crate::backup::{Manifest, PartitionSource, write_backup, write_watermark};
use crate::error::{Error, Result};
use crate::log_store::LOG_DIR;
use crate::state_machine::StateMachine;

/// How long a backup waits for this node's log to hold, durably, the
/// entries its state machine has applied (a follower may apply an entry a
/// moment before its own copy is written).
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// Pause between two looks at the log while waiting for it.
const DURABLE_POLL: Duration = Duration::from_millis(5);

impl<SM: StateMachine> Node<SM> {
    /// Writes a backup of every partition into `to` (a directory on this
    /// node's file system, created if needed), incrementally when it holds
    /// an earlier backup. Returns the manifest written last.
    pub async fn backup(&self, to: &Path) -> Result<Manifest> {
        let mut sources = Vec::new();
        for (p, part) in self.inner.partitions.iter().enumerate() {
            let p = p as u32;
            let snap = part
                .sm
                .snapshot_now()
                .await
                .map_err(|e| Error::io("build snapshot", &part.dir, e))?;
            let snapshot_index = snap.meta.last_log_id.map(|l| l.index);
            let up_to = part.sm.applied().last_applied.map(|l| l.index);
            if let Some(up_to) = up_to {
                self.wait_durable(p, up_to).await?;
            }
            sources.push(PartitionSource {
                partition: p,
                log_dir: part.dir.join(LOG_DIR),
                up_to,
                snapshot: Some((snap.snapshot, snapshot_index)),
            });
        }
        let data = self
            .inner
            .partitions
            .first()
            .and_then(|p| p.dir.parent())
            .and_then(Path::parent)
            .map(Path::to_owned)
            .ok_or_else(|| Error::Config("a node has at least one partition".into()))?;
        debug_assert_eq!(partition_dir(&data, 0), self.inner.partitions[0].dir);
        let to = to.to_owned();
        let node_id = Some(self.inner.id);
        let manifest = tokio::task::spawn_blocking(move || {
            write_backup(&data, &to, "online", node_id, sources)
        })
        .await
        .map_err(|e| Error::Raft(format!("backup task failed: {e}")))??;
        // The backup is complete: retention may now delete what it holds,
        // and nothing after it.
        for p in &manifest.partitions {
            let (Some(index), Ok(part)) = (p.committed_index, self.partition(p.partition)) else {
                continue;
            };
            let pdir = part.dir.clone();
            tokio::task::spawn_blocking(move || write_watermark(&pdir, index))
                .await
                .map_err(|e| Error::Raft(format!("backup task failed: {e}")))??;
            if let Some(log) = part.sm.log() {
                log.set_retention_floor(index);
            }
        }
        Ok(manifest)
    }

    /// Waits (at most [`DURABLE_WAIT`]) until partition `p`'s log holds
    /// entry `index` durably.
    async fn wait_durable(&self, p: u32, index: u64) -> Result<()> {
        let part = self.partition(p)?;
        let Some(log) = part.sm.log() else {
            return Err(Error::Raft(format!("partition {p}'s log is closed")));
        };
        let deadline = tokio::time::Instant::now() + DURABLE_WAIT;
        while log.log_state().next_index <= index {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    partition: p,
                    reason: format!("entry {index} is applied but not yet in this node's log"),
                });
            }
            tokio::time::sleep(DURABLE_POLL).await;
        }
        Ok(())
    }
}
