//! [`StateMachineStore`]: openraft's `RaftStateMachine` over any
//! [`StateMachine`].
//!
//! Committed entries arrive as a stream; they are applied in batches of at
//! most [`MAX_APPLY_BATCH`] on tokio's blocking pool, and each entry's reply
//! goes to the client waiting for it. Blank and membership entries are
//! answered here with an empty reply; they still advance the applied state
//! the state machine stores.
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
//! The state machine sits behind a std `Mutex`, locked only on the blocking
//! pool (apply, snapshot begin and install), never across an `.await`. The
//! applied state has its own small lock so openraft can read it without
//! waiting for a batch to finish applying. When both are taken, `sm` is
//! taken first, so the applied state always matches the state machine for
//! anyone holding `sm`.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};

use crate::applied_state::AppliedState;
use crate::error::{Error, Result};
use crate::log_store::{LogStore, PartitionLog};
use crate::snapshot::{SnapshotDir, SnapshotFile};
use crate::state_machine::{CommandEntry, SnapshotSource, StateMachine};
use crate::types::{
    Entry, LeaderId, LogId, Node, NodeId, Payload, Reply, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// Entries one `StateMachine::apply` call gets at most.
pub const MAX_APPLY_BATCH: usize = 1024;

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
            Ok(StateMachineStore {
                inner: Arc::new(Inner {
                    sm: Mutex::new(sm),
                    applied: Mutex::new(applied),
                    snapshots: Arc::new(snapshots),
                    log,
                }),
            })
        })
        .await
    }

    /// Runs `f` on the state machine. It waits for a batch being applied
    /// to finish, so call it from a blocking context unless `f` is quick.
    pub fn read<R>(&self, f: impl FnOnce(&SM) -> R) -> R {
        f(&lock(&self.inner.sm))
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

    /// The partition's log, if linked and still open.
    pub(crate) fn log(&self) -> Option<Arc<PartitionLog>> {
        self.inner.log.as_ref().and_then(Weak::upgrade)
    }

    /// Applies `entries` (consecutive, committed) and returns one reply per
    /// entry.
    async fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<Reply>> {
        let inner = self.inner.clone();
        blocking("apply", move || {
            let mut sm = lock(&inner.sm);
            let mut after = lock(&inner.applied).clone();
            after.advance(&entries);
            let mut commands = Vec::new();
            for e in &entries {
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
            let replies = sm.apply(&commands, &after).map_err(Error::StateMachine)?;
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
            *lock(&inner.applied) = after;
            drop(sm);
            let mut replies = replies.into_iter();
            Ok(entries
                .iter()
                .map(|e| match e.payload {
                    Payload::Normal(_) => replies.next().unwrap_or_default(),
                    Payload::Blank | Payload::Membership(_) => Reply::default(),
                })
                .collect())
        })
        .await
    }
}

impl<SM: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<SM> {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder<SM>;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
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
                let replies = self.apply_batch(std::mem::take(&mut batch)).await?;
                for (responder, reply) in responders.drain(..).zip(replies) {
                    if let Some(responder) = responder {
                        responder.send(reply);
                    }
                }
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
        // background, and the snapshot must match the applied state.
        let view = blocking("begin snapshot", move || {
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
            *lock(&inner.applied) = state;
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
