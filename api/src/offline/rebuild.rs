//! [`rebuild_partition`]: one partition's projections at a stop point,
//! rebuilt offline into a new store.
//!
//! The partition's snapshot is installed first if it lies at or before the
//! stop point; a snapshot past it cannot be used (nothing undoes entries),
//! and then the log is read from its first entry. Log entries after the
//! starting point are applied in order, in batches of `batch` commands,
//! each batch one transaction holding its changes and the position after
//! it — the node's own apply path, through the `StateMachine` trait. The
//! position stored is the node's too: the last entry's log id and the last
//! membership entry applied.

use std::ops::ControlFlow;
use std::path::Path;

use missive_log::ChainHash;
use missive_log::fs::StdFs;
use missive_log::verify::{Problem, read_dir};
use missive_proto::v1 as pb;
use missive_proto::v1::log_entry::Payload;
use missive_raft::offline::{decode_membership, open_snapshot, read_snapshot_head};
use missive_raft::types::{LeaderId, LogId, StoredMembership};
use missive_raft::{AppliedState, Command, CommandEntry, StateMachine};
use prost::Message;

use super::stop::{StopAt, Target, resolve};
use super::{OfflineError, Source};
use crate::apply::ChatStateMachine;

/// Commands applied per transaction. Larger than a node's apply batch
/// (`missive_raft::MAX_APPLY_BATCH`): a rebuild has no client waiting on
/// an entry, so it takes the fewest commits it can while a batch of
/// commands (a few MiB) stays small beside redb's cache.
pub const DEFAULT_BATCH: usize = 16_384;

/// Records read between two progress reports when nothing is applied
/// (entries a snapshot already covers).
const PROGRESS_EVERY: u64 = 8192;

/// Work done since the previous report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Log records read.
    pub entries: u64,
    /// Bytes of those records (headers and payloads).
    pub bytes: u64,
}

/// What a rebuild did.
#[derive(Clone, Debug)]
pub struct Rebuilt {
    /// The partition.
    pub partition: u32,
    /// The stop point, resolved.
    pub target: Target,
    /// The last index of the snapshot installed, if one was.
    pub snapshot: Option<u64>,
    /// The position of the rebuilt store: its last entry.
    pub last_applied: Option<LogId>,
    /// The timestamp of the last entry applied from the log.
    pub last_timestamp_ms: Option<u64>,
    /// The log's chain hash at `last_applied`, if known (from its record,
    /// or carried by the snapshot).
    pub chain_hash: Option<ChainHash>,
    /// Log records read and applied (after the snapshot).
    pub entries: u64,
    /// Among them, commands.
    pub commands: u64,
    /// Bytes of log records read, applied or skipped.
    pub bytes: u64,
    /// Transactions committed.
    pub batches: u64,
}

pub(crate) fn max_record_bytes() -> u32 {
    missive_log::Options::default().max_record_bytes
}

/// Refuses a log with damage; a torn tail (an unfinished last batch, which
/// no node acknowledged) is what a stopped node may leave and is not
/// replayed.
pub(crate) fn check_problem(dir: &Path, problem: Option<Problem>) -> Result<(), OfflineError> {
    match problem {
        Some(Problem::Corruption {
            segment,
            position,
            kind,
        }) => Err(OfflineError::Corruption {
            path: dir.to_owned(),
            segment,
            position,
            kind: kind.to_string(),
        }),
        Some(Problem::TornTail { .. }) | None => Ok(()),
    }
}

/// The commands read and not applied yet.
struct Pending {
    /// (log id, timestamp, command) in log order.
    entries: Vec<(LogId, u64, Command)>,
    /// The state after the last entry read (command or not).
    state: AppliedState,
    /// The last entry whose state is stored.
    stored: Option<LogId>,
}

