//! missive-log appends from 1, 16 and 256 threads, each paired with a raw
//! write + fdatasync run at the same batch size.

use super::*;
/// One run of concurrent missive appenders.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendRun {
    pub(crate) appends_per_s: f64,
    pub(crate) mb_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Records per group-commit batch (per write + fdatasync), on average.
    pub(crate) mean_batch: f64,
}

/// One append case: the medians of missive and of the raw loops with the
/// same record size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendCase {
    pub(crate) threads: usize,
    pub(crate) payload: usize,
    pub(crate) missive: AppendRun,
    /// The records per write of the raw loop: missive's mean batch.
    pub(crate) raw_batch: usize,
    pub(crate) raw: RawSync,
    /// The same loop writing over zeros prepared ahead, as the log does.
    pub(crate) raw_over_zeros: RawSync,
    /// The raw loop with one record per appender per write: the most that
    /// `threads` one-record appenders could reach, even with every one of
    /// them in each batch. `None` for one appender (it is `raw`).
    pub(crate) ceiling: Option<RawSync>,
    /// missive's appends/s over the raw loop's records/s, run by run.
    pub(crate) ratio_to_raw_sync: f64,
    /// The same over the loop writing over zeros.
    pub(crate) ratio_to_raw_over_zeros: f64,
    /// missive's MB/s over the raw sequential write bandwidth.
    pub(crate) ratio_to_seq_write: f64,
}

/// One repeat of an append case: a missive run, then the raw loops that
/// mirror it, run right after it so that both see the same disk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Repeat {
    pub(crate) missive: AppendRun,
    pub(crate) raw_batch: usize,
    pub(crate) raw: RawSync,
    pub(crate) raw_over_zeros: RawSync,
    pub(crate) ceiling: Option<RawSync>,
}

pub(crate) fn append_case(
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
        let time = plan.case_time;
        let raw = raw_synced_writes(dir, record_len, raw_batch, time, Placement::Append)?;
        let raw_over_zeros =
            raw_synced_writes(dir, record_len, raw_batch, time, Placement::OverZeros)?;
        let ceiling = match threads {
            1 => None,
            _ => Some(raw_synced_writes(
                dir,
                record_len,
                threads,
                time,
                Placement::Append,
            )?),
        };
        repeats.push(Repeat {
            missive,
            raw_batch,
            raw,
            raw_over_zeros,
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
        raw: median_raw(&repeats, |r| r.raw),
        raw_over_zeros: median_raw(&repeats, |r| r.raw_over_zeros),
        ceiling: (!ceilings.is_empty()).then(|| median_raw(&ceilings, |c| *c)),
        ratio_to_raw_sync: median_of(&repeats, |r| r.missive.appends_per_s / r.raw.records_per_s),
        ratio_to_raw_over_zeros: median_of(&repeats, |r| {
            r.missive.appends_per_s / r.raw_over_zeros.records_per_s
        }),
        ratio_to_seq_write: missive.mb_per_s / seq_write_mb_s,
    })
}

/// The median rates of the raw runs `raw` picks out of `runs`.
pub(crate) fn median_raw<T>(runs: &[T], raw: impl Fn(&T) -> RawSync) -> RawSync {
    RawSync {
        records_per_s: median_of(runs, |r| raw(r).records_per_s),
        mb_per_s: median_of(runs, |r| raw(r).mb_per_s),
    }
}

/// `threads` appenders of one `payload`-byte record per call into a new log
/// for `time`; the log is removed afterwards.
pub(crate) fn missive_appends(
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
pub(crate) fn append_loop(
    log: &Log,
    payload: &[u8],
    barrier: &Barrier,
    time: Duration,
) -> Result<Vec<f64>> {
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
pub(crate) fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
/// of the log in `dir`, read as `missive log verify` reads it.
pub(crate) fn count_batches(dir: &Path) -> Result<(u64, u64)> {
    let mut batches = 0;
    let report = read_dir(&StdFs, dir, u32::MAX, |header, _| {
        batches += u64::from(header.batch_offset == 0);
        ControlFlow::Continue(())
    })?;
    if let Some(problem) = report.problem {
        bail!("{dir:?}: {problem:?}");
    }
    Ok((report.records(), batches))
}
