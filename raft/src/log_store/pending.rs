//! Entries accepted by `append` that are not durable yet.
//!
//! openraft requires an appended entry to be readable as soon as `append`
//! returns, but the flush is asynchronous; missive-log shows readers only
//! durable records. This overlay bridges the two: `append` puts entries here
//! (stamping the leader's timestamps), the writer thread encodes them from
//! here, and removes them once `append_at` has returned — after fdatasync.
//!
//! # Invariants
//!
//! - The entries are contiguous by index.
//! - An entry leaves the overlay only after it is readable from the log (or
//!   after the write that would have made it so failed), so a reader that
//!   takes the overlay first and then reads the log below the overlay's first
//!   index misses nothing.
//! - Timestamps never decrease within a log: a stamp is at least the
//!   timestamp of every entry accepted before it, so a leader whose clock is
//!   behind its predecessor's does not make time run backwards.
//!
//! Its size is bounded by the writer queue: at most `WRITE_QUEUE_DEPTH`
//! appends are in flight, each holding one openraft batch.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::types::Entry;

/// Entries not yet durable, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The entries, contiguous by index.
    entries: VecDeque<Entry>,
    /// The timestamp of the newest entry ever accepted: new stamps never go
    /// below it.
    last_timestamp: u64,
}

impl Pending {
    /// An empty overlay whose next stamp is at least `last_timestamp` (the
    /// timestamp of the log's last record).
    pub fn new(last_timestamp: u64) -> Self {
        Pending {
            entries: VecDeque::new(),
            last_timestamp,
        }
    }

    /// Index of the oldest entry, if any.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// The newest entry, if any.
    pub fn last(&self) -> Option<&Entry> {
        self.entries.back()
    }

    /// Accepts `entries`, stamping those without a timestamp with
    /// `now_ms()` (raised to keep timestamps non-decreasing). Returns the
    /// first and last index accepted, or `None` for no entries.
    pub fn push(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        now_ms: impl Fn() -> u64,
    ) -> Result<Option<(u64, u64)>> {
        let mut range = None;
        let before = self.entries.len();
        for mut e in entries {
            let index = e.log_id.index;
            let expected = self.entries.back().map(|b| b.log_id.index + 1);
            if let Some(expected) = expected
                && index != expected
            {
                // Leave no half-accepted batch behind.
                self.entries.truncate(before);
                return Err(Error::NonContiguousAppend {
                    last: expected - 1,
                    found: index,
                });
            }
            let ts = match e.timestamp_ms {
                Some(ts) => ts,
                None => now_ms().max(self.last_timestamp),
            };
            e.timestamp_ms = Some(ts);
            self.last_timestamp = self.last_timestamp.max(ts);
            self.entries.push_back(e);
            range = Some((range.map_or(index, |(first, _)| first), index));
        }
        Ok(range)
    }

    /// The entries with indexes in `from..to`.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .skip_while(move |e| e.log_id.index < from)
            .take_while(move |e| e.log_id.index < to)
    }

    /// Removes the entries up to and including `index`: they are durable
    /// and readable from the log now (or purged).
    pub fn remove_through(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.entries.pop_front();
        }
    }

    /// Removes the entries from `index` on: truncated, or never to be
    /// durable because their write failed.
    pub fn remove_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            self.entries.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::types::{LeaderId, LogId};

    fn blank(index: u64, timestamp_ms: Option<u64>) -> Entry {
        let mut e = Entry::new_blank(LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ));
        e.timestamp_ms = timestamp_ms;
        e
    }

    #[test]
    fn stamps_only_unstamped_entries_and_never_goes_backwards() {
        let mut p = Pending::new(500);
        p.push(
            [blank(0, None), blank(1, Some(900)), blank(2, None)],
            || 700,
        )
        .expect("contiguous");
        let ts: Vec<_> = p.range(0, 3).map(|e| e.timestamp_ms).collect();
        // 700 ≥ 500; the follower-style stamp 900 is kept; the next stamp is
        // raised to 900 rather than going back to 700.
        assert_eq!(ts, [Some(700), Some(900), Some(900)]);
    }

    #[test]
    fn a_gap_is_refused_and_leaves_nothing_behind() {
        let mut p = Pending::new(0);
        p.push([blank(5, None)], || 1).expect("first batch");
        let err = p
            .push([blank(6, None), blank(8, None)], || 1)
            .expect_err("gap");
        assert!(matches!(
            err,
            Error::NonContiguousAppend { last: 6, found: 8 }
        ));
        assert_eq!(p.last().map(|e| e.log_id.index), Some(5));
    }

    #[test]
    fn removal_from_both_ends() {
        let mut p = Pending::new(0);
        p.push((10..20).map(|i| blank(i, None)), || 1)
            .expect("contiguous");
        p.remove_through(12);
        p.remove_from(15);
        assert_eq!(p.first_index(), Some(13));
        assert_eq!(p.last().map(|e| e.log_id.index), Some(14));
        assert_eq!(p.range(0, 100).count(), 2);
    }
}
