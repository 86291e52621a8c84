//! The limit: how long one `write` of a value at the end of a file plus
//! `fdatasync` takes here, in the directory both clusters write in.
//!
//! A commit cannot be acknowledged before its leader's log has made it
//! durable, so one of these is the floor of a 1-client commit; a 3-node
//! commit also waits for a follower's, on the same disk here, partly in
//! parallel with the leader's.
//!
//! Two loops: **append**, which grows the file (each fdatasync also records
//! the new size and blocks), and **overwrite**, into a file written and
//! synced beforehand: data alone, the device's floor. missive-log writes
//! into zeros it keeps prepared ahead of its records (docs/log-design.md,
//! "Prepared space"), as into a preallocated WAL segment, so the goal is
//! measured against the faster of the two.
//!
//! Then the overwrite loop three times at once, each on its own file and
//! thread: the three nodes' logs share this disk, and a flush is the
//! device's, so three at once each wait longer than one alone. It is what
//! a leader's and a follower's fdatasyncs cost while the third node syncs
//! too, as in every round of the benchmark's clusters.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use missive_benches::stats::quantile;

use crate::VALUE_BYTES;

/// Latencies of a write + fdatasync loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncLatency {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// How many write + fdatasync pairs the figures come from.
    pub(crate) syncs: u64,
}

/// Size of the file the overwrite loop writes into: more than it can fill
/// in its time at this disk's speeds (it wraps around if not).
const OVERWRITE_FILE_BYTES: usize = 16 << 20;

/// Both loops of one measurement.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit {
    pub(crate) append: SyncLatency,
    pub(crate) overwrite: SyncLatency,
    /// [`CONCURRENT_LOOPS`] overwrite loops at once, their latencies
    /// together.
    pub(crate) concurrent: SyncLatency,
}

/// Overwrite loops run at once: one per node of a cluster.
pub(crate) const CONCURRENT_LOOPS: usize = 3;

impl Limit {
    /// The loop with the lower p50: what the 1-client goal is measured
    /// against.
    pub(crate) fn floor(&self) -> &SyncLatency {
        if self.overwrite.p50_us < self.append.p50_us {
            &self.overwrite
        } else {
            &self.append
        }
    }
}

/// Runs the append loop, then the overwrite loop, then the overwrite
/// loops at once, each for `time`.
pub(crate) fn measure_limit(dir: &Path, time: Duration) -> Result<Limit> {
    let append = summary(fdatasync_latency(dir, 0, time, false)?);
    let overwrite = summary(fdatasync_latency(dir, 0, time, true)?);
    let loops = missive_benches::run_each(CONCURRENT_LOOPS, true, |i| {
        fdatasync_latency(dir, i, time, true)
    })?;
    Ok(Limit {
        append,
        overwrite,
        concurrent: summary(loops.concat()),
    })
}

fn summary(mut latencies_us: Vec<f64>) -> SyncLatency {
    SyncLatency {
        syncs: latencies_us.len() as u64,
        p50_us: quantile(&mut latencies_us, 0.5).unwrap_or(f64::NAN),
        p99_us: quantile(&mut latencies_us, 0.99).unwrap_or(f64::NAN),
    }
}

/// Writes [`VALUE_BYTES`] bytes and fdatasyncs, one after the other, for
/// `time`, into a new file in `dir` (removed afterwards; `n` tells loops
/// running at once apart): appending to it from empty, or, with
/// `overwrite`, over its first bytes once it has been filled and synced.
/// Returns each pair's latency, µs.
fn fdatasync_latency(dir: &Path, n: usize, time: Duration, overwrite: bool) -> Result<Vec<f64>> {
    let path = dir.join(format!("limit-write-fdatasync-{n}"));
    let mut file = File::create_new(&path).with_context(|| format!("creating {path:?}"))?;
    if overwrite {
        file.write_all(&vec![0; OVERWRITE_FILE_BYTES])
            .context("limit fill")?;
        file.sync_all().context("limit fill fsync")?;
        file.seek(SeekFrom::Start(0)).context("limit seek")?;
    }
    let value = [0x5A; VALUE_BYTES];
    let mut latencies_us = Vec::new();
    let mut written = 0;
    let start = Instant::now();
    while start.elapsed() < time {
        if overwrite && written + VALUE_BYTES > OVERWRITE_FILE_BYTES {
            file.seek(SeekFrom::Start(0)).context("limit seek")?;
            written = 0;
        }
        let t = Instant::now();
        file.write_all(&value).context("limit write")?;
        file.sync_data().context("limit fdatasync")?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        written += VALUE_BYTES;
    }
    drop(file);
    fs::remove_file(&path).with_context(|| format!("removing {path:?}"))?;
    Ok(latencies_us)
}
