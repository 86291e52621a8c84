//! Raw limits: what the disk gives a plain program, the baselines every
//! missive figure is divided by.

use super::*;
/// One raw sequential write run: MB/s up to the final fdatasync.
pub(crate) fn raw_sequential_write(dir: &Path, total: u64) -> Result<f64> {
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
pub(crate) struct RawSync {
    pub(crate) records_per_s: f64,
    pub(crate) mb_per_s: f64,
}

/// How the raw write + fdatasync loop places its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Each write extends the file.
    Append,
    /// Each write lands on zeros written (and made durable) ahead of it, 1
    /// MiB at a time when less than half of that is left: what the log
    /// does with its prepared space.
    OverZeros,
}

/// Writes `batch` records of `record_len` bytes per write, each followed by
/// an fdatasync, for `time`.
pub(crate) fn raw_synced_writes(
    dir: &Path,
    record_len: usize,
    batch: usize,
    time: Duration,
    placement: Placement,
) -> Result<RawSync> {
    use std::os::unix::fs::FileExt;

    let path = dir.join("raw-synced-writes");
    let file = File::create_new(&path).with_context(|| format!("creating {path:?}"))?;
    let buf = vec![0x5A; record_len * batch];
    // Kept as far ahead as the log keeps its prepared space.
    let prepare = Options::default().prepare_bytes;
    let zeros = vec![0u8; prepare as usize];
    let (mut at, mut prepared) = (0u64, 0u64);
    let start = Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < time {
        file.write_all_at(&buf, at).context("raw write")?;
        at += buf.len() as u64;
        if placement == Placement::OverZeros && prepared < at + prepare / 2 {
            let from = prepared.max(at);
            file.write_all_at(&zeros, from)
                .context("raw write of zeros")?;
            prepared = from + prepare;
        }
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
pub(crate) fn raw_read(files: &[PathBuf]) -> Result<u64> {
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
