//! Turning a rebuilt partition into the start of a new cluster: a new
//! history epoch, a position that names the new cluster, and the partition
//! directory seeded with the state as its snapshot and an empty log that
//! continues the old log's hash chain.
//!
//! Why the state is a snapshot and not a copy of the old log: the old log's
//! membership entries name the old cluster's nodes and addresses, and its
//! log ids carry the old terms. A node that replayed them would try to
//! reach those nodes. A snapshot carries one membership — the new cluster's
//! — and its log id is chosen here: term 0, under every term the new
//! cluster elects, so the new leader's first entry (term 1) follows it
//! as Raft requires. The log after it starts empty at the next index and
//! chains on the old log's hash at the restore point, so `missive log
//! verify` on the new log and a comparison with the backup's records agree
//! on every hash up to that point.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use missive_raft::offline::seed_partition;
use missive_raft::types::{ClusterMembership, LeaderId, LogId, StoredMembership};
use missive_raft::{AppliedState, Node, NodeId, SnapshotSource, StateMachine};

use super::{OfflineError, Rebuilt};
use crate::apply::ChatStateMachine;
use crate::store::{self, Store};

/// The epoch of a store (0 if it never had one).
pub fn epoch_of(store: &Store) -> Result<u64, OfflineError> {
    let txn = store.read()?;
    Ok(crate::query::epoch(&txn)?)
}

/// An epoch no earlier history used: past every old epoch, and the time
/// of the restore (ms since the Unix epoch) when that is larger, so two
/// restores of the same backup at different times get different epochs
/// and a client holding a token of one resyncs on the other.
pub fn new_epoch(old_epochs: impl IntoIterator<Item = u64>, now_ms: u64) -> u64 {
    let past = old_epochs.into_iter().max().unwrap_or(0).saturating_add(1);
    past.max(now_ms)
}

/// The position a restored partition starts from: the rebuilt store's
/// last index under term 0, with a one-node membership of `node` at
/// `addr`.
pub fn restored_state(
    last_index: u64,
    node: NodeId,
    addr: &str,
) -> Result<AppliedState, OfflineError> {
    let log_id = LogId::new(
        LeaderId {
            term: 0,
            node_id: node,
        },
        last_index,
    );
    let membership = ClusterMembership::new(
        vec![BTreeSet::from([node])],
        BTreeMap::from([(node, Node::new(addr))]),
    )
    .map_err(|e| OfflineError::Apply(format!("a one-node membership: {e}")))?;
    Ok(AppliedState {
        last_applied: Some(log_id),
        membership: StoredMembership::new(Some(log_id), membership),
    })
}

/// Makes the rebuilt partition `rebuilt` (whose store `sm` holds) the
/// start of a new cluster in the fresh partition directory `pdir`: stores
/// `state` (see [`restored_state`]) and `epoch` in the projections, then
/// seeds `pdir` with a snapshot of them and an empty log chaining on the
/// old log's hash at the restore point. Blocking.
pub fn seed_restored(
    sm: &mut ChatStateMachine,
    rebuilt: &Rebuilt,
    pdir: &Path,
    state: &AppliedState,
    epoch: u64,
) -> Result<(), OfflineError> {
    let last = rebuilt.last_applied.ok_or_else(|| OfflineError::Missing {
        partition: rebuilt.partition,
        reason: "no entry at or before the restore point".into(),
    })?;
    if state.last_applied.map(|id| id.index) != Some(last.index) {
        return Err(OfflineError::Apply(format!(
            "the restored state is at {:?}, the rebuilt store at {}",
            state.last_applied, last.index
        )));
    }
    let hash = rebuilt.chain_hash.ok_or_else(|| OfflineError::Missing {
        partition: rebuilt.partition,
        reason: format!(
            "the log's chain hash at index {} is unknown (neither its record nor a snapshot \
             carrying it is here)",
            last.index
        ),
    })?;
    // The new position, through the state machine's own write (no command).
    sm.apply(&[], state)
        .and_then(|_| sm.flush())
        .map_err(|e| OfflineError::Apply(e.to_string()))?;
    let s = sm.store()?;
    let txn = s.write()?;
    txn.open_table(store::META)
        .map_err(store::StoreError::from)?
        .insert(store::EPOCH_KEY, epoch.to_be_bytes().as_slice())
        .map_err(store::StoreError::from)?;
    s.commit(txn, 0)?;
    s.sync()?;
    let view = sm
        .begin_snapshot()
        .map_err(|e| OfflineError::Apply(e.to_string()))?;
    seed_partition(pdir, state, hash, |out| view.write_to(out))?;
    Ok(())
}
