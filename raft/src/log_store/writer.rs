//! The writer thread of a partition log: every change to the log, in the
//! order openraft issued it, off the async threads.
//!
//! `append` returns as soon as its entries are in the overlay and its
//! request is queued; this thread writes them with `Log::append_at`, which
//! returns after fdatasync, and only then fires openraft's `IOFlushed`
//! callback. Appends found waiting in the queue together are written as one
//! batch — one write and one fdatasync — which is the group commit of a
//! partition's Raft log (the log's own group commit serves many callers;
//! here there is one).
//!
//! Truncations and purges go through the same queue, so they happen after
//! every append issued before them, and their callers wait for the result:
//! openraft requires both to be done when the call returns.
//!
//! # Lingering while appends stream in
//!
//! A busy leader's openraft appends client writes a few at a time, as its
//! core loop takes them (measured under 256 clients: ~3,000 appends/s of
//! ~2 entries each), so taking only what waits made the leader fdatasync
//! two to four times as often as each follower, whose appends come one per
//! AppendEntries round with ~100 entries. Every appending fdatasync on ext4
//! is a journal commit, and the replicas of a machine or a disk share the
//! journal: the leader's extra commits made the followers' slower, and the
//! followers' acknowledgements are what commits an entry.
//!
//! So when a group found more than one append waiting — appends are
//! arriving faster than the disk takes them — the thread waits a little
//! longer (as long as its previous write took, at most
//! [`MAX_GROUP_LINGER`]) and takes what arrived meanwhile into the same
//! write. A lone append (one client; a follower's round) never waits. The
//! linger only delays when entries become durable, never acknowledges
//! anything earlier: the callbacks still fire after the fdatasync. It can
//! delay a commit only when the leader's own copy is needed for the quorum
//! (a follower is down), and then by at most [`MAX_GROUP_LINGER`].
//!
//! # Bounds
//!
//! - [`WRITE_QUEUE_DEPTH`] requests wait at most; a full queue makes
//!   `append` wait, which slows openraft down to the disk's pace.
//! - [`MAX_GROUP_ENTRIES`] entries at most go into one group-committed write.
//! - [`MAX_GROUP_LINGER`] is the longest a group waits for more appends.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::storage::IOFlushed;
use tokio::sync::{mpsc, oneshot};

use super::partition_log::Shared;
use crate::error::{Error, Result};
use crate::types::{LogId, TypeConfig};

/// How many requests may wait for the writer thread.
pub const WRITE_QUEUE_DEPTH: usize = 64;

/// How many entries one group-committed write takes at most.
pub const MAX_GROUP_ENTRIES: u64 = 4096;

/// The longest a group waits for more appends once appends are streaming in
/// (see the module docs); it waits as long as the previous write took, up
/// to this.
pub const MAX_GROUP_LINGER: Duration = Duration::from_millis(2);

/// A request to the writer thread.
enum Request {
    /// Make the overlay's entries `first..=last` durable, then call back.
    Append {
        /// First index to write.
        first: u64,
        /// Last index to write.
        last: u64,
        /// openraft's flush notification.
        callback: IOFlushed<TypeConfig>,
    },
    /// Drop the entries after a log id.
    TruncateAfter {
        /// The last entry kept; `None` keeps none.
        after: Option<LogId>,
        /// Where the caller waits for the result.
        done: oneshot::Sender<Result<()>>,
    },
    /// Purge up to a log id.
    Purge {
        /// The last entry purged.
        upto: LogId,
        /// Where the caller waits for the result.
        done: oneshot::Sender<Result<()>>,
    },
}

/// The handle that feeds the writer thread; dropping it stops the thread
/// once the queued requests are done.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The partition directory (named in errors).
    dir: PathBuf,
    /// The bounded queue to the thread.
    tx: mpsc::Sender<Request>,
    /// The thread, joined by `stop` so that closing waits for the queue to
    /// drain; `None` once taken.
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Append { first, last, .. } => write!(f, "Append({first}..={last})"),
            Request::TruncateAfter { after, .. } => write!(f, "TruncateAfter({after:?})"),
            Request::Purge { upto, .. } => write!(f, "Purge({upto})"),
        }
    }
}

