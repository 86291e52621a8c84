//! openraft's `RaftLogStorage` over missive-log: one log per partition.
//!
//! # Layout
//!
//! - `partition_log`: the log, the metadata file and the overlay, and the
//!   blocking operations on them.
//! - `meta`: the raft metadata file (vote, committed, purged) and its format.
//! - `pending`: entries accepted but not yet durable, and timestamp stamping.
//! - `writer`: the thread that makes appends durable (group commit) and runs
//!   truncations and purges in order.
//! - `reader`: [`LogReader`], openraft's `RaftLogReader`.
//!
//! # How an append becomes durable
//!
//! `append` stamps the entries a leader just created with the store's clock
//! and puts them in the overlay, where readers see them at once (openraft
//! needs that: replication reads them before they are flushed), then queues
//! a request to the writer thread and returns. The thread takes every append
//! waiting, encodes the entries as `missive.v1.LogEntry` envelopes and calls
//! `Log::append_at(first, records)` — one write, one fdatasync — and only
//! after it returns calls each append's `IOFlushed` callback. openraft counts
//! an entry as persisted only then.
//!
//! # A restarted leader stands for election again
//!
//! Because replication reads the overlay, followers may hold — durably —
//! entries their leader never made durable itself: the process died before
//! its writer thread wrote them, their fdatasync failed, or power went
//! first. Raft allows that (the leader's own write is one vote of the
//! quorum like any other; a quorum of followers commits the entry without
//! it), but it means a restarted leader's log may end *before* entries it
//! created and sent out in its term.
//!
//! openraft by default lets a node whose committed vote names itself lead
//! again in that same term as soon as it starts
//! (`Config::enable_leader_restore`). Such a leader creates new entries at
//! the lost indexes under the *same* log ids — same term, same leader, same
//! index — as the entries its followers hold. A follower that already has
//! an entry with that log id keeps it and counts as matching, so the
//! leader commits and acknowledges its new entry while a quorum holds, and
//! applies, a different one: an acknowledged write lost and replicas
//! diverged (found by the chaos test, seed 7: a leader whose fdatasync
//! failed lost power and was back before its followers' election timeout).
//!
//! A log id must name one entry forever. Only a new term guarantees that
//! when the leader's log can lose its unsynced tail, so with this store a
//! restarted node always starts as a follower and a leader is elected in a
//! higher term: every `Raft` over a [`LogStore`] runs with the config
//! [`LogStore::raft_config`] returns (`ClusterNode` sees to it itself).
//!
//! # Invariants
//!
//! - Vote and committed log id are durable before `save_vote` and
//!   `save_committed` return (a sole voter's committed log id is durable
//!   as its log's last entry; see `meta`); the purged log id before the log's purge point
//!   moves.
//! - An entry is stored under the index it carries or not at all
//!   (`append_at` refuses a mismatch).
//! - Truncations and purges run after every append issued before them.
//! - No leader survives a restart (see above), so one log id never names
//!   two different entries, even when a leader loses entries it had sent.

mod meta;
mod partition_log;
mod pending;
mod reader;
mod writer;

use std::io;
use std::path::Path;

use missive_log::Options;
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState as RaftLogState, RaftLogStorage};

pub use self::meta::META_FILE;
pub(crate) use self::meta::MetaFile;
pub use self::partition_log::LOG_DIR;
pub(crate) use self::partition_log::PartitionLog;
use self::partition_log::Shared;
use self::reader::blocking;
pub use self::reader::{LogReader, MAX_READ_BYTES};
use self::writer::Writer;
pub use self::writer::{MAX_GROUP_ENTRIES, MAX_GROUP_LINGER, WRITE_QUEUE_DEPTH};
use crate::error::{Error, Result};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The Raft log store of one partition.
#[derive(Debug)]
pub struct LogStore {
    /// What the writer thread and readers share.
    log: Shared,
    /// The queue to the writer thread.
    writer: Writer,
}

