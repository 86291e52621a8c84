//! `Membership` ↔ `missive.v1.Membership`.
//!
//! openraft keeps a joint configuration as voter-id sets plus one map of all
//! nodes (a node in the map but in no set is a learner); the envelope keeps
//! voter sets of (id, address) and a learner list. Both carry the same
//! information; decoding checks that a node has one address and one role.

use std::collections::{BTreeMap, BTreeSet};

use missive_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::types::{ClusterMembership, Node, NodeId};

pub(crate) fn membership_to_pb(m: &ClusterMembership) -> pb::Membership {
    let node = |id: NodeId| pb::Node {
        id,
        // A voter without a node entry cannot exist in a valid membership
        // (openraft validates it); an empty address keeps encoding total.
        addr: m.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default(),
    };
    pb::Membership {
        voter_sets: m
            .get_joint_config()
            .iter()
            .map(|set| pb::VoterSet {
                voters: set.iter().map(|id| node(*id)).collect(),
            })
            .collect(),
        learners: m.learner_ids().map(node).collect(),
    }
}

pub(crate) fn membership_from_pb(m: &pb::Membership) -> Result<ClusterMembership> {
    let mut nodes = BTreeMap::<NodeId, Node>::new();
    let mut add = |n: &pb::Node| -> Result<()> {
        match nodes.get(&n.id) {
            Some(known) if known.addr != n.addr => Err(Error::InvalidMembership(format!(
                "node {} has two addresses, {:?} and {:?}",
                n.id, known.addr, n.addr
            ))),
            _ => {
                nodes.insert(n.id, Node::new(n.addr.clone()));
                Ok(())
            }
        }
    };
    let mut configs = Vec::with_capacity(m.voter_sets.len());
    for set in &m.voter_sets {
        let mut ids = BTreeSet::new();
        for v in &set.voters {
            add(v)?;
            ids.insert(v.id);
        }
        configs.push(ids);
    }
    let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
    for l in &m.learners {
        if voters.contains(&l.id) {
            return Err(Error::InvalidMembership(format!(
                "node {} is listed as both voter and learner",
                l.id
            )));
        }
        add(l)?;
    }
    ClusterMembership::new(configs, nodes).map_err(|e| Error::InvalidMembership(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[NodeId]) -> BTreeMap<NodeId, Node> {
        ids.iter()
            .map(|id| (*id, Node::new(format!("10.0.0.{id}:7100"))))
            .collect()
    }

    #[test]
    fn joint_membership_with_learners_round_trips() {
        let m = ClusterMembership::new(
            vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])],
            nodes(&[1, 2, 3, 4, 5, 6]),
        )
        .expect("valid membership");
        let pb = membership_to_pb(&m);
        assert_eq!(pb.voter_sets.len(), 2);
        assert_eq!(pb.learners.iter().map(|n| n.id).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(membership_from_pb(&pb).expect("decodes"), m);
    }

    #[test]
    fn empty_membership_round_trips() {
        let m = ClusterMembership::default();
        assert_eq!(
            membership_from_pb(&membership_to_pb(&m)).expect("decodes"),
            m
        );
    }

    #[test]
    fn node_with_two_addresses_is_refused() {
        let pb = pb::Membership {
            voter_sets: vec![
                pb::VoterSet {
                    voters: vec![pb::Node {
                        id: 1,
                        addr: "a:1".into(),
                    }],
                },
                pb::VoterSet {
                    voters: vec![pb::Node {
                        id: 1,
                        addr: "b:1".into(),
                    }],
                },
            ],
            learners: vec![],
        };
        assert!(matches!(
            membership_from_pb(&pb),
            Err(Error::InvalidMembership(_))
        ));
    }

    #[test]
    fn empty_voter_set_is_refused() {
        let pb = pb::Membership {
            voter_sets: vec![pb::VoterSet { voters: vec![] }],
            learners: vec![],
        };
        assert!(matches!(
            membership_from_pb(&pb),
            Err(Error::InvalidMembership(_))
        ));
    }
}