impl Writer {
    /// Starts the writer thread of `log`.
    pub fn start(log: Shared) -> Result<Writer> {
        let dir = log.dir().to_owned();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(log, rx))
            .map_err(|e| Error::io("spawn writer thread", &dir, e))?;
        Ok(Writer {
            dir,
            tx,
            thread: Some(thread),
        })
    }

    async fn send(&self, req: Request) -> Result<()> {
        self.tx
            .send(req)
            .await
            .map_err(|_| Error::WriterStopped(self.dir.clone()))
    }

    /// Queues the durable write of the overlay's `first..=last`; `callback`
    /// fires after fdatasync.
    pub async fn append(
        &self,
        first: u64,
        last: u64,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<()> {
        self.send(Request::Append {
            first,
            last,
            callback,
        })
        .await
    }

    /// Truncates after `after` once every earlier request is done.
    pub async fn truncate_after(&self, after: Option<LogId>) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.send(Request::TruncateAfter { after, done }).await?;
        rx.await
            .map_err(|_| Error::WriterStopped(self.dir.clone()))?
    }

    /// Purges up to `upto` once every earlier request is done.
    pub async fn purge(&self, upto: LogId) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.send(Request::Purge { upto, done }).await?;
        rx.await
            .map_err(|_| Error::WriterStopped(self.dir.clone()))?
    }

    /// Stops the thread after the queued requests and waits for it, so the
    /// log's directory lock is released when this returns (if no reader
    /// still holds the log).
    pub async fn stop(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            // Joining blocks until the queue drains: not on an async thread.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("raft log writer thread panicked");
            }
        }
    }
}

/// Takes into the group every append waiting in `rx`, up to
/// [`MAX_GROUP_ENTRIES`] entries. The appends are contiguous — `append`
/// checked that against the overlay. A truncation or purge ends the group
/// and is put in `next`, to be served after it.
fn gather(
    rx: &mut mpsc::Receiver<Request>,
    first: u64,
    group_last: &mut u64,
    callbacks: &mut Vec<IOFlushed<TypeConfig>>,
    next: &mut Option<Request>,
) {
    while next.is_none() && *group_last - first + 1 < MAX_GROUP_ENTRIES {
        match rx.try_recv() {
            Ok(Request::Append { last, callback, .. }) => {
                *group_last = last;
                callbacks.push(callback);
            }
            Ok(other) => *next = Some(other),
            Err(_) => break,
        }
    }
}

fn run(log: Shared, mut rx: mpsc::Receiver<Request>) {
    // A request taken from the queue while gathering a group, to be served
    // next.
    let mut next: Option<Request> = None;
    // How long the previous group's write took: the next group's linger.
    let mut last_write = Duration::ZERO;
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(r) => r,
                // Every sender is gone: the store was dropped or stopped.
                None => return,
            },
        };
        match req {
            Request::Append {
                first,
                last,
                callback,
            } => {
                let mut group_last = last;
                let mut callbacks = vec![callback];
                // Group commit: take every append already waiting.
                gather(&mut rx, first, &mut group_last, &mut callbacks, &mut next);
                // More than one waiting means appends stream in faster than
                // the disk takes them: wait for more and write them together
                // (module docs). Nothing is acknowledged before the
                // fdatasync below, so waiting risks no durability.
                if callbacks.len() > 1 && next.is_none() {
                    std::thread::sleep(last_write.min(MAX_GROUP_LINGER));
                    gather(&mut rx, first, &mut group_last, &mut callbacks, &mut next);
                }
                let started = Instant::now();
                let result = log.write(first, group_last);
                last_write = started.elapsed();
                crate::metrics::LOG_APPEND_SECONDS.observe(last_write.as_secs_f64());
                crate::metrics::LOG_APPEND_ENTRIES.observe((group_last + 1 - first) as f64);
                if let Err(e) = &result {
                    tracing::error!(dir = %log.dir().display(), first, last = group_last, error = %e, "raft log append failed");
                }
                // Only now — after fdatasync — may openraft count these
                // entries as persisted.
                for cb in callbacks {
                    cb.io_completed(result.as_ref().map(|_| ()).map_err(Error::to_io));
                }
            }
            Request::TruncateAfter { after, done } => {
                // The caller may have given up waiting; the result stands.
                let _ = done.send(log.truncate_after(after));
            }
            Request::Purge { upto, done } => {
                let _ = done.send(log.purge(upto));
            }
        }
    }
}
