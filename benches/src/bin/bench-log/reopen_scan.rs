//! Reopen of a log of at least 1 GiB, and a full scan of it against a raw
//! sequential read of the same bytes.

use super::*;
/// The log built for the reopen and scan measurements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Built {
    pub(crate) bytes: u64,
    pub(crate) active_bytes: u64,
    pub(crate) records: u64,
    /// Time to build it and flush it to disk.
    pub(crate) secs: f64,
}

/// Builds a log of at least `target` bytes with large unsynced batches and
/// its active segment filled until the next batch would roll it; then
/// flushes every file, so writeback does not run under the timed reopens.
pub(crate) fn build_log(dir: &Path, target: u64) -> Result<Built> {
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
pub(crate) fn pseudo_random_bytes(len: usize) -> Vec<u8> {
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
pub(crate) fn flush_dir(dir: &Path) -> Result<()> {
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
pub(crate) struct Reopen {
    pub(crate) median_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
    /// Segment files recovery found, and sealed indexes it had to rebuild
    /// (0 unless the index cache failed, which makes opening a full scan).
    pub(crate) segments: usize,
    pub(crate) rebuilt_indexes: usize,
}

pub(crate) fn reopen_runs(dir: &Path) -> Result<Reopen> {
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
pub(crate) struct Scan {
    /// Bytes of the segment files, the numerator of both rates.
    pub(crate) bytes: u64,
    pub(crate) records: u64,
    pub(crate) missive_mb_s: f64,
    pub(crate) raw_mb_s: f64,
    pub(crate) ratio: f64,
}

/// Full scans of the log in `dir` and raw reads of its segments, alternated.
pub(crate) fn scan_runs(dir: &Path, plan: Plan) -> Result<Scan> {
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
pub(crate) fn full_scan(log: &Log) -> Result<u64> {
    let state = log.state();
    let mut records = 0;
    for entry in log.range(state.first_index, state.next_index)? {
        black_box(entry?.payload);
        records += 1;
    }
    Ok(records)
}
