//! What `status()` reports of each partition, read from openraft's metrics.

use missive_proto::v1 as pb;
use openraft::RaftMetrics;

use crate::types::{NodeId, TypeConfig};

/// A node's view of every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node that reports.
    pub node_id: NodeId,
    /// One entry per partition, in order.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: u32,
    /// Its leader, if known.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last committed index known here.
    pub committed: Option<u64>,
    /// The last index applied to this node's state machine.
    pub applied: Option<u64>,
    /// The last index in this node's log.
    pub last_log_index: Option<u64>,
    /// Each follower's progress; empty unless this node leads.
    pub followers: Vec<FollowerStatus>,
    /// The members (voters and learners) and their internal addresses.
    pub members: Vec<(NodeId, String)>,
}

/// A follower's replication progress, seen from the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The follower.
    pub id: NodeId,
    /// The highest index known replicated to it.
    pub matched: Option<u64>,
    /// Entries it is behind the leader's last log index.
    pub lag: u64,
}

impl PartitionStatus {
    pub(crate) fn from_metrics(partition: u32, m: &RaftMetrics<TypeConfig>) -> Self {
        let last = m.last_log_index.unwrap_or(0);
        let followers = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let matched = matched.as_ref().map(|l| l.index);
                FollowerStatus {
                    id: *id,
                    matched,
                    lag: last.saturating_sub(matched.unwrap_or(0)),
                }
            })
            .collect();
        PartitionStatus {
            partition,
            leader: m.current_leader,
            term: m.current_term,
            committed: m.local_committed.as_ref().map(|l| l.index),
            applied: m.last_applied.as_ref().map(|l| l.index),
            last_log_index: m.last_log_index,
            followers,
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        }
    }
}

impl NodeStatus {
    /// The wire form.
    pub fn to_pb(&self) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: self.node_id,
            partitions: self
                .partitions
                .iter()
                .map(|p| pb::PartitionStatus {
                    partition: p.partition,
                    leader: p.leader,
                    term: p.term,
                    committed: p.committed,
                    applied: p.applied,
                    last_log_index: p.last_log_index,
                    followers: p
                        .followers
                        .iter()
                        .map(|f| pb::FollowerStatus {
                            id: f.id,
                            matched: f.matched,
                            lag: f.lag,
                        })
                        .collect(),
                    members: p
                        .members
                        .iter()
                        .map(|(id, addr)| pb::Node {
                            id: *id,
                            addr: addr.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
