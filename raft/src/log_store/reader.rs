//! Reading a partition's Raft log: openraft's `RaftLogReader`.
//!
//! A read takes the overlay of not-yet-durable entries first, then reads the
//! durable log below the overlay's first index (see `pending` for why that
//! order misses nothing). Reads that the overlay answers alone — replication
//! of what was just appended, the common case — never touch the disk; the
//! others run on tokio's blocking pool, because a read of a sealed segment
//! can fault pages in from disk.
//!
//! Like an in-memory map, a range is answered with the entries that exist in
//! it: purged indexes below and missing ones above are left out.
//!
//! # Bounds
//!
//! Streams and replication batches read at most [`MAX_READ_BYTES`] of
//! payload at a time, so catching up a far-behind follower or re-applying a
//! long log after a restart runs in bounded memory.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use futures_util::stream::{self, BoxStream, StreamExt};
use openraft::OptionalSend;
use openraft::errors::LeaderChanged;
use openraft::storage::{LeaderBoundedStreamError, LeaderBoundedStreamResult, RaftLogReader};

use super::partition_log::Shared;
use crate::error::{Error, Result};
use crate::types::{Entry, LeaderId, TypeConfig, Vote};

/// Payload bytes one bounded read returns at most (it returns at least one
/// entry, whatever its size).
pub const MAX_READ_BYTES: usize = 1 << 20;

/// A reader of one partition's Raft log; cheap to clone.
#[derive(Clone, Debug)]
pub struct LogReader {
    /// The partition's log, shared with the store and its writer thread.
    pub(crate) log: Shared,
}

/// Runs blocking log I/O on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    log: &Shared,
    f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
) -> Result<T> {
    let owned = log.clone();
    tokio::task::spawn_blocking(move || f(&owned))
        .await
        .map_err(|e| Error::io("blocking log task", log.dir(), io::Error::other(e)))?
}

/// The entries in `from..to` that exist, durable or not, oldest first, with
/// at most about `max_bytes` of durable payload.
pub(crate) async fn read(log: &Shared, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Entry>> {
    if from >= to {
        return Ok(Vec::new());
    }
    log.check_readable()?;
    let (pending_first, pending) = log.read_pending(from, to);
    let log_to = pending_first.map_or(to, |p| p.min(to));
    if from >= log_to {
        return Ok(pending);
    }
    let mut out = blocking(log, move |l| l.read_log(from, log_to, max_bytes)).await?;
    // Add the overlay only where it continues what the log gave: a read cut
    // short by `max_bytes` must not skip to the overlay and leave a gap.
    let continues = match (out.last(), pending.first()) {
        (Some(l), Some(p)) => l.log_id.index + 1 == p.log_id.index,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    if continues {
        out.extend(pending);
    }
    Ok(out)
}

/// `range` as a half-open `from..to`.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// The next chunk of `cur..to`; `None` once nothing is left in the range.
async fn next_chunk(log: &Shared, cur: u64, to: u64) -> Result<Option<Vec<Entry>>> {
    if cur >= to {
        return Ok(None);
    }
    let chunk = read(log, cur, to, MAX_READ_BYTES).await?;
    Ok((!chunk.is_empty()).then_some(chunk))
}

/// Where a chunked stream continues after `chunk`.
fn after(chunk: &[Entry]) -> Option<u64> {
    chunk.last().map(|e| e.log_id.index + 1)
}

fn leader_changed(leader: LeaderId, vote: Option<Vote>) -> LeaderBoundedStreamError<TypeConfig> {
    LeaderBoundedStreamError::LeaderChanged(LeaderChanged::new(leader, vote))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (from, to) = bounds(&range);
        Ok(read(&self.log, from, to, usize::MAX).await?)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.log.meta().vote)
    }

    /// Replication reads: bounded, so one batch to a lagging follower never
    /// holds more than about [`MAX_READ_BYTES`] in memory.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        Ok(read(&self.log, start, end, MAX_READ_BYTES).await?)
    }

    /// Entries for the state machine, read chunk by chunk as it consumes
    /// them.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl futures_util::Stream<Item = io::Result<Entry>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (from, to) = bounds(&range);
        let log = self.log.clone();
        stream::unfold(Some(from), move |cur| {
            let log = log.clone();
            async move {
                let cur = cur?;
                match next_chunk(&log, cur, to).await {
                    Ok(None) => None,
                    Ok(Some(chunk)) => {
                        let next = after(&chunk);
                        Some((chunk.into_iter().map(Ok).collect::<Vec<_>>(), next))
                    }
                    Err(e) => Some((vec![Err(io::Error::from(e))], None)),
                }
            }
        })
        .flat_map(stream::iter)
    }

    /// Entries for replication by `leader`, only while this node's vote is
    /// `leader`'s committed vote: a changed vote may mean the log was cut
    /// under the read, so the stream stops with `LeaderChanged` instead.
    async fn leader_bounded_stream<RB>(
        &mut self,
        leader: LeaderId,
        range: RB,
    ) -> impl futures_util::Stream<Item = LeaderBoundedStreamResult<TypeConfig>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (from, to) = bounds(&range);
        let expected = self.log.meta().vote;
        if !expected.is_some_and(|v| v.leader_id() == &leader && v.is_committed()) {
            let once: BoxStream<'static, _> =
                stream::iter([Err(leader_changed(leader, expected))]).boxed();
            return once;
        }
        let log = self.log.clone();
        stream::unfold(Some(from), move |cur| {
            let log = log.clone();
            async move {
                let cur = cur?;
                let chunk = next_chunk(&log, cur, to).await;
                // Checked after the read: entries read while the vote moved
                // cannot be trusted.
                let now = log.meta().vote;
                if now != expected {
                    return Some((vec![Err(leader_changed(leader, now))], None));
                }
                match chunk {
                    Ok(None) => None,
                    Ok(Some(chunk)) => {
                        let next = after(&chunk);
                        Some((chunk.into_iter().map(Ok).collect::<Vec<_>>(), next))
                    }
                    Err(e) => Some((vec![Err(LeaderBoundedStreamError::IoError(e.into()))], None)),
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::bounds;

    #[test]
    fn range_bounds_become_half_open() {
        assert_eq!(bounds(&(3..7)), (3, 7));
        assert_eq!(bounds(&(3..=7)), (3, 8));
        assert_eq!(bounds(&(3..)), (3, u64::MAX));
        assert_eq!(bounds(&(..)), (0, u64::MAX));
        assert_eq!(bounds(&(..=u64::MAX)), (0, u64::MAX));
    }
}
