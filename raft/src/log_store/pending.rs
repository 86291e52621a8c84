//! Entries accepted by `append` that are not durable yet, and the newest
//! durable ones, kept for readers.
//!
//! openraft requires an appended entry to be readable as soon as `append`
//! returns, but the flush is asynchronous; missive-log shows readers only
//! durable records. This overlay bridges the two: `append` puts entries here
//! (stamping the leader's timestamps), the writer thread encodes them from
//! here, and marks them durable once `append_at` has returned — after
//! fdatasync.
//!
//! # The durable tail
//!
//! A durable entry is not dropped at once. The entries just written are the
//! ones read next: openraft's state machine worker reads each committed
//! range right after its flush, and a leader's replication reads what it
//! just appended. Read from the log, each of those reads is a trip to the
//! blocking pool and back, two thread hand-offs per round, which on a small
//! machine cost more than the read. So the newest durable entries stay here,
//! at most [`TAIL_ENTRIES`] of them holding at most [`TAIL_BYTES`] of
//! command bytes, and a read that starts inside the overlay does no I/O.
//!
//! # Invariants
//!
//! - The entries are contiguous by index: the durable tail, then the
//!   entries not yet durable.
//! - The durable tail ends at the log's last record: truncations and purges
//!   of the log remove the same entries here.
//! - An entry not yet durable leaves the overlay only once it is readable
//!   from the log (or after the write that would have made it so failed), so
//!   a reader that takes the overlay first and then reads the log below the
//!   overlay's first index misses nothing.
//! - Timestamps never decrease within a log: a stamp is at least the
//!   timestamp of every entry accepted before it, so a leader whose clock is
//!   behind its predecessor's does not make time run backwards.
//!
//! The entries not yet durable are bounded by the writer queue: at most
//! `WRITE_QUEUE_DEPTH` appends are in flight, each holding one openraft
//! batch.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::types::{Entry, Payload};

/// Durable entries kept for readers at most.
pub const TAIL_ENTRIES: usize = 4096;

/// Command bytes the durable entries kept for readers hold at most.
pub const TAIL_BYTES: usize = 4 << 20;

/// The overlay: the durable tail, then the entries not yet durable, oldest
/// first.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The entries, contiguous by index.
    entries: VecDeque<Entry>,
    /// How many of the oldest entries are durable (the tail readers keep).
    durable: usize,
    /// The command bytes of those.
    durable_bytes: usize,
    /// The timestamp of the newest entry ever accepted: new stamps never go
    /// below it.
    last_timestamp: u64,
}

/// What an entry counts against [`TAIL_BYTES`].
fn weight(e: &Entry) -> usize {
    match &e.payload {
        Payload::Normal(c) => c.body.len() + c.request_id.len(),
        Payload::Blank | Payload::Membership(_) => 0,
    }
}

impl Pending {
    /// An empty overlay whose next stamp is at least `last_timestamp` (the
    /// timestamp of the log's last record).
    pub fn new(last_timestamp: u64) -> Self {
        Pending {
            entries: VecDeque::new(),
            durable: 0,
            durable_bytes: 0,
            last_timestamp,
        }
    }

    /// Index of the oldest entry held, durable or not, if any: from there
    /// on, readers find every entry here.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// Whether some entries held are not durable yet: a write is in
    /// flight.
    pub fn in_flight(&self) -> bool {
        self.durable < self.entries.len()
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
        // Contiguous, so the positions follow from the first index.
        let first = self.first_index().unwrap_or(0);
        let skip = from.saturating_sub(first).min(self.entries.len() as u64) as usize;
        self.entries
            .range(skip..)
            .take_while(move |e| e.log_id.index < to)
    }

    /// Marks the entries up to and including `index` durable: they are
    /// readable from the log now. The oldest durable ones leave once the
    /// tail passes its bounds.
    pub fn durable_through(&mut self, index: u64) {
        while let Some(e) = self.entries.get(self.durable)
            && e.log_id.index <= index
        {
            self.durable_bytes += weight(e);
            self.durable += 1;
        }
        while self.durable > TAIL_ENTRIES || (self.durable > 0 && self.durable_bytes > TAIL_BYTES) {
            self.pop_front();
        }
    }

