//! bench-log: missive-log side by side with the physical limits of the disk
//! it runs on, in one run and one directory.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-log -- [--quick] [--dir PATH]
//! ```
//!
//! # Method
//!
//! Everything runs in a fresh directory made under `target/` (or `--dir`), on
//! the repository's filesystem: `/tmp` may be tmpfs, where fdatasync costs
//! nothing and the comparison would mean nothing. The filesystem is printed.
//! The machine is shared and noisy, so every timed figure is the median of
//! several runs (a single run under `--quick`), with missive and its raw
//! counterparts run alternately so that drift hits both alike.
//!
//! - **Raw sequential write**: 1 MiB `write_all`s to a new file, one
//!   `sync_data` (fdatasync) after every 8 MiB, timed up to the last sync:
//!   the bandwidth the disk gives this process (median of at least 3 runs).
//! - **missive appends**: 1, 16 and 256 threads each `append` one record per
//!   call for a fixed time, into a new log with the default options
//!   (fdatasync before acknowledging). Reported: appends/s, MB/s of record
//!   bytes (64 B header + payload), latency p50/p99 of one `append`, and the
//!   mean group-commit batch, counted from the `batch_offset` of the record
//!   headers on disk afterwards.
//! - **Raw write + fdatasync**: a loop of `write_all` of `batch` records of
//!   the same size, then `sync_data`, on a new file; `batch` is the mean
//!   batch missive reached in the run just before, so 1 appender is compared
//!   with one record per write + fdatasync. The ratio is the median of these
//!   pairs. The same loop is run again writing over zeros kept 1 MiB ahead
//!   of it (made durable with the write that adds them), as the log writes
//!   into its prepared space: an overwrite's fdatasync commits no file
//!   metadata, so this is the faster limit, and the 1-appender goal is
//!   judged against the faster of the two. The same loop with `batch` = the
//!   number of appenders shows the
//!   most that many one-record appenders could reach (each has one record in
//!   flight, so no batch can be larger): the ceiling under the 256-appender
//!   goal.
//! - **Reopen**: a log of at least 1 GiB (1–4 KiB records in batches of 256,
//!   built with `SyncMode::NoSyncBenchmarkOnly`, then flushed with fsync), its
//!   active segment filled nearly to the roll size, the worst case for the
//!   tail scan; dropped and opened again, median of 5 opens, warm page cache.
//! - **Scan**: `range(first, next)` over that log, taking every payload,
//!   against reading its segment files with 1 MiB `read`s; both from the page
//!   cache (a raw read warms it). Both rates divide the segment files' bytes
//!   by the time taken.
//!
//! MB are 10^6 bytes. The last line of stdout is one JSON object holding
//! every figure; progress goes to stderr.
//!
//! # Goals
//!
//! - 1 appender: ≥ 80 % of the faster raw write + fdatasync loop.
//! - 256 appenders: ≥ 60 % of the raw sequential write bandwidth.
//! - Scan: ≥ 80 % of the raw read rate.
//! - Reopen of a 1 GiB log: < 200 ms.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use missive_benches::stats::quantile;
use missive_log::format::RECORD_HEADER_LEN;
use missive_log::fs::StdFs;
use missive_log::verify::read_dir;
use missive_log::{Log, Options, Record, SyncMode};
use serde_json::{Value, json};

mod appends;
mod raw;
mod reopen_scan;
mod report;

use appends::*;
use raw::*;
use reopen_scan::*;
use report::*;

const USAGE: &str = "bench-log [--quick] [--dir PATH]";
const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Payload sizes of the append cases.
const PAYLOADS: [usize; 2] = [256, 1024];
/// Concurrent appender threads of the append cases.
const APPENDERS: [usize; 3] = [1, 16, 256];
/// The write size and the fdatasync interval of the raw sequential write.
const SEQ_CHUNK: u64 = MIB;
const SEQ_SYNC_EVERY: u64 = 8 * MIB;
/// The buffer of the raw read.
const READ_BUF: usize = 1 << 20;
/// Payload sizes cycled through when building the reopen log, and the
/// records per append.
const BUILD_PAYLOADS: [usize; 4] = [1024, 2048, 3072, 4032];
const BUILD_BATCH: usize = 256;
const REOPENS: usize = 5;
/// Every record's timestamp: the log stores it, nothing here reads it.
const TIMESTAMP: u64 = 1_700_000_000_000;

