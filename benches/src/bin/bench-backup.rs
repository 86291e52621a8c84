//! bench-backup: how fast `missive log backup` copies a node's logs,
//! beside the limit — a plain copy of the same files.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-backup -- [--quick]
//! ```
//!
//! A data directory of 4 partitions is written with missive-log (records of
//! 100–400 bytes, segments of 16 MiB; 4 × 128 MiB, or 4 × 16 MiB with
//! `--quick`). Then, each measurement repeated (3 runs, the median
//! reported), into a fresh directory each run:
//!
//! - **copy**: `std::fs::copy` of every segment file — the limit;
//! - **copy + fsync**: the same, each file fsynced — the limit for a
//!   durable copy, which a backup is;
//! - **backup**: `missive_log::backup::copy_log` of every partition up to
//!   its last record — what `missive log backup` runs per partition: every
//!   byte read, BLAKE3-hashed and written, the segment holding the last
//!   index scanned record by record (CRC, chain) and cut, each file
//!   fdatasynced and renamed;
//! - **incremental**: a second backup into the same directory after 1 MiB
//!   more per partition: only the cut segment and what follows it are
//!   written again.
//!
//! Throughput is bytes of the backup per second. Files come from the page
//! cache (they were just written), as they mostly do on a node that backs
//! up its recent segments. The last line of output is JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use missive_benches::stats::median_of;
use missive_log::backup::copy_log;
use missive_log::fs::StdFs;
use missive_log::{Log, Options, Record, SyncMode};
use serde_json::json;

const PARTITIONS: u32 = 4;
const RUNS: usize = 3;
const SEGMENT_BYTES: u64 = 16 << 20;
const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Records appended per `Log::append` while generating.
const GEN_BATCH: usize = 1000;

fn log_dir(root: &Path, p: u32) -> PathBuf {
    root.join("partitions").join(p.to_string()).join("log")
}

fn options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        sync: SyncMode::NoSyncBenchmarkOnly,
        ..Options::default()
    }
}

/// Appends about `bytes` of records to `log`, from record number `start`.
fn fill(log: &Log, bytes: u64, start: u64) -> Result<u64> {
    let mut written = 0u64;
    let mut n = start;
    while written < bytes {
        let payloads: Vec<Vec<u8>> = (0..GEN_BATCH as u64)
            .map(|i| {
                let len = 100 + ((n + i) * 7919 % 300) as usize;
                format!("message {} ", n + i)
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(len)
                    .collect()
            })
            .collect();
        let records: Vec<Record<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Record {
                timestamp: 1_700_000_000_000 + n + i as u64,
                payload: p,
            })
            .collect();
        log.append(&records).context("append")?;
        written += payloads.iter().map(|p| p.len() as u64 + 64).sum::<u64>();
        n += GEN_BATCH as u64;
    }
    Ok(n)
}

/// The segment files of the data directory, and their total size.
fn segment_files(root: &Path) -> Result<(Vec<(u32, PathBuf)>, u64)> {
    let mut files = Vec::new();
    let mut total = 0;
    for p in 0..PARTITIONS {
        let dir = log_dir(root, p);
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "seg") {
                total += std::fs::metadata(&path)?.len();
                files.push((p, path));
            }
        }
    }
    Ok((files, total))
}

