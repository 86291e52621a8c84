//! `missive log replay`: rebuilds every partition's projections offline
//! from a stopped node's data directory or a backup, up to an index or a
//! time, and reports how fast (commands applied per second, log MB read per
//! second).
//!
//! The partitions are rebuilt in parallel, at most `--threads` at once.
//! With `--out` the rebuilt stores are kept in a directory laid out like a
//! data directory (`<out>/partitions/<p>/projections.redb`), which `missive
//! log diff` compares with a node's; without it they are built in a
//! temporary directory and removed, which checks that the log replays and
//! measures it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use missive_api::ChatStateMachine;
use missive_api::offline::{DEFAULT_BATCH, Progress, Rebuilt, Source, StopAt, rebuild_partition};
use missive_raft::node::partition_dir;

use crate::progress_bar::Bar;
use crate::time_arg::parse_time_ms;
use crate::time_fmt::rfc3339_ms;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A stopped node's data directory, or a backup directory.
    #[arg(long)]
    data: PathBuf,
    /// Stop after this index, in every partition (each stops at its end if
    /// its log is shorter).
    #[arg(long, conflicts_with = "to_time")]
    to_index: Option<u64>,
    /// Stop after the last entry at or before this time (RFC 3339, or ms
    /// since the Unix epoch): one point across all partitions.
    #[arg(long)]
    to_time: Option<String>,
    /// Keep the rebuilt stores here (a new directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Commands applied per transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Partitions rebuilt at once (default: one per core, at most one per
    /// partition).
    #[arg(long)]
    threads: Option<usize>,
}

/// The stop point named by `--to-index` / `--to-time`.
pub(crate) fn stop_at(to_index: Option<u64>, to_time: Option<&str>) -> Result<StopAt> {
    Ok(match (to_index, to_time) {
        (Some(_), Some(_)) => bail!("--to-index and --to-time exclude each other"),
        (Some(n), None) => StopAt::Index(n),
        (None, Some(t)) => StopAt::Time(parse_time_ms(t).map_err(|e| anyhow!("--to-time: {e}"))?),
        (None, None) => StopAt::End,
    })
}

/// Every partition rebuilt, with the total time.
pub(crate) struct Rebuilds {
    /// Per partition, in order: its state machine (its store open) and
    /// what the rebuild did.
    pub parts: Vec<(ChatStateMachine, Rebuilt)>,
    /// Wall time of the whole rebuild.
    pub elapsed: Duration,
}

/// One partition's outcome, once its worker is done with it.
type Slot = Option<Result<(ChatStateMachine, Rebuilt)>>;

/// Rebuilds every partition of `source` up to `stop` into
/// `<out>/partitions/<p>/projections.redb`, `threads` at once, drawing a
/// progress bar.
pub(crate) fn rebuild_all(
    source: &Source,
    stop: StopAt,
    out: &Path,
    batch: usize,
    threads: Option<usize>,
    label: &'static str,
) -> Result<Rebuilds> {
    let partitions = source.partitions();
    let mut total_bytes = 0;
    for p in 0..partitions {
        total_bytes += source.log_bytes(p)?;
    }
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, partitions as usize);
    let bar = Bar::new(label, total_bytes);
    let next = AtomicU32::new(0);
    let results: Mutex<Vec<Slot>> = Mutex::new((0..partitions).map(|_| None).collect());
    let running = AtomicU32::new(threads as u32);
    let failed = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p >= partitions || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = partition_dir(out, p).join(missive_api::chat::PROJECTIONS_FILE);
                    let progress = |d: Progress| bar.add(d.entries, d.bytes);
                    let r = rebuild_partition(source, p, stop, &path, batch, &progress)
                        .with_context(|| format!("partition {p}"));
                    if r.is_err() {
                        // The other workers take no new partition.
                        failed.store(true, Ordering::Relaxed);
                    }
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[p as usize] = Some(r);
                }
                running.fetch_sub(1, Ordering::Relaxed);
            });
        }
        bar.run_until(|| running.load(Ordering::Relaxed) == 0);
    });
    let elapsed = started.elapsed();
    let mut parts = Vec::new();
    for (p, r) in results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .enumerate()
    {
        match r {
            Some(r) => parts.push(r?),
            None => bail!("partition {p} was not rebuilt: another partition failed first"),
        }
    }
    Ok(Rebuilds { parts, elapsed })
}

/// One line about one partition's rebuild.
pub(crate) fn describe(r: &Rebuilt) -> String {
    let mut s = format!("partition {}: ", r.partition);
    match r.snapshot {
        Some(i) => s.push_str(&format!("snapshot at {i} + ")),
        None => s.push_str("from the log start, "),
    }
    s.push_str(&format!(
        "{} entries ({} commands, {:.2} MB read)",
        r.entries,
        r.commands,
        r.bytes as f64 / 1e6
    ));
    match r.last_applied {
        Some(id) => {
            s.push_str(&format!(" -> index {}", id.index));
            if let Some(t) = r.last_timestamp_ms {
                s.push_str(&format!(" ({})", rfc3339_ms(t)));
            }
        }
        None => s.push_str(" -> empty"),
    }
    s
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let stop = stop_at(args.to_index, args.to_time.as_deref())?;
    let source =
        Source::open(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let (out, temporary) = match &args.out {
        Some(o) => {
            if o.exists() && std::fs::read_dir(o)?.next().is_some() {
                bail!(
                    "{} exists and is not empty: --out takes a new directory",
                    o.display()
                );
            }
            (o.clone(), false)
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir =
                std::env::temp_dir().join(format!("missive-replay-{}-{nanos}", std::process::id()));
            (dir, true)
        }
    };
    let result = rebuild_all(&source, stop, &out, args.batch, args.threads, "replay");
    let rebuilds = match result {
        Ok(r) => r,
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&out);
            }
            return Err(e);
        }
    };
    let (mut entries, mut commands, mut bytes) = (0u64, 0u64, 0u64);
    for (_, r) in &rebuilds.parts {
        println!("{}", describe(r));
        entries += r.entries;
        commands += r.commands;
        bytes += r.bytes;
    }
    // The stores are closed (and durable) before the figures are final.
    drop(rebuilds.parts);
    let secs = rebuilds.elapsed.as_secs_f64().max(1e-9);
    println!(
        "replayed {entries} entries ({commands} events, {:.2} MB of log) in {:.3} s: \
         {:.0} events/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        secs,
        commands as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    if temporary {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    } else {
        println!("projections in {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
