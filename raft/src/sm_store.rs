//! [`StateMachineStore`]: openraft's `RaftStateMachine` over any
//! [`StateMachine`].
//!
//! Committed entries arrive as a stream, cut into batches of at most
//! [`MAX_APPLY_BATCH`] and queued (at most [`APPLY_QUEUE`] batches) for the
//! partition's apply thread. Blank and membership entries are answered with
//! an empty reply; they still advance the applied state the state machine
//! stores.
//!
//! # Group commit
//!
//! The apply thread takes every batch waiting in its queue (up to
//! [`MAX_GROUP_ENTRIES`] entries), applies them one after another, and then
//! calls [`StateMachine::flush`] once: one commit of the projection store
//! for the whole group. Each entry's reply goes to the client waiting for
//! it only after that flush, so a reply never announces a change readers
//! cannot see yet. When the partition is idle a group is one batch and is
//! flushed at once; under load the queue fills while a group is applied,
//! and the next group carries all of it. Each small commit of a copy-on-write
//! B-tree rewrites the pages from the root to every leaf it touches, so
//! fewer, larger commits cost less CPU per entry.
//!
//! openraft counts a batch applied once it is queued. What the state
//! machine shows is tracked apart: [`StateMachineStore::wait_applied`]
//! waits for an entry to be applied *and flushed*, and
//! [`StateMachineStore::read`] first waits for everything queued. A
//! snapshot build or install waits for the queue to empty first, so it
//! stays in log order with applies.
//!
//! Snapshots go through the partition's snapshot directory: a build takes a
//! consistent view of the state machine (in log order with applies — openraft
//! asks for the builder from its apply loop) and streams it to a file while
//! applying goes on; an install checks and copies the received file, makes it
//! current, then lets the state machine read its data.
//!
//! A store opened with its partition's log ([`StateMachineStore::open_with_log`])
//! writes into each snapshot the log's chain hash at the snapshot's last
//! entry, and lends the log its snapshot directory: when a replica installs
//! a snapshot newer than its log, the log's purge past its end continues the
//! hash chain from that hash, so every replica has the same chain hash at the
//! same index. It holds the log weakly: the log closes when its store does.
//!
//! # Concurrency
//!
//! The state machine sits behind a std `Mutex`, locked only on the apply
//! thread and the blocking pool (snapshot begin and install), never across
//! an `.await`. The apply thread holds it from a group's first apply to its
//! flush, so nobody else ever finds changes pending. The applied state has
//! its own small lock so openraft can read it without waiting for a group
//! to finish; it is updated after the flush, under the `sm` lock. When both
//! are taken, `sm` is taken first, so the applied state always matches the
//! state machine for anyone holding `sm`.
//!
//! If applying or flushing fails, the group's clients get no reply (their
//! writes are committed in the log, and a restart applies them again), the
//! thread takes no more work, and the next call from openraft fails, which
//! stops the partition: a state machine that cannot apply a committed entry
//! cannot go on without diverging.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::storage::{
    ApplyResponder, EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::applied_state::AppliedState;
