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
//! # Bounds
//!
//! - [`WRITE_QUEUE_DEPTH`] requests wait at most; a full queue makes
//!   `append` wait, which slows openraft down to the disk's pace.
//! - [`MAX_GROUP_ENTRIES`] entries at most go into one group-committed write.

use std::path::PathBuf;
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use tokio::sync::{mpsc, oneshot};

use super::partition_log::Shared;
use crate::error::{Error, Result};
use crate::types::{LogId, TypeConfig};

/// How many requests may wait for the writer thread.
pub const WRITE_QUEUE_DEPTH: usize = 64;

/// How many entries one group-committed write takes at most.
pub const MAX_GROUP_ENTRIES: u64 = 4096;

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

fn run(log: Shared, mut rx: mpsc::Receiver<Request>) {
    // A request taken from the queue while gathering a group, to be served
    // next.
    let mut next: Option<Request> = None;
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
                // Group commit: take every append already waiting. They are
                // contiguous — `append` checked that against the overlay and
                // a truncation or purge in between ends the group.
                while group_last - first + 1 < MAX_GROUP_ENTRIES {
                    match rx.try_recv() {
                        Ok(Request::Append { last, callback, .. }) => {
                            group_last = last;
                            callbacks.push(callback);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = log.write(first, group_last);
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