impl LogStore {
    /// Opens (creating if needed) the store of the partition in `dir`: its
    /// metadata in `dir/raft-meta`, its log in `dir/log/`. `opts` are the
    /// log's options; their file system also carries the metadata file and
    /// their clock stamps the entries this node creates as leader.
    pub async fn open(dir: impl AsRef<Path>, opts: Options) -> Result<LogStore> {
        let dir = dir.as_ref().to_owned();
        let log = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || PartitionLog::open(&dir, opts)
        })
        .await
        .map_err(|e| Error::io("open", &dir, io::Error::other(e)))??;
        let log = Shared::new(log);
        let writer = Writer::start(log.clone())?;
        Ok(LogStore { log, writer })
    }

    /// openraft's `config` with what this store requires of it: a node
    /// that restarts never resumes leading without an election
    /// (`enable_leader_restore` off), because its log may have lost entries
    /// its followers hold under its current term (see the module docs). A
    /// `Raft` over a [`LogStore`] must be started with a config passed
    /// through here; the other settings are left as they are.
    pub fn raft_config(mut config: openraft::Config) -> openraft::Config {
        // A restored leader would reuse the log ids of the entries it lost
        // and commit a different entry under each: never allowed here.
        config.enable_leader_restore = Some(false);
        config
    }

    /// Names this node, so that while it is its partition's only voter
    /// saving the committed log id costs no fdatasync (the log holds it;
    /// see `meta`, "The sole voter"). Call before handing the store to
    /// openraft; without it every save is an fdatasync.
    pub fn set_own_id(&self, id: crate::types::NodeId) {
        self.log.set_own_id(id);
    }

    /// The underlying log's first and next index and head hash.
    pub fn log_state(&self) -> missive_log::LogState {
        self.log.log_state()
    }

    /// The log this store writes, shared (for the partition's state
    /// machine store, which links its snapshots to it).
    pub(crate) fn shared(&self) -> &Shared {
        &self.log
    }

    /// A reader of this store's entries and vote.
    pub fn reader(&self) -> LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    /// A future that resolves once the log is closed and its directory
    /// unlocked: after the store, its writer thread and every reader are
    /// gone. openraft owns the store and drops its readers from tasks it does
    /// not wait for, so a node restarted in the same process awaits this
    /// (taken before handing the store to openraft) before reopening.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        self.log.closed()
    }

    /// Finishes the queued writes, stops the writer thread and waits until
    /// the log is closed — which needs every reader dropped too.
    pub async fn close(self) {
        let closed = self.log.closed();
        let LogStore { log, writer } = self;
        drop(log);
        writer.stop().await;
        closed.await;
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<RaftLogState<TypeConfig>> {
        let last_purged_log_id = self.log.meta().purged;
        let last_log_id = blocking(&self.log, |l| l.last_log_id()).await?;
        Ok(RaftLogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    /// Durable before it returns: a vote forgotten in a crash could be
    /// given twice in one term.
    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let vote = *vote;
        Ok(blocking(&self.log, move |l| l.save_vote(vote)).await?)
    }

    /// Durable before it returns, so a restarted node re-applies up to what
    /// it knew was committed instead of serving an older state. A sole
    /// voter's log already holds it durably, and taking it costs no I/O
    /// and no thread hop: openraft waits for this before every apply.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if self.log.note_committed(committed) {
            return Ok(());
        }
        Ok(blocking(&self.log, move |l| l.save_committed(committed)).await?)
    }

    /// The saved committed log id, but never beyond this store's last
    /// entry (or purge point). openraft saves `committed` as soon as it
    /// learns it, which may be before this node's own copy of those entries
    /// is flushed (`committed ≤ flushed` need not hold: a quorum without
    /// this node has them). After a crash in between, the durable log ends
    /// before the saved id, and openraft, which re-applies up to it on
    /// startup, would fail to read the missing entries and refuse to start
    /// (found by the chaos test: a follower whose fdatasync failed). The
    /// leader tells the node the rest once it rejoins. openraft reads this
    /// only at startup, with nothing pending, so the last entry is durable.
    /// A sole voter's committed log id is its log's last entry.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let last = blocking(&self.log, |l| l.last_log_id()).await?;
        Ok(self.log.committed_at_start(last))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let Some((first, last)) = self.log.accept(entries)? else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        // Readable from here on; durable when the callback fires.
        if let Err(e) = self.writer.append(first, last, callback).await {
            // No writer will ever make them durable: stop showing them.
            self.log.discard_from(first);
            return Err(e.into());
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        Ok(self.writer.truncate_after(last_log_id).await?)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        Ok(self.writer.purge(log_id).await?)
    }
}
