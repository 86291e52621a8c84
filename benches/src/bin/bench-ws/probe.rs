//! A probe of the disk the systems write to: a thread of this process
//! that writes 512 bytes and fdatasyncs them, 200 times a second, into a
//! file beside the systems' data, for the whole run, and notes every call
//! that took the latency goal or longer — a stall of the disk.
//!
//! Why: on a shared virtual disk fdatasync sometimes takes hundreds of
//! milliseconds for everyone at once, whatever is written. A system that
//! acknowledges and delivers only what is on disk waits through those
//! stalls like the probe does. Each measured window then says how many of
//! its over-goal messages were in flight while the probe saw the disk
//! stall: how much of the tail the disk alone explains. The goal is still
//! judged on every message.
//!
//! The probe adds 200 small fdatasyncs a second to the disk's load, for
//! every system alike.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::Clock;
use crate::report::GOAL_P99_US;

/// Probe writes per second.
const RATE: f64 = 200.0;

/// Bytes each probe write puts down.
const WRITE_BYTES: usize = 512;

/// The probe file's size: written over, round and round, so that no write
/// extends the file (an fdatasync then has data alone to flush, as a
/// partition log's does over its prepared zeros).
const FILE_BYTES: u64 = 1 << 20;

/// Stalls kept at most; later ones are dropped (a disk stalling that often
/// is reported by the count the run has already).
const MAX_STALLS: usize = 100_000;

/// The stalls seen so far: `(start, end)` in µs of the benchmark's clock.
static STALLS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Starts the probe on a file in `dir`; it runs until the process exits.
pub(crate) fn start(dir: &Path, clock: Clock) -> Result<()> {
    let path = dir.join("disk-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all_at(&vec![0; FILE_BYTES as usize], 0)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("preparing {}", path.display()))?;
    std::thread::Builder::new()
        .name("disk-probe".into())
        .spawn(move || {
            let block = [0x5a_u8; WRITE_BYTES];
            let every = Duration::from_secs_f64(1.0 / RATE);
            let mut next = Instant::now();
            let mut offset = 0;
            loop {
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let start = clock.now_us();
                if let Err(e) = file
                    .write_all_at(&block, offset)
                    .and_then(|()| file.sync_data())
                {
                    eprintln!("the disk probe stopped: {e}");
                    return;
                }
                let end = clock.now_us();
                if (end - start) as f64 >= GOAL_P99_US
                    && let Ok(mut stalls) = STALLS.lock()
                    && stalls.len() < MAX_STALLS
                {
                    stalls.push((start, end));
                }
                offset = (offset + WRITE_BYTES as u64) % FILE_BYTES;
            }
        })
        .context("starting the disk probe")?;
    Ok(())
}

/// The stalls that overlap `[from, to)` (µs of the benchmark's clock).
pub(crate) fn stalls(from: u64, to: u64) -> Vec<(u64, u64)> {
    STALLS
        .lock()
        .map(|s| {
            s.iter()
                .filter(|&&(a, b)| a < to && b > from)
                .copied()
                .collect()
        })
        .unwrap_or_default()
}
