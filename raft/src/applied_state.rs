//! [`AppliedState`]: where a state machine stands — the last applied log id
//! and the membership in force — and its byte encoding.
//!
//! A state machine stores these bytes in the same atomic write as the changes
//! of the batch that produced them, so after a crash its state and its
//! position always agree. Snapshot files carry them in their header.
//!
//! # Encoding (little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | flags: bit 0 last applied present, bit 1 membership log id present |
//! | 2 | 24 | last applied: term, leader node id, index |
//! | 26 | 24 | membership log id: term, leader node id, index |
//! | 50 | 4 | membership length `n` |
//! | 54 | n | the membership, an encoded `missive.v1.Membership` |

use missive_proto::v1 as pb;
use prost::Message;

use crate::error::{Error, Result};
use crate::pb::{membership_from_pb, membership_to_pb};
use crate::types::{LeaderId, LogId, SnapshotMeta, StoredMembership};

const VERSION: u8 = 1;
const HAS_APPLIED: u8 = 1 << 0;
const HAS_MEMBERSHIP_LOG_ID: u8 = 1 << 1;
const FIXED_LEN: usize = 54;

/// The last applied log id and the membership in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last entry applied; `None` before the first.
    pub last_applied: Option<LogId>,
    /// The last membership applied and the log id of its entry.
    pub membership: StoredMembership,
}

impl AppliedState {
    /// The state after applying `entries` (in log order) to `self`.
    pub(crate) fn advance<'a>(&mut self, entries: impl IntoIterator<Item = &'a crate::Entry>) {
        for e in entries {
            self.last_applied = Some(e.log_id);
            if let crate::Payload::Membership(m) = &e.payload {
                self.membership = StoredMembership::new(Some(e.log_id), m.clone());
            }
        }
    }

    /// The snapshot metadata of a snapshot taken in this state.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        }
    }

    /// The state a snapshot with metadata `meta` puts a state machine in.
    pub fn from_snapshot_meta(meta: &SnapshotMeta) -> Self {
        AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        }
    }

    /// The bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        let membership = membership_to_pb(self.membership.membership()).encode_to_vec();
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = VERSION;
        if let Some(id) = &self.last_applied {
            b[1] |= HAS_APPLIED;
            put_log_id(&mut b[2..26], id);
        }
        if let Some(id) = self.membership.log_id() {
            b[1] |= HAS_MEMBERSHIP_LOG_ID;
            put_log_id(&mut b[26..50], id);
        }
        b[50..54].copy_from_slice(&(membership.len() as u32).to_le_bytes());
        b.extend_from_slice(&membership);
        b
    }

    /// Reads bytes written by [`AppliedState::encode`].
    pub fn decode(b: &[u8]) -> Result<AppliedState> {
        let bad = |reason: &str| Error::StateMachine(format!("applied state: {reason}").into());
        if b.len() < FIXED_LEN {
            return Err(bad("too short"));
        }
        if b[0] != VERSION {
            return Err(bad("unknown version"));
        }
        let flags = b[1];
        if flags & !(HAS_APPLIED | HAS_MEMBERSHIP_LOG_ID) != 0 {
            return Err(bad("unknown flags"));
        }
        let len = u32::from_le_bytes([b[50], b[51], b[52], b[53]]) as usize;
        if b.len() != FIXED_LEN + len {
            return Err(bad("length does not match"));
        }
        let membership = pb::Membership::decode(&b[FIXED_LEN..])
            .map_err(|e| bad(&e.to_string()))
            .and_then(|m| membership_from_pb(&m))?;
        Ok(AppliedState {
            last_applied: (flags & HAS_APPLIED != 0).then(|| get_log_id(&b[2..26])),
            membership: StoredMembership::new(
                (flags & HAS_MEMBERSHIP_LOG_ID != 0).then(|| get_log_id(&b[26..50])),
                membership,
            ),
        })
    }
}

fn put_log_id(b: &mut [u8], id: &LogId) {
    b[0..8].copy_from_slice(&id.leader_id.term.to_le_bytes());
    b[8..16].copy_from_slice(&id.leader_id.node_id.to_le_bytes());
    b[16..24].copy_from_slice(&id.index.to_le_bytes());
}

fn get_log_id(b: &[u8]) -> LogId {
    let u = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    LogId::new(
        LeaderId {
            term: u(0),
            node_id: u(8),
        },
        u(16),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::types::{ClusterMembership, Node};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id: 2 }, index)
    }

    #[test]
    fn states_round_trip() {
        let m = ClusterMembership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, Node::new("a:1")),
                (2, Node::new("b:1")),
                (3, Node::new("c:1")),
                (4, Node::new("d:1")),
            ]),
        )
        .expect("valid");
        for s in [
            AppliedState::default(),
            AppliedState {
                last_applied: Some(log_id(3, 99)),
                membership: StoredMembership::new(Some(log_id(2, 40)), m),
            },
        ] {
            assert_eq!(AppliedState::decode(&s.encode()).expect("decodes"), s);
        }
    }

    #[test]
    fn truncated_bytes_are_refused() {
        let s = AppliedState {
            last_applied: Some(log_id(1, 1)),
            ..AppliedState::default()
        };
        let b = s.encode();
        for len in 0..b.len() {
            assert!(AppliedState::decode(&b[..len]).is_err(), "length {len}");
        }
    }
}
