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
//!   pairs. The same loop with `batch` = the number of appenders shows the
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
//! - 1 appender: ≥ 80 % of the raw write + fdatasync rate.
//! - 256 appenders: ≥ 60 % of the raw sequential write bandwidth.
//! - Scan: ≥ 80 % of the raw read rate.
//! - Reopen of a 1 GiB log: < 200 ms.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use missive_benches::stats::quantile;
use missive_log::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, decode_record_header};
use missive_log::{Log, Options, Record, SyncMode};
use serde_json::{Value, json};

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
struct Plan {
    quick: bool,
    /// Length of one missive append run and of one raw write + fdatasync run.
    case_time: Duration,
    /// Runs per figure; the median is reported.
    repeats: usize,
    /// Bytes written by one raw sequential write run.
    seq_write_bytes: u64,
    /// Minimum size of the reopen log.
    reopen_log_bytes: u64,
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
struct Args {
    quick: bool,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
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

fn main() -> Result<()> {
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

fn progress(what: &str) {
    eprintln!("bench-log: {what}…");
}

/// The median of runs that may fail.
fn median(runs: impl Iterator<Item = Result<f64>>) -> Result<f64> {
    let mut values = runs.collect::<Result<Vec<f64>>>()?;
    quantile(&mut values, 0.5).context("no runs to take the median of")
}

/// The median of one field over several runs.
fn median_of<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(field).collect();
    quantile(&mut values, 0.5).unwrap_or(f64::NAN)
}

/// The type and device of the filesystem holding `path`, from
/// /proc/self/mounts (the mount point that is its longest prefix).
fn filesystem_of(path: &Path) -> String {
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

// ---------------------------------------------------------------------------
// Raw limits

/// One raw sequential write run: MB/s up to the final fdatasync.
fn raw_sequential_write(dir: &Path, total: u64) -> Result<f64> {
    let path = dir.join("raw-sequential-write");
    let mut file = File::create_new(&path).with_context(|| format!("creating {path:?}"))?;
    let chunk = vec![0x5A; SEQ_CHUNK as usize];
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        file.write_all(&chunk).context("raw sequential write")?;
        written += SEQ_CHUNK;
        if written.is_multiple_of(SEQ_SYNC_EVERY) || written >= total {
            file.sync_data().context("raw sequential fdatasync")?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path).with_context(|| format!("removing {path:?}"))?;
    Ok(written as f64 / secs / MB)
}

/// One run of a raw write + fdatasync loop.
#[derive(Clone, Copy, Debug)]
struct RawSync {
    records_per_s: f64,
    mb_per_s: f64,
}

/// Writes `batch` records of `record_len` bytes per `write_all`, each
/// followed by an fdatasync, for `time`.
fn raw_synced_writes(
    dir: &Path,
    record_len: usize,
    batch: usize,
    time: Duration,
) -> Result<RawSync> {
    let path = dir.join("raw-synced-writes");
    let mut file = File::create_new(&path).with_context(|| format!("creating {path:?}"))?;
    let buf = vec![0x5A; record_len * batch];
    let start = Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < time {
        file.write_all(&buf).context("raw write")?;
        file.sync_data().context("raw fdatasync")?;
        writes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path).with_context(|| format!("removing {path:?}"))?;
    let records = writes * batch as u64;
    Ok(RawSync {
        records_per_s: records as f64 / secs,
        mb_per_s: (records * record_len as u64) as f64 / secs / MB,
    })
}

/// Reads every file of `files` with 1 MiB reads; returns the bytes read.
fn raw_read(files: &[PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0u64;
    for path in files {
        let mut file = File::open(path).with_context(|| format!("opening {path:?}"))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {path:?}"))?;
            if n == 0 {
                break;
            }
            black_box(&buf[..n]);
            total += n as u64;
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Appends

/// One run of concurrent missive appenders.
#[derive(Clone, Copy, Debug)]
struct AppendRun {
    appends_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Records per group-commit batch (per write + fdatasync), on average.
    mean_batch: f64,
}

/// One append case: the medians of missive and of the raw loops with the
/// same record size.
#[derive(Clone, Copy, Debug)]
struct AppendCase {
    threads: usize,
    payload: usize,
    missive: AppendRun,
    /// The records per write of the raw loop: missive's mean batch.
    raw_batch: usize,
    raw: RawSync,
    /// The raw loop with one record per appender per write: the most that
    /// `threads` one-record appenders could reach, even with every one of
    /// them in each batch. `None` for one appender (it is `raw`).
    ceiling: Option<RawSync>,
    /// missive's appends/s over the raw loop's records/s, run by run.
    ratio_to_raw_sync: f64,
    /// missive's MB/s over the raw sequential write bandwidth.
    ratio_to_seq_write: f64,
}

/// One repeat of an append case: a missive run, then the raw loops that
/// mirror it, run right after it so that both see the same disk.
#[derive(Clone, Copy, Debug)]
struct Repeat {
    missive: AppendRun,
    raw_batch: usize,
    raw: RawSync,
    ceiling: Option<RawSync>,
}

fn append_case(
    dir: &Path,
    plan: Plan,
    threads: usize,
    payload: usize,
    seq_write_mb_s: f64,
) -> Result<AppendCase> {
    let record_len = RECORD_HEADER_LEN + payload;
    let mut repeats = Vec::with_capacity(plan.repeats);
    for _ in 0..plan.repeats {
        let missive = missive_appends(dir, threads, payload, plan.case_time)?;
        let raw_batch = (missive.mean_batch.round() as usize).max(1);
        let raw = raw_synced_writes(dir, record_len, raw_batch, plan.case_time)?;
        let ceiling = match threads {
            1 => None,
            _ => Some(raw_synced_writes(dir, record_len, threads, plan.case_time)?),
        };
        repeats.push(Repeat {
            missive,
            raw_batch,
            raw,
            ceiling,
        });
    }
    let missive = AppendRun {
        appends_per_s: median_of(&repeats, |r| r.missive.appends_per_s),
        mb_per_s: median_of(&repeats, |r| r.missive.mb_per_s),
        p50_us: median_of(&repeats, |r| r.missive.p50_us),
        p99_us: median_of(&repeats, |r| r.missive.p99_us),
        mean_batch: median_of(&repeats, |r| r.missive.mean_batch),
    };
    let ceilings: Vec<RawSync> = repeats.iter().filter_map(|r| r.ceiling).collect();
    Ok(AppendCase {
        threads,
        payload,
        missive,
        raw_batch: median_of(&repeats, |r| r.raw_batch as f64) as usize,
        raw: median_raw(repeats.iter().map(|r| r.raw).collect::<Vec<_>>().as_slice()),
        ceiling: (!ceilings.is_empty()).then(|| median_raw(&ceilings)),
        ratio_to_raw_sync: median_of(&repeats, |r| r.missive.appends_per_s / r.raw.records_per_s),
        ratio_to_seq_write: missive.mb_per_s / seq_write_mb_s,
    })
}

fn median_raw(runs: &[RawSync]) -> RawSync {
    RawSync {
        records_per_s: median_of(runs, |r| r.records_per_s),
        mb_per_s: median_of(runs, |r| r.mb_per_s),
    }
}

/// `threads` appenders of one `payload`-byte record per call into a new log
/// for `time`; the log is removed afterwards.
fn missive_appends(
    dir: &Path,
    threads: usize,
    payload: usize,
    time: Duration,
) -> Result<AppendRun> {
    let log_dir = dir.join(format!("append-{threads}x{payload}"));
    let log = Log::open(&log_dir, Options::default())?;
    let bytes = vec![0x5A; payload];
    let barrier = Barrier::new(threads + 1);
    let (mut latencies_us, elapsed) = std::thread::scope(|s| -> Result<_> {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| append_loop(&log, &bytes, &barrier, time)))
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut latencies = Vec::new();
        for handle in handles {
            latencies.extend(
                handle
                    .join()
                    .map_err(|_| anyhow!("an appender panicked"))??,
            );
        }
        Ok((latencies, start.elapsed()))
    })?;
    drop(log);
    let (records, batches) = count_batches(&log_dir)?;
    fs::remove_dir_all(&log_dir).with_context(|| format!("removing {log_dir:?}"))?;
    let appends = latencies_us.len() as u64;
    if records != appends {
        bail!("{appends} appends were acknowledged but {records} records are on disk");
    }
    let secs = elapsed.as_secs_f64();
    Ok(AppendRun {
        appends_per_s: appends as f64 / secs,
        mb_per_s: (appends * (RECORD_HEADER_LEN + payload) as u64) as f64 / secs / MB,
        p50_us: quantile(&mut latencies_us, 0.5).unwrap_or(f64::NAN),
        p99_us: quantile(&mut latencies_us, 0.99).unwrap_or(f64::NAN),
        mean_batch: records as f64 / batches.max(1) as f64,
    })
}

/// One appender: waits for the others, then appends one record per call
/// until its time is up. Returns each append's latency in µs.
fn append_loop(log: &Log, payload: &[u8], barrier: &Barrier, time: Duration) -> Result<Vec<f64>> {
    barrier.wait();
    let deadline = Instant::now() + time;
    let record = [Record {
        timestamp: TIMESTAMP,
        payload,
    }];
    let mut latencies_us = Vec::new();
    while Instant::now() < deadline {
        let start = Instant::now();
        log.append(&record)?;
        latencies_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies_us)
}

/// The segment files of the log in `dir`, in index order (their names are
/// zero-padded first indexes).
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry.with_context(|| format!("listing {dir:?}"))?.path();
        if path.extension().is_some_and(|e| e == "seg") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Counts the records and the commit batches (records with batch offset 0)
/// of the log in `dir` by walking its record headers.
fn count_batches(dir: &Path) -> Result<(u64, u64)> {
    let (mut records, mut batches) = (0, 0);
    for path in segment_files(dir)? {
        let bytes = fs::read(&path).with_context(|| format!("reading {path:?}"))?;
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < bytes.len() {
            let header = decode_record_header(&bytes[pos..], u32::MAX)
                .map_err(|kind| anyhow!("{path:?} at byte {pos}: {kind}"))?;
            records += 1;
            batches += u64::from(header.batch_offset == 0);
            pos += header.record_len();
        }
    }
    Ok((records, batches))
}

// ---------------------------------------------------------------------------
// Reopen and scan

/// The log built for the reopen and scan measurements.
#[derive(Clone, Copy, Debug)]
struct Built {
    bytes: u64,
    active_bytes: u64,
    records: u64,
    /// Time to build it and flush it to disk.
    secs: f64,
}

/// Builds a log of at least `target` bytes with large unsynced batches and
/// its active segment filled until the next batch would roll it; then
/// flushes every file, so writeback does not run under the timed reopens.
fn build_log(dir: &Path, target: u64) -> Result<Built> {
    let start = Instant::now();
    let opts = Options {
        sync: SyncMode::NoSyncBenchmarkOnly,
        ..Options::default()
    };
    let segment_bytes = opts.segment_bytes;
    let log = Log::open(dir, opts)?;
    let noise = pseudo_random_bytes(BUILD_PAYLOADS[BUILD_PAYLOADS.len() - 1]);
    let batch: Vec<Record<'_>> = (0..BUILD_BATCH)
        .map(|i| Record {
            timestamp: TIMESTAMP,
            payload: &noise[..BUILD_PAYLOADS[i % BUILD_PAYLOADS.len()]],
        })
        .collect();
    let batch_bytes: u64 = batch
        .iter()
        .map(|r| (RECORD_HEADER_LEN + r.payload.len()) as u64)
        .sum();
    loop {
        let segments = log.segments();
        let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
        let active_bytes = segments.last().map_or(0, |s| s.bytes);
        if bytes >= target && active_bytes + batch_bytes > segment_bytes {
            let state = log.state();
            drop(log);
            flush_dir(dir)?;
            return Ok(Built {
                bytes,
                active_bytes,
                records: state.next_index - state.first_index,
                secs: start.elapsed().as_secs_f64(),
            });
        }
        log.append(&batch)?;
    }
}

/// Bytes from a xorshift generator: payloads that do not compress.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// fsyncs every file in `dir` and `dir` itself.
fn flush_dir(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry.with_context(|| format!("listing {dir:?}"))?.path();
        File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("fsync of {path:?}"))?;
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync of {dir:?}"))
}

#[derive(Clone, Debug)]
struct Reopen {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// Segment files recovery found, and sealed indexes it had to rebuild
    /// (0 unless the index cache failed, which makes opening a full scan).
    segments: usize,
    rebuilt_indexes: usize,
}

fn reopen_runs(dir: &Path) -> Result<Reopen> {
    let mut ms = Vec::with_capacity(REOPENS);
    let mut segments = 0;
    let mut rebuilt_indexes = 0;
    for _ in 0..REOPENS {
        let start = Instant::now();
        let log = Log::open(dir, Options::default())?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        let report = log.recovery_report();
        segments = report.segments;
        rebuilt_indexes = rebuilt_indexes.max(report.rebuilt_indexes.len());
    }
    Ok(Reopen {
        median_ms: median_of(&ms, |v| *v),
        min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
        segments,
        rebuilt_indexes,
    })
}

#[derive(Clone, Copy, Debug)]
struct Scan {
    /// Bytes of the segment files, the numerator of both rates.
    bytes: u64,
    records: u64,
    missive_mb_s: f64,
    raw_mb_s: f64,
    ratio: f64,
}

/// Full scans of the log in `dir` and raw reads of its segments, alternated.
fn scan_runs(dir: &Path, plan: Plan) -> Result<Scan> {
    let files = segment_files(dir)?;
    let bytes = raw_read(&files)?; // warms the page cache
    let log = Log::open(dir, Options::default())?;
    let runs = plan.repeats.max(3);
    let (mut missive_secs, mut raw_secs) = (Vec::new(), Vec::new());
    let mut records = 0;
    for _ in 0..runs {
        let start = Instant::now();
        raw_read(&files)?;
        raw_secs.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        records = full_scan(&log)?;
        missive_secs.push(start.elapsed().as_secs_f64());
    }
    let missive_mb_s = bytes as f64 / median_of(&missive_secs, |s| *s) / MB;
    let raw_mb_s = bytes as f64 / median_of(&raw_secs, |s| *s) / MB;
    Ok(Scan {
        bytes,
        records,
        missive_mb_s,
        raw_mb_s,
        ratio: missive_mb_s / raw_mb_s,
    })
}

/// Reads every record of `log`, taking its payload; returns the count.
fn full_scan(log: &Log) -> Result<u64> {
    let state = log.state();
    let mut records = 0;
    for entry in log.range(state.first_index, state.next_index)? {
        black_box(entry?.payload);
        records += 1;
    }
    Ok(records)
}

// ---------------------------------------------------------------------------
// Goals and report

#[derive(Clone, Debug)]
struct Goal {
    what: String,
    value: f64,
    /// "%" for ratios (value in percent), "ms" for times.
    unit: &'static str,
    target: &'static str,
    met: bool,
}

fn goals(cases: &[AppendCase], scan: &Scan, reopen: &Reopen) -> Vec<Goal> {
    let mut goals = Vec::new();
    for case in cases {
        if case.threads == 1 {
            goals.push(Goal {
                what: format!(
                    "1 appender, {} B: appends/s vs raw write+fdatasync",
                    case.payload
                ),
                value: case.ratio_to_raw_sync * 100.0,
                unit: "%",
                target: ">= 80 %",
                met: case.ratio_to_raw_sync >= 0.8,
            });
        }
        if case.threads == 256 {
            goals.push(Goal {
                what: format!(
                    "256 appenders, {} B: MB/s vs raw sequential write",
                    case.payload
                ),
                value: case.ratio_to_seq_write * 100.0,
                unit: "%",
                target: ">= 60 %",
                met: case.ratio_to_seq_write >= 0.6,
            });
        }
    }
    goals.push(Goal {
        what: "scan: MB/s vs raw sequential read".to_owned(),
        value: scan.ratio * 100.0,
        unit: "%",
        target: ">= 80 %",
        met: scan.ratio >= 0.8,
    });
    goals.push(Goal {
        what: "reopen of the >= 1 GiB log (median)".to_owned(),
        value: reopen.median_ms,
        unit: "ms",
        target: "< 200 ms",
        met: reopen.median_ms < 200.0,
    });
    goals
}

/// Every figure of a run.
#[derive(Debug)]
struct Report<'a> {
    plan: Plan,
    dir: &'a Path,
    filesystem: String,
    seq_write_mb_s: f64,
    cases: Vec<AppendCase>,
    built: Built,
    reopen: Reopen,
    scan: Scan,
    goals: Vec<Goal>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn print_table(r: &Report<'_>, runtime: Duration) {
    let p = r.plan;
    let mode = if p.quick { "quick" } else { "full" };
    println!(
        "bench-log ({mode} run): {:?} per append case, median of {}",
        p.case_time, p.repeats
    );
    println!("directory {} ({})", r.dir.display(), r.filesystem);
    if r.filesystem.starts_with("tmpfs") {
        println!("WARNING: tmpfs: fdatasync is free here, the append figures mean nothing");
    }
    println!(
        "\nraw sequential write (1 MiB writes, fdatasync every 8 MiB; median of {} runs of \
         {:.0} MiB): {:.1} MB/s",
        p.seq_write_runs(),
        mib(p.seq_write_bytes),
        r.seq_write_mb_s
    );
    print_appends(&r.cases, r.seq_write_mb_s);
    let (b, s) = (&r.built, &r.scan);
    println!(
        "\nscan of {:.0} MiB ({} records, page cache): missive {:.0} MB/s, raw read {:.0} MB/s, \
         ratio {:.1} %",
        mib(s.bytes),
        s.records,
        s.missive_mb_s,
        s.raw_mb_s,
        s.ratio * 100.0
    );
    println!(
        "reopen of {:.0} MiB ({} segments, active segment {:.1} MiB scanned, {} indexes \
         rebuilt; built and flushed in {:.1} s): median {:.1} ms (min {:.1}, max {:.1})",
        mib(b.bytes),
        r.reopen.segments,
        mib(b.active_bytes),
        r.reopen.rebuilt_indexes,
        b.secs,
        r.reopen.median_ms,
        r.reopen.min_ms,
        r.reopen.max_ms
    );
    println!("\ngoals");
    for g in &r.goals {
        let verdict = if g.met { "met" } else { "NOT MET" };
        println!(
            "  {:<58} {:>8.1} {:<2}  goal {:<8}  {verdict}",
            g.what, g.value, g.unit, g.target
        );
    }
    println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
}

fn print_appends(cases: &[AppendCase], seq_write_mb_s: f64) {
    println!(
        "\n{:>12} | {:^44} | {:^23} | {:^17} | {:^16}",
        "", "missive", "raw write+fdatasync", "missive vs raw", "raw, batch = thr"
    );
    println!(
        "{:>7} {:>4} | {:>9} {:>7} {:>8} {:>8} {:>6} | {:>5} {:>9} {:>7} | {:>8} {:>8} | {:>7} {:>8}",
        "payload",
        "thr",
        "appends/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "batch",
        "batch",
        "rec/s",
        "MB/s",
        "sync",
        "seq",
        "MB/s",
        "vs seq"
    );
    for c in cases {
        let m = &c.missive;
        let ceiling = match c.ceiling {
            Some(raw) => format!(
                "{:>7.1} {:>6.1} %",
                raw.mb_per_s,
                raw.mb_per_s / seq_write_mb_s * 100.0
            ),
            None => format!("{:>7} {:>8}", "-", "-"),
        };
        println!(
            "{:>5} B {:>4} | {:>9.0} {:>7.2} {:>8.0} {:>8.0} {:>6.1} | {:>5} {:>9.0} {:>7.2} | \
             {:>6.1} % {:>6.1} % | {ceiling}",
            c.payload,
            c.threads,
            m.appends_per_s,
            m.mb_per_s,
            m.p50_us,
            m.p99_us,
            m.mean_batch,
            c.raw_batch,
            c.raw.records_per_s,
            c.raw.mb_per_s,
            c.ratio_to_raw_sync * 100.0,
            c.ratio_to_seq_write * 100.0
        );
    }
    println!(
        "MB/s of records (64 B header + payload); batch: records per write + fdatasync \
         (missive's from its record headers);\nsync: missive appends/s / raw rec/s at the same \
         batch (median of paired runs); seq: MB/s / raw sequential write;\nraw, batch = thr: \
         the most thr one-record appenders could get if every one were in every batch"
    );
}

impl Report<'_> {
    fn json(&self, runtime: Duration) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                json!({
                    "threads": c.threads,
                    "payload_bytes": c.payload,
                    "record_bytes": RECORD_HEADER_LEN + c.payload,
                    "appends_per_s": c.missive.appends_per_s,
                    "mb_per_s": c.missive.mb_per_s,
                    "p50_us": c.missive.p50_us,
                    "p99_us": c.missive.p99_us,
                    "mean_batch": c.missive.mean_batch,
                    "raw_batch": c.raw_batch,
                    "raw_records_per_s": c.raw.records_per_s,
                    "ceiling_batch": c.ceiling.map(|_| c.threads),
                    "ceiling_mb_per_s": c.ceiling.map(|raw| raw.mb_per_s),
                    "ceiling_ratio_to_seq_write":
                        c.ceiling.map(|raw| raw.mb_per_s / self.seq_write_mb_s),
                    "raw_mb_per_s": c.raw.mb_per_s,
                    "ratio_to_raw_sync": c.ratio_to_raw_sync,
                    "ratio_to_seq_write": c.ratio_to_seq_write,
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals
            .iter()
            .map(|g| json!({"what": g.what, "value": g.value, "unit": g.unit, "target": g.target, "met": g.met}))
            .collect();
        let (b, s, r) = (&self.built, &self.scan, &self.reopen);
        json!({
            "bench": "log",
            "quick": self.plan.quick,
            "case_secs": self.plan.case_time.as_secs_f64(),
            "repeats": self.plan.repeats,
            "filesystem": self.filesystem,
            "raw_seq_write": {
                "mb_per_s": self.seq_write_mb_s,
                "bytes": self.plan.seq_write_bytes,
                "runs": self.plan.seq_write_runs(),
                "method": "1 MiB write_all, fdatasync every 8 MiB, timed to the last fdatasync",
            },
            "appends": cases,
            "scan": {
                "bytes": s.bytes,
                "records": s.records,
                "missive_mb_per_s": s.missive_mb_s,
                "raw_read_mb_per_s": s.raw_mb_s,
                "ratio": s.ratio,
            },
            "reopen": {
                "log_bytes": b.bytes,
                "segments": r.segments,
                "active_segment_bytes": b.active_bytes,
                "records": b.records,
                "rebuilt_indexes": r.rebuilt_indexes,
                "median_ms": r.median_ms,
                "min_ms": r.min_ms,
                "max_ms": r.max_ms,
                "build_secs": b.secs,
            },
            "goals": goals,
            "all_goals_met": self.goals.iter().all(|g| g.met),
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}
