//! The state a partition's log store, its readers and its writer thread
//! share, and the blocking operations on it.
//!
//! A `PartitionLog` is the missive-log [`Log`] of one partition (the Raft log
//! itself: Raft index = record index, each payload an encoded
//! `missive.v1.LogEntry`), the raft metadata file beside it, and the overlay
//! of entries accepted but not yet durable.
//!
//! # Layout on disk
//!
//! ```text
//! <partition dir>/raft-meta   vote, committed and last purged log id (see `meta`)
//! <partition dir>/log/        the missive-log segments
//! ```
//!
//! # Invariants
//!
//! - Only the writer thread changes the log (append, truncate, purge), in the
//!   order openraft issued the calls; readers never wait for it.
//! - The purged log id is durable in `raft-meta` before the log's purge
//!   point moves, so the term of the last purged entry is never lost; a crash
//!   in between is finished when the store is reopened.
//! - Every method here may block on disk I/O: the async shell calls them on
//!   the writer thread or through `spawn_blocking`, except the overlay-only
//!   ones, which take a short lock and never do I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use missive_log::{ChainHash, Log, LogState, Options, Record, Retention};
use tokio::sync::watch;

use super::meta::{MetaFile, RaftMeta};
use super::pending::Pending;
use crate::error::{Error, Result};
use crate::pb::{decode_entry, encode_entry};
use crate::snapshot::SnapshotDir;
use crate::types::{ClusterMembership, Entry, LogId, NodeId, Payload, Vote};

/// Name of the log's directory inside a partition directory.
pub const LOG_DIR: &str = "log";

/// The log, metadata and overlay of one partition.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    /// The partition directory (named in errors and logs).
    dir: PathBuf,
    /// The records: the durable Raft log.
    log: Log,
    /// Vote, committed and purged log ids.
    meta: MetaFile,
    /// Entries accepted by `append` and not yet durable.
    pending: Mutex<Pending>,
    /// Options the log was opened with; its clock stamps leader entries.
    opts: Options,
    /// Why a write of overlay entries failed, once one has. Those entries
    /// left the overlay and will never reach the log, so a read past the
    /// log's end would come back silently short — and openraft, which may
    /// already count them as committed (`committed ≤ flushed` need not
    /// hold), would take a short apply stream as applied. Reads fail
    /// instead, as the failed write itself does (found by the chaos test,
    /// which fails a follower's fdatasync).
    failed_write: Mutex<Option<String>>,
    /// The partition's snapshot directory, once a state machine store is
    /// opened with this log. A purge past the log's end (a snapshot newer
    /// than the log) takes from it the chain hash of the snapshot's last
    /// entry, to continue the log's chain from. Set once; without it such a
    /// purge restarts the chain.
    snapshots: OnceLock<Arc<SnapshotDir>>,
    /// This node's id, once known: the log is then told apart as its
    /// partition's only voter (`meta`, "The sole voter"). Set once.
    own_id: OnceLock<NodeId>,
    /// Dropped after `log` (fields drop in declaration order), which tells
    /// the receivers the log is closed and its directory unlocked.
    closed: watch::Sender<()>,
}

