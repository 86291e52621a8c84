//! The openraft type configuration of a missive partition and the types it
//! names.
//!
//! - Node ids are `u64`; a [`Node`] carries the address peers reach it at.
//! - The leader id is openraft's "advanced" leader id, the pair (term, node
//!   id), which is what `missive.v1.LeaderId` stores with every entry.
//! - The Raft index of an entry is the missive-log record index it is stored
//!   under: the partition's log *is* its Raft log.
//! - An [`Entry`] carries its log id, the leader-assigned timestamp and a
//!   payload: blank, membership, or an application [`Command`] whose body is
//!   opaque bytes.
//!
//! # Invariants
//!
//! - An entry's `timestamp_ms` is `None` only between its creation by
//!   openraft on the leader and its append to the leader's own log store,
//!   which stamps it. Every entry read from a store, and so every entry a
//!   follower receives and every entry a state machine applies, has one; a
//!   follower stores the leader's value unchanged, which keeps the log's hash
//!   chain identical on every replica.

use std::fmt;

use openraft::entry::{RaftEntry, RaftPayload};
use openraft::{EntryPayload, Membership};

/// A node's id in a cluster.
pub type NodeId = u64;

/// A Raft term.
pub type Term = u64;

/// Identifies a leadership: (term, node id).
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<Term, NodeId>;

/// A vote: a leader id and whether a quorum granted it.
pub type Vote = openraft::impls::Vote<LeaderId>;

/// Identifies a log entry: the leader that proposed it and its index.
pub type LogId = openraft::LogId<LeaderId>;

/// What an entry does.
pub type Payload = EntryPayload<Command, NodeId, Node>;

/// A membership configuration (voter sets and learners, with addresses).
pub type ClusterMembership = Membership<NodeId, Node>;

/// A membership configuration and the log id of the entry that set it.
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, Node>;

/// Snapshot metadata: the last log id and membership it covers.
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, Node>;

/// The async runtime: tokio, through the crate openraft's `tokio-rt` feature
/// builds on (openraft's own re-export of it is deprecated).
pub type Runtime = openraft_rt_tokio::TokioRuntime;

openraft::declare_raft_types!(
    /// The type configuration of one missive partition's Raft group.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = Node,
        Term = Term,
        LeaderId = LeaderId,
        Vote = Vote,
        Payload = Payload,
        Entry = Entry,
        AsyncRuntime = Runtime,
);

/// A cluster member as the configuration records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Where peers reach the member's internal endpoint (`host:port`).
    pub addr: String,
}

impl Node {
    /// A node reachable at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Node { addr: addr.into() }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// An application command: opaque to raft, decoded by the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// The encoded command; its schema belongs to the state machine.
    pub body: Vec<u8>,
    /// Correlates the command with the call that proposed it (for answering
    /// it and for audits); never used to decide anything.
    pub request_id: String,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command({} bytes, request {:?})",
            self.body.len(),
            self.request_id
        )
    }
}

/// What applying one entry answered: opaque bytes the state machine encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// The encoded answer; empty for blank and membership entries.
    pub body: Vec<u8>,
}

/// One entry of a partition's Raft log.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The leader that proposed it and its index (= its missive-log index).
    pub log_id: LogId,
    /// Milliseconds since the Unix epoch, assigned by the leader's log store
    /// when it accepted the entry; see the module invariants.
    pub timestamp_ms: Option<u64>,
    /// What it does.
    pub payload: Payload,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.log_id, self.payload)
    }
}

impl RaftEntry for Entry {
    type CommittedLeaderId = LeaderId;
    type Payload = Payload;

    /// openraft creates entries on the leader without a clock: the timestamp
    /// is left for the leader's log store to assign.
    fn new(log_id: LogId, payload: Payload) -> Self {
        Entry {
            log_id,
            timestamp_ms: None,
            payload,
        }
    }

    fn log_id_parts(&self) -> (&LeaderId, u64) {
        (&self.log_id.leader_id, self.log_id.index)
    }

    fn set_log_id(&mut self, new: LogId) {
        self.log_id = new;
    }

    fn get_membership(&self) -> Option<ClusterMembership> {
        self.payload.get_membership()
    }
}