/// How long and how often each measurement runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Length of one missive append run and of one raw write + fdatasync run.
    pub(crate) case_time: Duration,
    /// Runs per figure; the median is reported.
    pub(crate) repeats: usize,
    /// Bytes written by one raw sequential write run.
    pub(crate) seq_write_bytes: u64,
    /// Minimum size of the reopen log.
    pub(crate) reopen_log_bytes: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                case_time: Duration::from_millis(750),
                repeats: 1,
                seq_write_bytes: 128 * MIB,
                reopen_log_bytes: GIB,
            }
        } else {
            Plan {
                quick,
                case_time: Duration::from_millis(1500),
                repeats: 5,
                seq_write_bytes: GIB,
                reopen_log_bytes: GIB,
            }
        }
    }

    /// At least 3 even under --quick: every 256-appender ratio divides by
    /// this figure, and single runs of it were seen to vary fourfold.
    fn seq_write_runs(&self) -> usize {
        self.repeats.max(3)
    }
}

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) dir: Option<PathBuf>,
}

pub(crate) fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        dir: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--quick") => args.quick = true,
            Some("--dir") => args.dir = Some(it.next().context("--dir needs a path")?.into()),
            Some("-h" | "--help") => {
                println!("usage: {USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}; usage: {USAGE}"),
        }
    }
    Ok(args)
}

pub(crate) fn main() -> Result<()> {
    let started = Instant::now();
    let args = parse_args()?;
    let plan = Plan::new(args.quick);
    let base = args.dir.unwrap_or_else(|| PathBuf::from("target"));
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let bench_dir = tempfile::Builder::new()
        .prefix("bench-log-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a directory in {}", base.display()))?;
    let dir = bench_dir.path().to_owned();
    let dir = dir.as_path();
    let filesystem = filesystem_of(dir);

    progress("raw sequential write");
    let seq_write_mb_s = median(
        (0..plan.seq_write_runs()).map(|_| raw_sequential_write(dir, plan.seq_write_bytes)),
    )?;
    let mut cases = Vec::new();
    for payload in PAYLOADS {
        for threads in APPENDERS {
            progress(&format!("appends: {threads} threads, {payload} B payloads"));
            cases.push(append_case(dir, plan, threads, payload, seq_write_mb_s)?);
        }
    }
    progress("building the reopen log");
    let log_dir = dir.join("reopen-log");
    let built = build_log(&log_dir, plan.reopen_log_bytes)?;
    progress("reopening");
    let reopen = reopen_runs(&log_dir)?;
    progress("scanning");
    let scan = scan_runs(&log_dir, plan)?;

    let goals = goals(&cases, &scan, &reopen);
    bench_dir.close().context("removing the bench directory")?;
    let runtime = started.elapsed();
    let report = Report {
        plan,
        dir,
        filesystem,
        seq_write_mb_s,
        cases,
        built,
        reopen,
        scan,
        goals,
    };
    print_table(&report, runtime);
    println!("{}", report.json(runtime));
    Ok(())
}

pub(crate) fn progress(what: &str) {
    eprintln!("bench-log: {what}…");
}

/// The median of runs that may fail.
pub(crate) fn median(runs: impl Iterator<Item = Result<f64>>) -> Result<f64> {
    let mut values = runs.collect::<Result<Vec<f64>>>()?;
    quantile(&mut values, 0.5).context("no runs to take the median of")
}

/// The median of one field over several runs.
pub(crate) fn median_of<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(field).collect();
    quantile(&mut values, 0.5).unwrap_or(f64::NAN)
}

/// The type and device of the filesystem holding `path`, from
/// /proc/self/mounts (the mount point that is its longest prefix).
pub(crate) fn filesystem_of(path: &Path) -> String {
    let (Ok(path), Ok(mounts)) = (path.canonicalize(), fs::read_to_string("/proc/self/mounts"))
    else {
        return "unknown".to_owned();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _)| mount_point.len())
        .map_or_else(
            || "unknown".to_owned(),
            |(device, _, kind)| format!("{kind} on {device}"),
        )
}