/// Plain copy of every segment file into `to`; fsyncs each if asked.
fn plain_copy(files: &[(u32, PathBuf)], to: &Path, fsync: bool) -> Result<f64> {
    let start = Instant::now();
    for (p, path) in files {
        let dir = log_dir(to, *p);
        std::fs::create_dir_all(&dir)?;
        let target = dir.join(path.file_name().context("file name")?);
        std::fs::copy(path, &target)?;
        if fsync {
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Per partition, each file a backup holds: name, size, BLAKE3.
type Files = Vec<Vec<(String, u64, [u8; 32])>>;

/// What one backup of every partition did.
struct Backup {
    secs: f64,
    copied: u64,
    skipped: u64,
}

/// Backs up every partition of `data` into `to` up to each log's last
/// record, incrementally against `previous` (per partition, name → size
/// and BLAKE3).
fn backup(
    data: &Path,
    to: &Path,
    last: &[u64],
    previous: &[Vec<(String, u64, [u8; 32])>],
) -> Result<(Backup, Files)> {
    let start = Instant::now();
    let mut copied = 0;
    let mut skipped = 0;
    let mut files = Vec::new();
    for p in 0..PARTITIONS {
        let prev = previous.get(p as usize).cloned().unwrap_or_default();
        let lookup = move |name: &str| {
            prev.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, s, h)| (*s, *h))
        };
        let b = copy_log(
            &StdFs,
            &log_dir(data, p),
            &log_dir(to, p),
            Some(last[p as usize]),
            MAX_RECORD_BYTES,
            &lookup,
        )?;
        copied += b.bytes_copied;
        skipped += b.bytes_skipped;
        files.push(
            b.files
                .into_iter()
                .map(|f| (f.name, f.size, f.blake3))
                .collect(),
        );
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        Backup {
            secs,
            copied,
            skipped,
        },
        files,
    ))
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let per_partition: u64 = if quick { 16 << 20 } else { 128 << 20 };
    let tmp = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
        .context("temporary directory")?;
    let data = tmp.path().join("data");
    println!(
        "bench-backup: {PARTITIONS} partitions × {} MiB, segments of {} MiB, {RUNS} runs",
        per_partition >> 20,
        SEGMENT_BYTES >> 20
    );
    let mut logs = Vec::new();
    let mut next = Vec::new();
    for p in 0..PARTITIONS {
        let log = Log::open(log_dir(&data, p), options())?;
        next.push(fill(&log, per_partition, 0)?);
        logs.push(log);
    }
    let last: Vec<u64> = logs.iter().map(|l| l.state().next_index - 1).collect();
    let (files, total) = segment_files(&data)?;
    println!("{} segment files, {} MiB", files.len(), total >> 20);

    let mut copies = Vec::new();
    let mut synced = Vec::new();
    let mut backups = Vec::new();
    for run in 0..RUNS {
        let to = tmp.path().join(format!("copy-{run}"));
        copies.push(plain_copy(&files, &to, false)?);
        std::fs::remove_dir_all(&to)?;
        let to = tmp.path().join(format!("synced-{run}"));
        synced.push(plain_copy(&files, &to, true)?);
        std::fs::remove_dir_all(&to)?;
        let to = tmp.path().join(format!("backup-{run}"));
        let (b, _) = backup(&data, &to, &last, &[])?;
        anyhow::ensure!(b.copied == total, "a full backup copies every byte");
        backups.push(b.secs);
        std::fs::remove_dir_all(&to)?;
    }

    // Incremental: a full backup, 1 MiB more per partition, again.
    let mut incrementals = Vec::new();
    let mut last = last;
    for run in 0..RUNS {
        let to = tmp.path().join(format!("incremental-{run}"));
        let (_, files) = backup(&data, &to, &last, &[])?;
        for (p, log) in logs.iter().enumerate() {
            next[p] = fill(log, 1 << 20, next[p])?;
            last[p] = log.state().next_index - 1;
        }
        let (b, _) = backup(&data, &to, &last, &files)?;
        incrementals.push(b);
        std::fs::remove_dir_all(&to)?;
    }
    let (_, total_now) = segment_files(&data)?;

    let copy_s = median_of(&copies, |s| *s);
    let synced_s = median_of(&synced, |s| *s);
    let backup_s = median_of(&backups, |s| *s);
    let inc_s = median_of(&incrementals, |b| b.secs);
    let inc_copied = median_of(&incrementals, |b| b.copied as f64) as u64;
    let inc_skipped = median_of(&incrementals, |b| b.skipped as f64) as u64;
    println!(
        "copy            {:>8.1} MB/s  ({copy_s:.3} s)",
        mb_s(total, copy_s)
    );
    println!(
        "copy + fsync    {:>8.1} MB/s  ({synced_s:.3} s)",
        mb_s(total, synced_s)
    );
    println!(
        "backup          {:>8.1} MB/s  ({backup_s:.3} s)  {:.0}% of copy + fsync",
        mb_s(total, backup_s),
        100.0 * synced_s / backup_s
    );
    println!(
        "incremental     {inc_s:.3} s: {} MiB written, {} MiB skipped ({:.1} MB/s of backup)",
        inc_copied >> 20,
        inc_skipped >> 20,
        mb_s(total_now, inc_s)
    );
    println!(
        "{}",
        json!({
            "bench": "backup",
            "quick": quick,
            "partitions": PARTITIONS,
            "bytes": total,
            "files": files.len(),
            "copy_mb_s": mb_s(total, copy_s),
            "copy_fsync_mb_s": mb_s(total, synced_s),
            "backup_mb_s": mb_s(total, backup_s),
            "backup_vs_copy_fsync": synced_s / backup_s,
            "incremental_s": inc_s,
            "incremental_bytes_copied": inc_copied,
            "incremental_bytes_skipped": inc_skipped,
        })
    );
    Ok(())
}
