//! Where a rebuild stops: [`StopAt`], and [`resolve`], which turns it into
//! the index of the last entry to apply in one partition.
//!
//! Every log record carries the timestamp its leader assigned (the same on
//! every replica, covered by the hash chain, never below the previous
//! record's), and the chat state machine applies each command at that time:
//! it is the command's time. So "the state at time T" is the state after
//! the last entry whose timestamp is at most T, and because timestamps
//! never decrease along a log, that entry is found by reading the log up to
//! the first record past T.

use std::ops::ControlFlow;

use missive_log::fs::StdFs;
use missive_log::verify::read_dir;

use super::rebuild::{check_problem, max_record_bytes};
use super::{OfflineError, Source};

/// Where a rebuild stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// At the end of the log on disk.
    End,
    /// After the entry at this index (or at the end of the log, if it ends
    /// before it).
    Index(u64),
    /// After the last entry whose timestamp (ms since the Unix epoch) is at
    /// most this: before the first entry whose timestamp passes it.
    Time(u64),
}

/// A stop point resolved for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// No entry: the time lies before the partition's first entry.
    Nothing,
    /// Up to and including this index.
    Through(u64),
    /// Everything on disk.
    End,
}

impl Target {
    /// Whether the entry at `index` is within the target.
    pub fn covers(&self, index: u64) -> bool {
        match self {
            Target::Nothing => false,
            Target::Through(n) => index <= *n,
            Target::End => true,
        }
    }
}

/// Resolves `stop` for partition `p` of `source`. A time is looked up in
/// the log: the records are read (headers and CRCs, nothing applied) up to
/// the first one past it.
///
/// Fails when the log on disk cannot tell: the time falls in entries it
/// does not hold (before its first record, when records below it were
/// deleted by retention or never held by a replica that caught up by
/// snapshot, or in such a gap).
pub fn resolve(source: &Source, p: u32, stop: StopAt) -> Result<Target, OfflineError> {
    let t = match stop {
        StopAt::End => return Ok(Target::End),
        StopAt::Index(n) => return Ok(Target::Through(n)),
        StopAt::Time(t) => t,
    };
    let dir = source.log_dir(p);
    // The last record at or before `t`, and the first one after it.
    let mut last_le: Option<u64> = None;
    let mut first_gt: Option<u64> = None;
    let report = read_dir(&StdFs, &dir, max_record_bytes(), |h, _| {
        if h.timestamp > t {
            first_gt = Some(h.index);
            return ControlFlow::Break(());
        }
        last_le = Some(h.index);
        ControlFlow::Continue(())
    })?;
    if first_gt.is_none() {
        check_problem(&dir, report.problem)?;
    }
    let missing = |reason: String| OfflineError::Missing {
        partition: p,
        reason,
    };
    match (last_le, first_gt) {
        // Past the end of the log: all of it.
        (Some(_), None) => Ok(Target::End),
        (Some(i), Some(j)) if j == i + 1 => Ok(Target::Through(i)),
        (Some(i), Some(j)) => Err(missing(format!(
            "the time falls between records {i} and {j}, and this log does not hold \
             the entries in between (it caught up by snapshot)"
        ))),
        (None, Some(0)) => Ok(Target::Nothing),
        (None, Some(j)) => Err(missing(format!(
            "the log on disk starts at index {j}, after the time asked for; the entries \
             before it are not here (deleted by retention, or never held by this replica), \
             so the state at that time cannot be rebuilt from this directory"
        ))),
        // An empty log: nothing was ever written, unless a snapshot holds
        // entries whose times no record here tells.
        (None, None) if source.snapshot_path(p).exists() => Err(missing(
            "the log on disk holds no record to place the snapshot in time".into(),
        )),
        (None, None) => Ok(Target::Nothing),
    }
}
