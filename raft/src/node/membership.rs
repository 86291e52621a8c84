//! Cluster operations: initialize every partition, add and remove nodes on
//! every partition, and spread leadership over the members.
//!
//! Membership changes run on a partition's leader. A call that arrives
//! elsewhere is sent on to each partition's leader with the partition named
//! (`add_node_on`, `remove_node_on`), which refuses if it no longer leads.
//!
//! Leader spreading: after initialization, partition p's leadership is
//! handed to the member at position `p % n` of the sorted member ids, once
//! that member has the leader's whole log (openraft's transfer refuses a
//! target that is behind). Restarts do not respread.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use missive_proto::v1 as pb;
use openraft::ChangeMembers;
use tokio::time::Instant;

use super::Node;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::types::{Node as Member, NodeId};

/// How long an operation waits for a partition to have a leader, or for a
/// leadership transfer to take effect.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the waits above look again.
const POLL: Duration = Duration::from_millis(20);

impl<SM: StateMachine> Node<SM> {
    /// Initializes every partition with `members` (this node among them),
    /// then spreads the leaders. Fails on a partition already initialized.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<String> {
        if !members.contains_key(&self.inner.id) {
            return Err(Error::Config(format!(
                "the members must include the initializing node {}",
                self.inner.id
            )));
        }
        for (id, n) in &members {
            self.inner.peers.learn(*id, &n.addr);
        }
        for p in 0..self.partitions() {
            self.raft(p)?
                .initialize(members.clone())
                .await
                .map_err(|e| Error::Raft(format!("partition {p}: {e}")))?;
        }
        let ids: Vec<NodeId> = members.keys().copied().collect();
        let mut spread = 0;
        for p in 0..self.partitions() {
            let wanted = ids[p as usize % ids.len()];
            if self.move_leader(p, wanted).await? {
                spread += 1;
            }
        }
        Ok(format!(
            "initialized {} partitions with {} members; {spread} leaders placed",
            self.partitions(),
            ids.len()
        ))
    }

    /// Whether the cluster is initialized: every partition has a
    /// membership (from its log or snapshot), as [`Node::initialize`]
    /// leaves them. Asks each partition's Raft core, so it is right as soon
    /// as the node has started, unlike metrics, which a core publishes a
    /// moment later. A cluster with some partitions initialized and others
    /// not is an error: `initialize` would refuse it too.
    pub async fn is_initialized(&self) -> Result<bool> {
        let mut initialized = Vec::new();
        for p in 0..self.partitions() {
            let raft = self.raft(p)?;
            if raft
                .is_initialized()
                .await
                .map_err(|e| Error::Raft(format!("partition {p}: {e}")))?
            {
                initialized.push(p);
            }
        }
        match initialized.len() {
            0 => Ok(false),
            n if n == self.partitions() as usize => Ok(true),
            _ => Err(Error::Config(format!(
                "only some partitions are initialized ({initialized:?}); the data directory \
                 was left half-initialized"
            ))),
        }
    }

    /// Waits for partition `p` to have a leader; returns it.
    async fn await_leader(&self, p: u32) -> Result<NodeId> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if let Some(l) = self.metrics(p)?.current_leader {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    partition: p,
                    reason: format!("no leader within {SETTLE_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// If this node leads `p`, hands leadership to `to` once `to` has the
    /// whole log, and waits until it leads. Returns whether `to` leads `p`.
    pub(super) async fn move_leader(&self, p: u32, to: NodeId) -> Result<bool> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut triggered = false;
        loop {
            let m = self.metrics(p)?;
            match m.current_leader {
                Some(l) if l == to => return Ok(true),
                Some(l) if l == self.inner.id && !triggered => {
                    let caught_up = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&to))
                        .and_then(|matched| matched.as_ref())
                        .is_some_and(|matched| Some(matched.index) >= m.last_log_index);
                    if caught_up {
                        self.raft(p)?
                            .trigger()
                            .transfer_leader(to)
                            .await
                            .map_err(|e| Error::Raft(e.to_string()))?;
                        triggered = true;
                    }
                }
                // Another node leads (or nobody yet): not ours to move.
                Some(l) if l != self.inner.id => return Ok(false),
                _ => {}
            }
            if Instant::now() >= deadline {
                tracing::warn!(partition = p, to, "leadership did not move in time");
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Adds node `id` at `addr` to every partition: a learner first, a voter
    /// once it has caught up.
    pub async fn add_node(&self, id: NodeId, addr: &str) -> Result<String> {
        for p in 0..self.partitions() {
            let leader = self.await_leader(p).await?;
            if leader == self.inner.id {
                self.add_node_on(p, id, addr).await?;
            } else {
                self.learn_member(p, leader)?;
                let req = pb::AddNodeRequest {
                    node: Some(pb::Node {
                        id,
                        addr: addr.to_owned(),
                    }),
                    partition: Some(p),
                };
                self.inner
                    .peers
                    .add_node(leader, req, SETTLE_TIMEOUT * 6)
                    .await
                    .map_err(|s| Error::Rpc(Box::new(s)))?;
            }
        }
        Ok(format!("node {id} is a voter of every partition"))
    }

    /// [`Node::add_node`] on partition `p` only, which this node must lead.
    pub async fn add_node_on(&self, p: u32, id: NodeId, addr: &str) -> Result<String> {
        self.inner.peers.learn(id, addr);
        let raft = self.raft(p)?;
        // Blocking: returns once the learner has caught up.
        raft.add_learner(id, Member::new(addr), true)
            .await
            .map_err(|e| self.membership_error(p, e))?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_error(p, e))?;
        Ok(format!("node {id} is a voter of partition {p}"))
    }

    /// Removes node `id` from every partition.
    pub async fn remove_node(&self, id: NodeId) -> Result<String> {
        for p in 0..self.partitions() {
            let leader = self.await_leader(p).await?;
            if leader == self.inner.id {
                self.remove_node_on(p, id).await?;
            } else {
                self.learn_member(p, leader)?;
                let req = pb::RemoveNodeRequest {
                    id,
                    partition: Some(p),
                };
                self.inner
                    .peers
                    .remove_node(leader, req, SETTLE_TIMEOUT)
                    .await
                    .map_err(|s| Error::Rpc(Box::new(s)))?;
            }
        }
        Ok(format!("node {id} left every partition"))
    }

    /// [`Node::remove_node`] on partition `p` only, which this node must lead.
    pub async fn remove_node_on(&self, p: u32, id: NodeId) -> Result<String> {
        self.raft(p)?
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_error(p, e))?;
        Ok(format!("node {id} left partition {p}"))
    }

    /// Makes sure the peer client knows where `id` is, from `p`'s membership.
    fn learn_member(&self, p: u32, id: NodeId) -> Result<()> {
        if let Some(addr) = self.members(p)?.get(&id) {
            self.inner.peers.learn(id, addr);
        }
        Ok(())
    }

    fn membership_error(
        &self,
        p: u32,
        e: openraft::errors::RaftError<
            crate::types::TypeConfig,
            openraft::errors::ClientWriteError<crate::types::TypeConfig>,
        >,
    ) -> Error {
        match e.forward_to_leader() {
            Some(f) => Error::NotLeader {
                partition: p,
                leader: f.leader_id,
            },
            None => Error::Raft(format!("partition {p}: {e}")),
        }
    }
}