impl PartitionLog {
    /// Opens (creating if needed) the partition in `dir`.
    pub fn open(dir: &Path, opts: Options) -> Result<PartitionLog> {
        opts.fs
            .create_dir_all(dir)
            .map_err(|e| Error::io("create dir", dir, e))?;
        let meta = MetaFile::open(opts.fs.clone(), dir)?;
        let log = Log::open(dir.join(LOG_DIR), opts.clone())?;
        // Finish a purge a crash interrupted between its two steps, with
        // the chain hash it carried (durable in `raft-meta` before the log
        // was touched), so a jump past the log's end continues the chain.
        let m = meta.get();
        if let Some(purged) = m.purged
            && purged.index >= log.state().first_index
        {
            tracing::info!(dir = %dir.display(), index = purged.index, "finishing an interrupted purge");
            match m.purged_hash {
                Some(hash) => log.purge_with_hash(purged.index, hash)?,
                None => log.purge(purged.index)?,
            }
        }
        // Retention keeps what the last completed backup does not hold.
        if let Some(index) = crate::backup::read_watermark(dir)? {
            log.set_retention_floor(index);
        }
        let last_timestamp = match last_record(&log)? {
            Some(e) => e.timestamp_ms.unwrap_or(0),
            None => 0,
        };
        Ok(PartitionLog {
            dir: dir.to_owned(),
            log,
            meta,
            pending: Mutex::new(Pending::new(last_timestamp)),
            opts,
            failed_write: Mutex::new(None),
            snapshots: OnceLock::new(),
            own_id: OnceLock::new(),
            closed: watch::Sender::new(()),
        })
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Every change to the overlay is completed under the lock without
        // panicking paths in between, so a poisoned lock is still coherent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once this log is closed (every handle dropped) and its
    /// directory unlocked.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut rx = self.closed.subscribe();
        async move {
            // Nothing is ever sent: `changed` fails exactly when the sender,
            // and with it the log, is dropped.
            while rx.changed().await.is_ok() {}
        }
    }

    /// Bounds the log's retention to segments at or below `index` (the
    /// last index a completed backup holds).
    pub fn set_retention_floor(&self, index: u64) {
        self.log.set_retention_floor(index);
    }

    /// The durable metadata.
    pub fn meta(&self) -> RaftMeta {
        self.meta.get()
    }

    /// The underlying log's extent and head hash.
    pub fn log_state(&self) -> LogState {
        self.log.state()
    }

