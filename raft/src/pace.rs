//! Background writes, paced to the disk.
//!
//! Two writers of a node write tens of MiB at once: the projection store,
//! whose durable commit writes every page changed since the last one, and a
//! snapshot build, which writes the whole state. Left to the page cache,
//! those bytes reach the disk in one burst at their fdatasync, and every
//! other fdatasync on the same disk waits behind it, the partition logs'
//! among them; every acknowledgement waits on those. On the benchmarks'
//! virtual disk the seconds with such a burst (60–120 MiB) were the
//! seconds of the slowest messages (docs/raft-storage.md, "Background
//! writes, paced").
//!
//! So such writers hand what they wrote to the disk a piece at a time
//! ([`hand_to_disk`]) and share one budget of [`BACKGROUND_BYTES_PER_SEC`]
//! for the whole process ([`Budget::reserve`]), waiting when they are ahead
//! of it. Nothing here promises durability: the writers' own fdatasyncs do
//! that, and find little left to write.

use std::fs::File;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The rate the node's background writes keep to, together: about twice
/// what a partition log writes at 5,000 messages a second, so the log's
/// small writes and flushes keep most of the disk, and a 100-MiB durable
/// commit is written in about six seconds, far within the tens of seconds
/// between two.
pub const BACKGROUND_BYTES_PER_SEC: u64 = 16 << 20;

/// How far a writer may run ahead of the budget before it waits: a
/// writer idle for a while starts with this much credit, no more.
const BURST: Duration = Duration::from_millis(50);

/// The process's budget.
pub static BACKGROUND: Budget = Budget::new(BACKGROUND_BYTES_PER_SEC);

/// A shared rate for background writes: a token bucket kept as the moment
/// the bytes reserved so far are paid for.
#[derive(Debug)]
pub struct Budget {
    bytes_per_sec: u64,
    /// When the bytes reserved so far are paid for; `None` before the first.
    paid_until: Mutex<Option<Instant>>,
}

impl Budget {
    /// A budget of `bytes_per_sec`.
    pub const fn new(bytes_per_sec: u64) -> Budget {
        Budget {
            bytes_per_sec,
            paid_until: Mutex::new(None),
        }
    }

    /// Reserves `bytes` written just now; returns how long the writer
    /// should wait before writing more, so that all writers together keep
    /// to the rate. The caller may wait less (someone needs its writes at
    /// once); the bytes stay reserved.
    pub fn reserve(&self, bytes: usize) -> Duration {
        let now = Instant::now();
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut paid = self
            .paid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let floor = now.checked_sub(BURST).unwrap_or(now);
        let start = paid.map_or(floor, |p| p.max(floor));
        let until = start + cost;
        *paid = Some(until);
        until.saturating_duration_since(now)
    }
}

/// Starts writing `file`'s dirty pages to the disk and waits until the
/// disk has them (`sync_file_range`: not a flush of the disk's cache, and
/// no promise of durability).
#[cfg(target_os = "linux")]
pub fn hand_to_disk(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain system call on a descriptor `file` keeps open for
    // the call's length; offset 0 and length 0 mean the whole file.
    #[allow(unsafe_code)]
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the writer's own sync does all of it.
#[cfg(not(target_os = "linux"))]
pub fn hand_to_disk(_: &File) -> io::Result<()> {
    Ok(())
}

/// Hands `bytes` just written to `file` to the disk and waits until the
/// process's background budget has room for them: for writers that nobody
/// waits on (a snapshot build).
pub fn paced(file: &File, bytes: usize) -> io::Result<()> {
    hand_to_disk(file)?;
    let wait = BACKGROUND.reserve(bytes);
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_within_its_burst_does_not_wait() {
        let budget = Budget::new(1 << 20);
        // 50 ms of credit at 1 MiB/s is about 52 KB.
        assert_eq!(budget.reserve(40_000), Duration::ZERO);
    }

    #[test]
    fn writers_share_one_rate() {
        let budget = Budget::new(1 << 20);
        let first = budget.reserve(1 << 20);
        let second = budget.reserve(1 << 20);
        // The first MiB costs a second less the burst's credit; the
        // second, another second behind it.
        assert!(first > Duration::from_millis(900), "{first:?}");
        assert!(first <= Duration::from_secs(1), "{first:?}");
        let gap = second - first;
        assert!(
            gap > Duration::from_millis(990) && gap <= Duration::from_millis(1010),
            "{gap:?}"
        );
    }

    #[test]
    fn idle_time_is_not_saved_up_past_the_burst() {
        let budget = Budget::new(1 << 20);
        let _ = budget.reserve(1 << 10);
        std::thread::sleep(Duration::from_millis(120));
        // However long the budget sat idle, the next MiB waits all but
        // the burst's credit.
        let wait = budget.reserve(1 << 20);
        assert!(wait > Duration::from_millis(900), "{wait:?}");
    }
}
