//! The limit: how long one `write` of a value at the end of a file plus
//! `fdatasync` takes here, in the directory both clusters write in.
//!
//! A commit cannot be acknowledged before its leader's log has made it
//! durable, so one of these is the floor of a 1-client commit; a 3-node
//! commit also waits for a follower's, on the same disk here, partly in
//! parallel with the leader's.

use std::fs::{self, File};
use std::io::Write;
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

/// Appends [`VALUE_BYTES`] bytes and fdatasyncs, one after the other, for
/// `time`, to a new file in `dir` (removed afterwards). Appending grows the
/// file, as a log's appends do, so each fdatasync also writes the new size.
pub(crate) fn fdatasync_latency(dir: &Path, time: Duration) -> Result<SyncLatency> {
    let path = dir.join("limit-write-fdatasync");
    let mut file = File::create_new(&path).with_context(|| format!("creating {path:?}"))?;
    let value = [0x5A; VALUE_BYTES];
    let mut latencies_us = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time {
        let t = Instant::now();
        file.write_all(&value).context("limit write")?;
        file.sync_data().context("limit fdatasync")?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    fs::remove_file(&path).with_context(|| format!("removing {path:?}"))?;
    Ok(SyncLatency {
        syncs: latencies_us.len() as u64,
        p50_us: quantile(&mut latencies_us, 0.5).unwrap_or(f64::NAN),
        p99_us: quantile(&mut latencies_us, 0.99).unwrap_or(f64::NAN),
    })
}