    /// Bytes of the log's records after entry `index` ([`Log::bytes_after`]).
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        self.log.bytes_after(index)
    }

    /// The size at which the log seals a segment.
    pub fn segment_bytes(&self) -> u64 {
        self.opts.segment_bytes
    }

    /// Whether the log has a retention policy, which deletes sealed
    /// segments below the purge point.
    pub fn has_retention(&self) -> bool {
        self.opts.retention != Retention::KEEP_FOREVER
    }

    /// Links the partition's snapshot directory (see `snapshots`). A second
    /// link is ignored: one log has one snapshot directory.
    pub fn link_snapshots(&self, snapshots: Arc<SnapshotDir>) {
        if self.snapshots.set(snapshots).is_err() {
            tracing::warn!(dir = %self.dir.display(), "a second state machine store linked to this log is ignored");
        }
    }

    /// The chain hash of entry `index`, durable or not: from the log (which
    /// also knows it at its purge point), or, for an entry still in the
    /// overlay, computed from the log's head hash exactly as the writer
    /// will chain it. `None` if this replica cannot know it: the entry lies
    /// below its purge point. Blocking.
    pub fn chain_hash_at(&self, index: u64) -> Result<Option<ChainHash>> {
        // The overlay lock is taken before the log's state is read: the
        // writer removes entries from the overlay only after the log holds
        // them, so under the lock every entry from the log's end on is
        // still in the overlay.
        let pending = self.pending();
        let st = self.log.state();
        if index < st.next_index {
            drop(pending);
            return match self.log.chain_hash_at(index) {
                Ok(hash) => Ok(Some(hash)),
                Err(missive_log::Error::Purged { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let mut hash = st.head_hash;
        let mut at = st.next_index;
        let mut buf = Vec::new();
        for e in pending.range(st.next_index, index + 1) {
            if e.log_id.index != at {
                return Ok(None);
            }
            buf.clear();
            encode_entry(e, &mut buf);
            let ts = e
                .timestamp_ms
                .expect("invariant: the overlay stamps every entry it accepts");
            hash = missive_log::format::chain_hash(&hash, at, ts, &buf);
            at += 1;
        }
        Ok((at == index + 1).then_some(hash))
    }

    /// Names this node. Until it is named the log never counts it as its
    /// partition's only voter, and every committed log id costs an
    /// fdatasync. A second call is ignored.
    pub fn set_own_id(&self, id: NodeId) {
        let _ = self.own_id.set(id);
    }

    /// Makes `vote` durable. A vote for another node ends this node's
    /// standing as the sole voter in the same write: only a node that
    /// leads, or will, may count its own log as committed. Blocking.
    pub fn save_vote(&self, vote: Vote) -> Result<()> {
        self.meta.update(|m| {
            m.vote = Some(vote);
            if !self.names_self(&vote) {
                m.sole_voter = false;
            }
        })
    }

    /// Whether `vote` is this node's own.
    fn names_self(&self, vote: &Vote) -> bool {
        self.own_id.get() == Some(&vote.leader_id().node_id)
    }

    /// Makes `committed` durable. Blocking.
    pub fn save_committed(&self, committed: Option<LogId>) -> Result<()> {
        if self.note_committed(committed) {
            return Ok(());
        }
        self.meta.update(|m| m.committed = committed)
    }

    /// Takes `committed` without any I/O when the log holds it durably
    /// already: this node is its partition's sole voter, and its log holds
    /// `committed` (see `meta`, "The sole voter"). Returns whether it did.
    /// Never blocks.
    pub fn note_committed(&self, committed: Option<LogId>) -> bool {
        let held = committed.is_none_or(|c| c.index < self.log.state().next_index);
        held && self.meta.note_committed(committed)
    }

    /// Whether `m` names this node as the only voter (learners aside).
    fn names_sole_voter(&self, m: &ClusterMembership) -> bool {
        let Some(own) = self.own_id.get() else {
            return false;
        };
        matches!(m.get_joint_config().as_slice(), [voters] if voters.len() == 1 && voters.contains(own))
    }

    /// Clears the sole-voter flag, durably, before something that could
    /// leave a durable entry uncommitted. Blocking.
    fn end_sole_voter(&self) -> Result<()> {
        // No I/O when the flag is clear already: `update` writes changes only.
        self.meta.update(|m| m.sole_voter = false)
    }

    /// The committed log id a restart starts from: the saved one, or, for a
    /// sole voter, the log's last entry (`last`, its last durable log id).
    pub fn committed_at_start(&self, last: Option<LogId>) -> Option<LogId> {
        let m = self.meta.get();
        if m.sole_voter {
            last
        } else {
            m.committed.min(last)
        }
    }

    /// Puts `entries` in the overlay, stamping the ones a leader just
    /// created. Returns the first and last index, or `None` for no entries.
    /// Never blocks on I/O.
    pub fn accept(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Option<(u64, u64)>> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return Ok(None);
        };
        let mut pending = self.pending();
        if !pending.in_flight() {
            // Nothing is in flight (openraft waits for truncations and
            // purges), so the log's end is where these must go: refuse a
            // misplaced batch now, before any reader can see it.
            let st = self.log.state();
            if first != st.next_index && !self.adopts(&st, first) {
                return Err(missive_log::Error::IndexMismatch {
                    expected: first,
                    next: st.next_index,
                }
                .into());
            }
        }
        let clock = &self.opts.clock;
        pending.push(entries, || clock.now_ms())
    }

    /// Whether the log, in state `st`, takes `first` as its next index
    /// although it is not: only a fresh, empty store does, as an in-memory
    /// map would. openraft never relies on this — after a snapshot it purges
    /// first, which moves the log itself — but its conformance suite appends
    /// to fresh stores at any index. Nothing is skipped over: the log holds
    /// no record.
    fn adopts(&self, st: &LogState, first: u64) -> bool {
        st.first_index == st.next_index && first > st.next_index && self.meta().purged.is_none()
    }

    /// Drops the overlay's entries from `first` on: their write will never
    /// happen.
    pub fn discard_from(&self, first: u64) {
        self.pending().remove_from(first);
    }

    /// Writes the overlay's entries `first..=last` to the log and returns
    /// once they are durable (one write, one fdatasync). Blocking; called by
    /// the writer thread only.
    pub fn write(&self, first: u64, last: u64) -> Result<()> {
        let result = self.write_inner(first, last);
        let mut pending = self.pending();
        match &result {
            // Readable from the log now; the overlay keeps the newest
            // for the reads that follow.
            Ok(()) => pending.durable_through(last),
            // They will never be durable: stop showing them to readers,
            // and make every later read fail rather than miss them.
            Err(e) => {
                pending.remove_from(first);
                *self
                    .failed_write
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        }
        result
    }

    /// Fails once a write of overlay entries has failed (see
    /// `failed_write`).
    pub fn check_readable(&self) -> Result<()> {
        let failed = self
            .failed_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*failed {
            None => Ok(()),
            Some(cause) => Err(Error::Poisoned {
                path: self.dir.join(LOG_DIR),
                cause: cause.clone(),
            }),
        }
    }

    fn write_inner(&self, first: u64, last: u64) -> Result<()> {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        // What the batch does to this node's standing as the sole voter:
        // whether any membership in it names other voters, and whether its
        // last membership names this node alone.
        let mut others_vote = false;
        let mut ends_sole = false;
        {
            let pending = self.pending();
            for e in pending.range(first, last + 1) {
                if let Payload::Membership(m) = &e.payload {
                    ends_sole = self.names_sole_voter(m);
                    others_vote |= !ends_sole;
                }
                let start = buf.len();
                encode_entry(e, &mut buf);
                let ts = e
                    .timestamp_ms
                    .expect("invariant: the overlay stamps every entry it accepts");
                spans.push((ts, start..buf.len()));
            }
        }
        let records: Vec<Record<'_>> = spans
            .iter()
            .map(|(ts, span)| Record {
                timestamp: *ts,
                payload: &buf[span.clone()],
            })
            .collect();
        if records.len() as u64 != last - first + 1 {
            // The overlay lost entries a queued append refers to: only a
            // failed earlier write does that, and it has reported already.
            return Err(Error::NonContiguousAppend {
                last: first.saturating_sub(1),
                found: first,
            });
        }
        let st = self.log.state();
        if self.adopts(&st, first) {
            self.log.purge(first - 1)?;
        }
        if others_vote {
            // Entries after that membership need other nodes' copies.
            self.end_sole_voter()?;
        }
        // `append_at` fails, writing nothing, unless `first` is the log's next
        // index: an entry is never stored under an index it was not given.
        // It returns after the fdatasync of the batch.
        self.log.append_at(first, &records)?;
        if ends_sole {
            // Only while no vote names another node (as `save_vote` keeps it).
            self.meta.update(|m| {
                if m.vote.is_none_or(|v| self.names_self(&v)) {
                    m.sole_voter = true;
                }
            })?;
        }
        Ok(())
    }

    /// Drops every entry after `after` (every entry, for `None`). Durable
    /// before it returns. Blocking; called by the writer thread only.
    pub fn truncate_after(&self, after: Option<LogId>) -> Result<()> {
        let from = match after {
            Some(id) => id.index + 1,
            None => self.log.state().first_index,
        };
        // A sole voter's log is never cut back; if it is, what it held is
        // no longer all committed.
        self.end_sole_voter()?;
        self.pending().remove_from(from);
        self.log.truncate_from(from)?;
        Ok(())
    }

    /// Purges every entry up to and including `upto`. Blocking; called by
    /// the writer thread only.
    pub fn purge(&self, upto: LogId) -> Result<()> {
        if self.meta().purged.is_some_and(|p| p >= upto) {
            return Ok(());
        }
        let hash = self.purge_hash(upto)?;
        if upto.index >= self.log.state().next_index {
            // A snapshot from a leader replaces the log: this node follows.
            self.end_sole_voter()?;
        }
        // First the term and the hash, durable: once the log's purge point
        // moves, this file is the only place that remembers which entry was
        // last purged, and a purge past the log's end cut short by a crash
        // is finished on reopen with this hash.
        self.meta.update(|m| {
            m.purged = Some(upto);
            m.purged_hash = hash;
        })?;
        self.pending().remove_through(upto.index);
        // Logical in the log: the segments stay until retention deletes
        // them. With `upto` at or past the end (a snapshot newer than the
        // log) the log continues at `upto + 1`, chaining on the snapshot's
        // hash, so its chain hashes match the replicas that hold the
        // entries in between.
        match hash {
            Some(h) => self.log.purge_with_hash(upto.index, h)?,
            None => self.log.purge(upto.index)?,
        }
        Ok(())
    }

    /// The chain hash of `upto`, the entry a purge ends at: from the log if
    /// it holds it, else from the current snapshot if that ends at `upto`
    /// (openraft purges past the log's end only after installing such a
    /// snapshot). Blocking.
    fn purge_hash(&self, upto: LogId) -> Result<Option<ChainHash>> {
        let st = self.log.state();
        if upto.index < st.next_index {
            return match self.log.chain_hash_at(upto.index) {
                Ok(hash) => Ok(Some(hash)),
                Err(e) if e.is_fatal() => Err(e.into()),
                Err(_) => Ok(None),
            };
        }
        let carried = self.snapshots.get().and_then(|s| s.chain_hash_of(upto));
        if carried.is_none() {
            tracing::warn!(
                dir = %self.dir.display(), %upto,
                "purge past the log's end without the snapshot's chain hash: the hash chain restarts"
            );
        }
        Ok(carried)
    }

    /// The overlay's first index (from there on it holds every entry,
    /// durable or not) and its entries in `from..to`. Never blocks on I/O.
    pub fn read_pending(&self, from: u64, to: u64) -> (Option<u64>, Vec<Entry>) {
        let pending = self.pending();
        (
            pending.first_index(),
            pending.range(from, to).cloned().collect(),
        )
    }

    /// The durable entries in `from..to` that the log still holds, oldest
    /// first, stopping after the one that brings the payload bytes read to
    /// `max_bytes`. Blocking.
    pub fn read_log(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        // A purge or truncation may move the log's ends between `state`
        // and `range`; one retry with the new ends is enough, as openraft
        // never purges what a reader it started still needs.
        for attempt in 0..2 {
            let st = self.log.state();
            let (from, to) = (from.max(st.first_index), to.min(st.next_index));
            if from >= to {
                return Ok(out);
            }
            let records = match self.log.range(from, to) {
                Ok(r) => r,
                Err(missive_log::Error::Purged { .. } | missive_log::Error::BeyondEnd { .. })
                    if attempt == 0 =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut bytes = 0usize;
            for r in records {
                let r = r?;
                bytes += r.payload.len();
                out.push(decode_entry(r.index, r.timestamp, &r.payload)?);
                if bytes >= max_bytes {
                    break;
                }
            }
            break;
        }
        Ok(out)
    }

    /// The log id of the last entry, durable or not; the last purged one if
    /// the log holds none. Blocking.
    pub fn last_log_id(&self) -> Result<Option<LogId>> {
        if let Some(e) = self.pending().last() {
            return Ok(Some(e.log_id));
        }
        // Written after the overlay was found empty, so nothing newer than
        // the log's last record exists.
        Ok(match last_record(&self.log)? {
            Some(e) => Some(e.log_id),
            None => self.meta().purged,
        })
    }
}

/// The log's last visible record, decoded.
fn last_record(log: &Log) -> Result<Option<Entry>> {
    let st = log.state();
    if st.next_index == st.first_index {
        return Ok(None);
    }
    let r = log.read(st.next_index - 1)?;
    decode_entry(r.index, r.timestamp, &r.payload).map(Some)
}

/// Shared handle to a partition log.
pub(crate) type Shared = Arc<PartitionLog>;