/// Rebuilds partition `p` of `source` up to `stop` into a new store at
/// `out`, and returns its state machine (open on the store) with what it
/// did. `progress` is called from this thread after each batch and every
/// few thousand records read; the store is durable when this returns.
pub fn rebuild_partition(
    source: &Source,
    p: u32,
    stop: StopAt,
    out: &Path,
    batch: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(ChatStateMachine, Rebuilt), OfflineError> {
    if out.exists() {
        return Err(OfflineError::OutputExists(out.to_owned()));
    }
    let batch = batch.max(1);
    let target = resolve(source, p, stop)?;
    let snapshot_path = source.snapshot_path(p);
    let head = read_snapshot_head(&snapshot_path)?;
    let snapshot_index = head
        .as_ref()
        .and_then(|h| h.state.last_applied)
        .map(|id| id.index);
    let usable = snapshot_index.filter(|s| target.covers(*s));

    let mut sm = ChatStateMachine::offline(p, out.to_owned());
    let store = sm.store()?;
    let mut rebuilt = Rebuilt {
        partition: p,
        target,
        snapshot: None,
        last_applied: None,
        last_timestamp_ms: None,
        chain_hash: None,
        entries: 0,
        commands: 0,
        bytes: 0,
        batches: 0,
    };
    let mut pending = Pending {
        entries: Vec::with_capacity(batch.min(DEFAULT_BATCH)),
        state: AppliedState::default(),
        stored: None,
    };
    if usable.is_some()
        && let Some(snap) = open_snapshot(&snapshot_path)?
    {
        let state = snap.head.state.clone();
        let mut data = snap.data;
        sm.install_snapshot(&state, &mut data)
            .map_err(|e| OfflineError::Apply(e.to_string()))?;
        rebuilt.snapshot = state.last_applied.map(|id| id.index);
        rebuilt.last_applied = state.last_applied;
        rebuilt.chain_hash = snap.head.chain_hash;
        pending.stored = state.last_applied;
        pending.state = state;
    }
    if target == Target::Nothing {
        store.sync()?;
        return Ok((sm, rebuilt));
    }

    let dir = source.log_dir(p);
    // The next index to apply: the log must hold every entry from here.
    let mut next = rebuilt.snapshot.map_or(0, |s| s + 1);
    let mut unreported = Progress::default();
    let mut failed: Option<OfflineError> = None;
    let missing = |reason: String| OfflineError::Missing {
        partition: p,
        reason,
    };
    let report = read_dir(&StdFs, &dir, max_record_bytes(), |h, payload| {
        if !target.covers(h.index) {
            return ControlFlow::Break(());
        }
        let len = 64 + payload.len() as u64;
        rebuilt.bytes += len;
        unreported.entries += 1;
        unreported.bytes += len;
        if h.index < next {
            // Covered by the snapshot; its record still tells the hash.
            if Some(h.index) == rebuilt.snapshot {
                rebuilt.chain_hash = Some(h.chain_hash);
            }
            if unreported.entries >= PROGRESS_EVERY {
                progress(std::mem::take(&mut unreported));
            }
            return ControlFlow::Continue(());
        }
        if h.index != next {
            failed = Some(missing(match (snapshot_index, rebuilt.snapshot) {
                (_, Some(s)) => format!(
                    "entries {next}..{} after the snapshot at {s} are not in the log on disk",
                    h.index
                ),
                (Some(s), None) => format!(
                    "the snapshot at index {s} lies past the stop point, so the log is needed \
                     from its start, but entries {next}..{} are not on disk (deleted by \
                     retention, or never held by this replica)",
                    h.index
                ),
                (None, None) => format!(
                    "entries {next}..{} are not in the log on disk (deleted by retention, \
                     or never held by this replica)",
                    h.index
                ),
            }));
            return ControlFlow::Break(());
        }
        let entry = match pb::LogEntry::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                failed = Some(OfflineError::BadEntry {
                    path: dir.clone(),
                    index: h.index,
                    reason: e.to_string(),
                });
                return ControlFlow::Break(());
            }
        };
        let leader = entry.leader.unwrap_or_default();
        let log_id = LogId::new(
            LeaderId {
                term: leader.term,
                node_id: leader.node_id,
            },
            h.index,
        );
        match entry.payload {
            Some(Payload::Command(c)) => pending.entries.push((
                log_id,
                h.timestamp,
                Command {
                    body: c.body,
                    request_id: c.request_id,
                },
            )),
            Some(Payload::Membership(m)) => match decode_membership(&m) {
                Ok(m) => pending.state.membership = StoredMembership::new(Some(log_id), m),
                Err(e) => {
                    failed = Some(OfflineError::BadEntry {
                        path: dir.clone(),
                        index: h.index,
                        reason: e.to_string(),
                    });
                    return ControlFlow::Break(());
                }
            },
            Some(Payload::Blank(_)) | None => {}
        }
        pending.state.last_applied = Some(log_id);
        rebuilt.entries += 1;
        rebuilt.last_applied = Some(log_id);
        rebuilt.last_timestamp_ms = Some(h.timestamp);
        rebuilt.chain_hash = Some(h.chain_hash);
        next += 1;
        if pending.entries.len() >= batch {
            if let Err(e) = flush(&mut sm, &mut pending, &mut rebuilt) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            progress(std::mem::take(&mut unreported));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    check_problem(&dir, report.problem)?;
    // A snapshot proves its entries existed: past the stop point, with no
    // log to rebuild from, the state at the stop point is not here.
    if rebuilt.entries == 0
        && rebuilt.snapshot.is_none()
        && let Some(s) = snapshot_index
        && !target.covers(s)
    {
        return Err(missing(format!(
            "the snapshot at index {s} lies past the stop point and the log on disk holds \
             no entry to rebuild from"
        )));
    }
    if pending.stored != pending.state.last_applied {
        flush(&mut sm, &mut pending, &mut rebuilt)?;
    }
    progress(unreported);
    store.sync()?;
    Ok((sm, rebuilt))
}

/// Applies the pending commands, storing the state after the last entry
/// read with them.
fn flush(
    sm: &mut ChatStateMachine,
    pending: &mut Pending,
    rebuilt: &mut Rebuilt,
) -> Result<(), OfflineError> {
    let commands: Vec<CommandEntry<'_>> = pending
        .entries
        .iter()
        .map(|(log_id, timestamp_ms, command)| CommandEntry {
            log_id: *log_id,
            timestamp_ms: *timestamp_ms,
            command,
        })
        .collect();
    let replies = sm
        .apply(&commands, &pending.state)
        .and_then(|replies| sm.flush().map(|()| replies))
        .map_err(|e| OfflineError::Apply(e.to_string()))?;
    if replies.len() != commands.len() {
        return Err(OfflineError::Apply(format!(
            "{} replies to {} commands",
            replies.len(),
            commands.len()
        )));
    }
    rebuilt.commands += commands.len() as u64;
    rebuilt.batches += 1;
    pending.stored = pending.state.last_applied;
    pending.entries.clear();
    Ok(())
}