use crate::error::{Error, Result};
use crate::log_store::{LogStore, PartitionLog};
use crate::snapshot::{Backlog, SnapshotDir, SnapshotFile};
use crate::state_machine::{CommandEntry, SnapshotSource, StateMachine};
use crate::types::{
    Entry, LeaderId, LogId, Node, NodeId, Payload, Reply, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// Entries one `StateMachine::apply` call gets at most.
pub const MAX_APPLY_BATCH: usize = 1024;

/// Batches queued for a partition's apply thread at most; openraft's apply
/// loop waits while the queue is full.
pub const APPLY_QUEUE: usize = 64;

/// Entries one group commit carries at most (it stops taking batches once
/// it has this many), so a group's replies are not held back without bound.
pub const MAX_GROUP_ENTRIES: usize = 4096;

/// Work for the apply thread, in log order.
enum Work {
    /// Consecutive committed entries, and who waits for each one's reply.
    Apply {
        entries: Vec<Entry>,
        responders: Vec<Option<ApplyResponder<TypeConfig>>>,
    },
    /// Answered once everything queued before it is applied and flushed.
    Drain(oneshot::Sender<Result<()>>),
}

impl Work {
    fn entries(&self) -> usize {
        match self {
            Work::Apply { entries, .. } => entries.len(),
            Work::Drain(_) => 0,
        }
    }
}

/// The index of the last entry applied and flushed: what readers see.
struct Visible {
    /// The index, and what async waiters wait on.
    watch: watch::Sender<u64>,
    /// What blocking waiters ([`StateMachineStore::read`]) wait on; the
    /// mutex guards no data, only the wait against a missed `set`.
    changed: (Mutex<()>, Condvar),
}

impl Visible {
    fn new(index: u64) -> Self {
        Visible {
            watch: watch::Sender::new(index),
            changed: (Mutex::new(()), Condvar::new()),
        }
    }

    fn get(&self) -> u64 {
        *self.watch.borrow()
    }

    fn set(&self, index: u64) {
        let guard = lock(&self.changed.0);
        self.watch.send_replace(index);
        drop(guard);
        self.changed.1.notify_all();
    }

    /// Blocks until the index reaches `target` or `stop` says to give up
    /// (checked at least every 100 ms).
    fn wait_blocking(&self, target: u64, stop: impl Fn() -> bool) {
        let mut guard = lock(&self.changed.0);
        while self.get() < target && !stop() {
            guard = self
                .changed
                .1
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A snapshot as openraft sees it here.
pub type RaftSnapshot = Snapshot<LeaderId, NodeId, Node, SnapshotFile>;

/// What the handles of one state machine share.
struct Inner<SM> {
    /// The application's state machine.
    sm: Mutex<SM>,
    /// Where it stands; updated right after each apply or install, under
    /// the `sm` lock.
    applied: Mutex<AppliedState>,
    /// The partition's snapshots (shared with the linked log).
    snapshots: Arc<SnapshotDir>,
    /// The partition's log, if linked: where a snapshot build finds the
    /// chain hash of its last entry. Weak, so the log still closes (and
    /// unlocks its directory) when its store is dropped.
    log: Option<Weak<PartitionLog>>,
    /// The apply thread's queue. The thread holds `Inner` only weakly, so
    /// dropping the last handle closes the queue and ends the thread.
    queue: mpsc::Sender<Work>,
    /// The index of the last entry queued.
    queued: AtomicU64,
    /// The index of the last entry applied and flushed.
    visible: Visible,
    /// Why the apply thread stopped, if it failed.
    failed: Mutex<Option<String>>,
}

/// openraft's state machine over an application's [`StateMachine`]; cheap
/// to clone (clones share the state machine).
pub struct StateMachineStore<SM> {
    inner: Arc<Inner<SM>>,
}

impl<SM> std::fmt::Debug for StateMachineStore<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("snapshots", &self.inner.snapshots)
            .finish_non_exhaustive()
    }
}

impl<SM> Clone for StateMachineStore<SM> {
    fn clone(&self) -> Self {
        StateMachineStore {
            inner: self.inner.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside the application's state machine is not survivable in
    // any case (the apply task ends and openraft stops the node); the lock
    // itself holds nothing half-updated of ours.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` (doing `what`) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::StateMachine(format!("{what} task failed: {e}").into()))?
}

impl<SM: StateMachine> StateMachineStore<SM> {
    /// Wraps `sm`, with snapshots in `dir`. If the current snapshot is newer
    /// than the state machine (a crash between making a snapshot current and
    /// installing it), it is installed first.
    pub async fn open(dir: impl AsRef<Path>, sm: SM) -> Result<Self> {
        Self::open_inner(dir.as_ref(), sm, None).await
    }

    /// Like [`StateMachineStore::open`], linked to the partition's log
    /// store: snapshots built here carry the log's chain hash at their last
    /// entry, and a snapshot installed past the end of the log makes the
    /// log continue its hash chain from the hash the snapshot carries (see
    /// the module docs). A partition's two stores should be opened this
    /// way; without the link everything works, but a replica that catches
    /// up by snapshot restarts its chain.
    pub async fn open_with_log(dir: impl AsRef<Path>, sm: SM, log: &LogStore) -> Result<Self> {
        let store = Self::open_inner(dir.as_ref(), sm, Some(log.shared())).await?;
        log.shared().link_snapshots(store.inner.snapshots.clone());
        Ok(store)
    }

    async fn open_inner(dir: &Path, sm: SM, log: Option<&Arc<PartitionLog>>) -> Result<Self> {
        let dir = dir.to_owned();
        let log = log.map(Arc::downgrade);
        blocking("open", move || {
            let snapshots = SnapshotDir::open(&dir)?;
            let mut sm = sm;
            let mut applied = sm.applied_state().map_err(Error::StateMachine)?;
            let behind = snapshots
                .current_state()
                .is_some_and(|s| s.last_applied > applied.last_applied);
            if behind && let Some((state, mut data)) = snapshots.current_data()? {
                tracing::info!(dir = %dir.display(), snapshot = ?state.last_applied, "installing the current snapshot into a state machine behind it");
                sm.install_snapshot(&state, &mut data)
                    .map_err(Error::StateMachine)?;
                applied = state;
            }
            let index = applied.last_applied.map_or(0, |l| l.index);
            let (queue, work) = mpsc::channel(APPLY_QUEUE);
            let inner = Arc::new(Inner {
                sm: Mutex::new(sm),
                applied: Mutex::new(applied),
                snapshots: Arc::new(snapshots),
                log,
                queue,
                queued: AtomicU64::new(index),
                visible: Visible::new(index),
                failed: Mutex::new(None),
            });
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("missive-apply".into())
                .spawn(move || apply_thread(&weak, work))
                .map_err(|source| Error::Io {
                    op: "start the apply thread",
                    path: dir.clone(),
                    source,
                })?;
            Ok(StateMachineStore { inner })
        })
        .await
    }

    /// Runs `f` on the state machine, once everything queued so far is
    /// applied and flushed (or the apply thread has failed). It waits for
    /// that, so call it from a blocking context unless the partition is
    /// idle and `f` is quick.
    pub fn read<R>(&self, f: impl FnOnce(&SM) -> R) -> R {
        let target = self.inner.queued.load(Ordering::Acquire);
        self.inner
            .visible
            .wait_blocking(target, || lock(&self.inner.failed).is_some());
        f(&lock(&self.inner.sm))
    }

    /// Waits at most `timeout` until entry `index` is applied and flushed
    /// here — visible to readers of the state machine, which openraft's
    /// applied index does not promise (it counts queued batches). Returns
    /// whether it is.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        // The usual case on the node that applied it: no waiting at all.
        if self.inner.visible.get() >= index {
            return true;
        }
        let mut rx = self.inner.visible.watch.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The error the apply thread stopped with, if it did.
    fn failure(&self) -> io::Result<()> {
        match &*lock(&self.inner.failed) {
            Some(e) => Err(io::Error::other(format!("the state machine failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Queues `work` for the apply thread.
    async fn enqueue(&self, work: Work) -> io::Result<()> {
        self.failure()?;
        self.inner
            .queue
            .send(work)
            .await
            .map_err(|_| io::Error::other("the apply thread has stopped"))
    }

    /// Waits until everything queued so far is applied and flushed.
    async fn drain(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Drain(tx)).await?;
        match rx.await {
            Ok(r) => Ok(r?),
            Err(_) => {
                self.failure()?;
                Err(io::Error::other("the apply thread has stopped"))
            }
        }
    }

    /// Where the state machine stands.
    pub fn applied(&self) -> AppliedState {
        lock(&self.inner.applied).clone()
    }

    /// Builds a snapshot of the state machine as it stands now (the same
    /// consistent view openraft's builds take) and makes it current unless
    /// a newer one already is. For backups, which need a snapshot no older
    /// than the log they copy.
    pub(crate) async fn snapshot_now(&self) -> io::Result<RaftSnapshot> {
        let mut store = self.clone();
        let mut builder = store.get_snapshot_builder().await;
        builder.build_snapshot().await
    }

    /// What decides whether this partition should take a snapshot now
    /// (`crate::snapshot::Backlog`); `None` without a linked, open log.
    /// Blocking: a `stat` under the snapshot directory's lock, and the log's
    /// segment list.
    pub(crate) fn snapshot_backlog(&self) -> Result<Option<Backlog>> {
        let Some(log) = self.log() else {
            return Ok(None);
        };
        let (last, snapshot_bytes) = self.inner.snapshots.current_extent()?.unwrap_or((None, 0));
        let applied = lock(&self.inner.applied).last_applied;
        Ok(Some(Backlog {
            log_bytes: log.bytes_after(last.map(|id| id.index)),
            snapshot_bytes,
            applied_beyond: applied.map(|id| id.index) > last.map(|id| id.index),
            segment_bytes: log.segment_bytes(),
            retention: log.has_retention(),
        }))
    }

    /// The partition's log, if linked and still open.
    pub(crate) fn log(&self) -> Option<Arc<PartitionLog>> {
        self.inner.log.as_ref().and_then(Weak::upgrade)
    }
}

/// The apply thread of one partition: takes the queued work in groups (see
/// the module docs) until the queue closes or a group fails.
fn apply_thread<SM: StateMachine>(inner: &Weak<Inner<SM>>, mut work: mpsc::Receiver<Work>) {
    while let Some(first) = work.blocking_recv() {
        let Some(inner) = inner.upgrade() else { return };
        let mut entries = first.entries();
        let mut ends = matches!(first, Work::Drain(_));
        let mut group = vec![first];
        // A drain ends its group: what it waits for is all before it.
        while !ends && entries < MAX_GROUP_ENTRIES {
            let Ok(next) = work.try_recv() else { break };
            entries += next.entries();
            ends = matches!(next, Work::Drain(_));
            group.push(next);
        }
        if let Err(e) = apply_group(&inner, group) {
            tracing::error!(error = %e, "applying committed entries failed; the partition stops");
            *lock(&inner.failed) = Some(e.to_string());
            // Answer drains already queued (their senders see the failure);
            // dropping the rest drops their responders.
            work.close();
            while let Ok(w) = work.try_recv() {
                if let Work::Drain(tx) = w {
                    let _ = tx.send(Err(Error::StateMachine(e.to_string().into())));
                }
            }
            return;
        }
    }
}

/// Applies a group and flushes it, then answers it. On an error nobody is
/// answered and the applied state does not move.
fn apply_group<SM: StateMachine>(inner: &Inner<SM>, group: Vec<Work>) -> Result<()> {
    let mut sm = lock(&inner.sm);
    let mut after = lock(&inner.applied).clone();
    let mut answers = Vec::new();
    let mut drains = Vec::new();
    let mut entries = 0;
    for w in group {
        match w {
            Work::Apply {
                entries: batch,
                responders,
            } => {
                entries += batch.len();
                let replies = apply_entries(&mut *sm, &batch, &mut after)?;
                answers.extend(responders.into_iter().zip(replies));
            }
            Work::Drain(tx) => drains.push(tx),
        }
    }
    sm.flush().map_err(Error::StateMachine)?;
    let index = after.last_applied.map_or(0, |l| l.index);
    *lock(&inner.applied) = after;
    drop(sm);
    inner.visible.set(index);
    if entries > 0 {
        crate::metrics::APPLY_GROUP_ENTRIES.observe(entries as f64);
    }
    for (responder, reply) in answers {
        if let Some(responder) = responder {
            responder.send(reply);
        }
    }
    for tx in drains {
        let _ = tx.send(Ok(()));
    }
    Ok(())
}

/// Applies `entries` (consecutive, committed) after `after`, which it
/// advances, and returns one reply per entry.
fn apply_entries<SM: StateMachine>(
    sm: &mut SM,
    entries: &[Entry],
    after: &mut AppliedState,
) -> Result<Vec<Reply>> {
    after.advance(entries);
    let mut commands = Vec::new();
    for e in entries {
        if let Payload::Normal(command) = &e.payload {
            let timestamp_ms = e.timestamp_ms.ok_or_else(|| {
                Error::StateMachine(
                    format!(
                        "entry {} reached the state machine without a timestamp",
                        e.log_id
                    )
                    .into(),
                )
            })?;
            commands.push(CommandEntry {
                log_id: e.log_id,
                timestamp_ms,
                command,
            });
        }
    }
    let replies = sm.apply(&commands, after).map_err(Error::StateMachine)?;
    if replies.len() != commands.len() {
        return Err(Error::StateMachine(
            format!(
                "apply returned {} replies for {} commands",
                replies.len(),
                commands.len()
            )
            .into(),
        ));
    }
    let mut replies = replies.into_iter();
    Ok(entries
        .iter()
        .map(|e| match e.payload {
            Payload::Normal(_) => replies.next().unwrap_or_default(),
            Payload::Blank | Payload::Membership(_) => Reply::default(),
        })
        .collect())
}

impl<SM: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<SM> {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder<SM>;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        // openraft counts queued batches as applied; make it so.
        self.drain().await?;
        let applied = self.applied();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        loop {
            let item = entries.next().await;
            let done = item.is_none();
            if let Some(item) = item {
                let (entry, responder) = item?;
                batch.push(entry);
                responders.push(responder);
            }
            if batch.len() >= MAX_APPLY_BATCH || (done && !batch.is_empty()) {
                let last = batch.last().map_or(0, |e: &Entry| e.log_id.index);
                self.enqueue(Work::Apply {
                    entries: std::mem::take(&mut batch),
                    responders: std::mem::take(&mut responders),
                })
                .await?;
                self.inner.queued.fetch_max(last, Ordering::AcqRel);
            }
            if done {
                return Ok(());
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<SM> {
        let inner = self.inner.clone();
        // The view is taken now, in log order with applies: openraft asks
        // for the builder from its apply loop and builds it in the
        // background, and the snapshot must match the applied state. So
        // every batch queued before is applied first.
        let drained = self.drain().await;
        let view = blocking("begin snapshot", move || {
            drained.map_err(|e| Error::StateMachine(e.into()))?;
            let mut sm = lock(&inner.sm);
            let state = lock(&inner.applied).clone();
            let source = sm.begin_snapshot().map_err(Error::StateMachine)?;
            Ok((source, state))
        })
        .await;
        SnapshotBuilder {
            inner: self.inner.clone(),
            view: Mutex::new(Some(view)),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        // Batches queued before the install are older than it: apply them
        // first, in log order.
        self.drain().await?;
        let inner = self.inner.clone();
        let meta = meta.clone();
        Ok(blocking("install snapshot", move || {
            // Current first, then the state machine: a crash in between
            // leaves a current snapshot newer than the state machine, which
            // `open` installs.
            let (state, mut data) = inner.snapshots.install(&meta, &snapshot)?;
            let mut sm = lock(&inner.sm);
            sm.install_snapshot(&state, &mut data)
                .map_err(Error::StateMachine)?;
            let index = state.last_applied.map_or(0, |l| l.index);
            *lock(&inner.applied) = state;
            drop(sm);
            inner.queued.fetch_max(index, Ordering::AcqRel);
            inner.visible.set(index);
            Ok(())
        })
        .await?)
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<RaftSnapshot>> {
        let inner = self.inner.clone();
        let current = blocking("open snapshot", move || inner.snapshots.current()).await?;
        Ok(current.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// The view a snapshot builder writes, and the applied state it matches.
type View<SM> = Result<(<SM as StateMachine>::Snapshot, AppliedState)>;

/// Builds one snapshot from a view taken when it was created.
pub struct SnapshotBuilder<SM: StateMachine> {
    inner: Arc<Inner<SM>>,
    /// The view, until built. In a `Mutex` only so the builder is `Sync`
    /// (openraft requires it) for any view; it is only reached through
    /// `&mut self`, so never locked.
    view: Mutex<Option<View<SM>>>,
}

impl<SM: StateMachine> std::fmt::Debug for SnapshotBuilder<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl<SM: StateMachine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<SM> {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<RaftSnapshot> {
        let view = self
            .view
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (source, state) = match view {
            Some(view) => view?,
            None => {
                return Err(io::Error::other("a snapshot builder builds one snapshot"));
            }
        };
        let inner = self.inner.clone();
        let meta = state.snapshot_meta();
        let file = blocking("build snapshot", move || {
            let chain_hash = match (&inner.log, state.last_applied) {
                (Some(log), Some(last)) => match log.upgrade() {
                    Some(log) => log.chain_hash_at(last.index)?,
                    // The log is closing with the node; this snapshot
                    // only goes without the hash.
                    None => None,
                },
                _ => None,
            };
            inner
                .snapshots
                .build(&state, chain_hash, move |out| source.write_to(out))
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}