    /// Removes the entries up to and including `index`: purged.
    pub fn remove_through(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front()
            && self.durable > 0
        {
            self.durable -= 1;
            self.durable_bytes -= weight(&e);
        }
    }

    /// Removes the entries from `index` on: truncated, or never to be
    /// durable because their write failed.
    pub fn remove_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(e) = self.entries.pop_back()
                && self.entries.len() < self.durable
            {
                self.durable -= 1;
                self.durable_bytes -= weight(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::types::{LeaderId, LogId};

    fn log_id(index: u64) -> LogId {
        LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    fn blank(index: u64, timestamp_ms: Option<u64>) -> Entry {
        let mut e = Entry::new_blank(log_id(index));
        e.timestamp_ms = timestamp_ms;
        e
    }

    /// An overlay holding blank entries `10..20`, none durable yet.
    fn ten_blanks() -> Pending {
        let mut p = Pending::new(0);
        p.push((10..20).map(|i| blank(i, None)), || 1)
            .expect("contiguous");
        p
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
        let mut p = ten_blanks();
        p.remove_through(12);
        p.remove_from(15);
        assert_eq!(p.first_index(), Some(13));
        assert_eq!(p.last().map(|e| e.log_id.index), Some(14));
        assert_eq!(p.range(0, 100).count(), 2);
    }

    fn command(index: u64, bytes: usize) -> Entry {
        Entry::new_normal(
            log_id(index),
            crate::types::Command {
                body: vec![0; bytes],
                request_id: String::new(),
            },
        )
    }

    fn indexes(p: &Pending, from: u64, to: u64) -> Vec<u64> {
        p.range(from, to).map(|e| e.log_id.index).collect()
    }

    #[test]
    fn durable_entries_stay_readable_until_truncated_or_purged() {
        let mut p = ten_blanks();
        p.durable_through(14);
        assert_eq!(p.first_index(), Some(10));
        assert_eq!(indexes(&p, 12, 16), [12, 13, 14, 15]);
        // A truncation reaches into the durable tail; the next append
        // continues after what is left.
        p.remove_from(13);
        assert_eq!(indexes(&p, 0, 100), [10, 11, 12]);
        let err = p.push([blank(14, None)], || 1).expect_err("a gap");
        assert!(matches!(
            err,
            Error::NonContiguousAppend {
                last: 12,
                found: 14
            }
        ));
        p.push([blank(13, None)], || 1).expect("follows the tail");
        p.durable_through(13);
        p.remove_through(11);
        assert_eq!(indexes(&p, 0, 100), [12, 13]);
        // Everything left is durable, and counted once.
        assert_eq!((p.durable, p.durable_bytes), (2, 0));
    }

    #[test]
    fn the_durable_tail_is_bounded_by_entries_and_bytes() {
        let mut p = Pending::new(0);
        let n = TAIL_ENTRIES as u64 + 100;
        p.push((0..n).map(|i| command(i, 10)), || 1)
            .expect("contiguous");
        // Not yet durable: all of it stays, whatever the bounds.
        assert_eq!(p.first_index(), Some(0));
        p.durable_through(n - 1);
        assert_eq!(p.first_index(), Some(100));
        assert_eq!(p.durable, TAIL_ENTRIES);

        let mut p = Pending::new(0);
        let big = TAIL_BYTES / 4;
        p.push((0..10).map(|i| command(i, big)), || 1)
            .expect("contiguous");
        p.durable_through(5);
        // Six durable entries of a quarter of the bound each: the two oldest
        // go; the four not yet durable stay.
        assert_eq!(p.first_index(), Some(2));
        assert_eq!(p.durable_bytes, 4 * big);
        assert_eq!(indexes(&p, 0, 100), (2..10).collect::<Vec<_>>());
    }
}
