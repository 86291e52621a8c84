//! Leader rebalancing: after failures and restarts, leadership drifts to
//! whoever won the elections, and one node may end up leading every
//! partition (all writes then land on one disk and one core). Each node
//! periodically hands the partitions it leads back to their preferred
//! leader — the member at position `p % n` of partition p's sorted voters,
//! the same placement `initialize` makes — once that member is healthy and
//! has the whole log.
//!
//! A member counts as healthy when this leader heard from it (a heartbeat or
//! replication acknowledgement, from openraft's metrics) within the last
//! [`HEALTHY_WITHIN`]; `move_leader` then waits until it has the whole log,
//! since openraft's transfer refuses a target that is behind. A node that is
//! down keeps no partition: the next election moves its partitions away,
//! and the rebalancer only moves them back once it answers again.

use std::time::Duration;

use openraft::Instant as _;

use super::Node;
use crate::error::Result;
use crate::state_machine::StateMachine;
use crate::types::NodeId;

/// How recently the preferred leader must have answered this leader.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(1);

impl<SM: StateMachine> Node<SM> {
    /// The preferred leader of partition `p`: position `p % n` of its sorted
    /// voters (`None` without voters).
    pub fn preferred_leader(&self, p: u32) -> Result<Option<NodeId>> {
        let m = self.metrics(p)?;
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        // voter_ids is ordered (a BTreeSet underneath); sort anyway so the
        // placement never depends on that.
        let mut voters = voters;
        voters.sort_unstable();
        Ok((!voters.is_empty()).then(|| voters[p as usize % voters.len()]))
    }

    /// Hands each partition this node leads to its preferred leader if that
    /// member is healthy; returns how many moved.
    pub async fn rebalance(&self) -> Result<u32> {
        let mut moved = 0;
        for p in 0..self.partitions() {
            let m = self.metrics(p)?;
            if m.current_leader != Some(self.inner.id) {
                continue;
            }
            let Some(wanted) = self.preferred_leader(p)? else {
                continue;
            };
            if wanted == self.inner.id {
                continue;
            }
            let healthy = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&wanted))
                .and_then(|acked| acked.as_ref())
                .is_some_and(|acked| acked.elapsed() < HEALTHY_WITHIN);
            if healthy && self.move_leader(p, wanted).await? {
                tracing::info!(partition = p, to = wanted, "leadership rebalanced");
                moved += 1;
            }
        }
        Ok(moved)
    }
}
