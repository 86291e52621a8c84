//! bench-projection: the two candidate projection stores, sled 0.34 and
//! redb, side by side on missive's projection workload, in one run.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-projection -- [--quick] [--dir PATH]
//! ```
//!
//! # Workload
//!
//! The chat state machine's writes (`workload`, `apply`): 1,000
//! conversations (60 % 1:1, 30 % of 3–20 members, 10 % of 50–500) over
//! 10,000 users are created first, then the mix: 70 % sends, 20 % delivered
//! or read receipts, 5 % edits, 5 % reactions, conversations picked by a
//! Zipf law (exponent 0.8), 1 % of sends being client retries. Apply reads
//! what the real one reads (membership, the idempotency key, the head, the
//! watermark, the message edited) and writes messages, events, heads,
//! watermarks (forward only), idempotency keys, members and their reverse
//! index. Entries come in batches of 1 to 64, as group commit hands them
//! over, and each batch is one atomic write that also stores the applied
//! index. Both engines run the same apply code over the `Store` trait.
//!
//! # Method
//!
//! Every measurement runs in a fresh child process (this program with the
//! hidden `child` subcommand), the engines alternately, in a new directory
//! under `target/` (or `--dir`): `/tmp` may be tmpfs, where fsync is free.
//!
//! - **Apply**: a new store, the setup, then 500,000 mix entries (50,000
//!   under `--quick`); only the writes are timed. events/s = mix entries /
//!   time in `write`; p50/p99 of one batch's write.
//! - **Disk**: allocated bytes of the store's files after a clean close
//!   (what `du` prints), against the live keys and values.
//! - **Reopen and read**: a fresh process opens the closed store and reads
//!   the latest 50 messages of 100 conversations; its VmRSS then, and its
//!   VmRSS before the open (the bare process).
//! - **kill -9**: the load again in a new directory, killed with SIGKILL once
//!   it reports 60 % of the mix applied; a fresh process reopens the store
//!   (timed), replays the log into an in-memory model up to the store's
//!   applied index and compares every row, then applies 2,000 more entries
//!   and compares again.
//!
//! Durability is each engine's production setting for a projection behind
//! a durable log: no fsync per batch; sled flushes every 500 ms (its
//! default), redb commits with `Durability::None` and makes a durable
//! commit every 500 ms (see `redb_store` and `sled_store`).
//!
//! Ratios are redb ÷ sled. MiB are 2^20 bytes. The last line of stdout is
//! one JSON object holding every figure; progress goes to stderr.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

mod apply;
mod check;
mod children;
mod footprint;
mod load;
mod model;
mod read;
mod recover;
mod redb_store;
mod report;
mod rng;
mod sled_store;
mod store;
#[cfg(test)]
mod tests;
mod workload;

use footprint::{DiskUsage, disk_usage};
use store::Store;

const USAGE: &str = "bench-projection [--quick] [--dir PATH]";
/// The workload's seed: every process regenerates the same log from it.
const SEED: u64 = 0x6d69_7373_6976_6501;
/// Mix entries of a full and of a quick run.
const FULL_EVENTS: u64 = 500_000;
const QUICK_EVENTS: u64 = 50_000;
/// Where in the mix the loader is killed.
const KILL_FRACTION: f64 = 0.6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Sled,
    Redb,
}

impl Engine {
    const ALL: [Engine; 2] = [Engine::Sled, Engine::Redb];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
        }
    }

    fn parse(name: &str) -> Result<Engine> {
        match name {
            "sled" => Ok(Engine::Sled),
            "redb" => Ok(Engine::Redb),
            _ => bail!("unknown engine {name:?}"),
        }
    }
}

pub(crate) fn open_store(engine: Engine, dir: &Path) -> Result<Box<dyn Store>> {
    Ok(match engine {
        Engine::Sled => Box::new(sled_store::SledStore::open(dir)?),
        Engine::Redb => Box::new(redb_store::RedbStore::open(dir)?),
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let mut quick = false;
    let mut base = PathBuf::from("target");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--dir" => base = it.next().context("--dir needs a path")?.into(),
            "-h" | "--help" => {
                println!("usage: {USAGE}");
                return Ok(());
            }
            _ => bail!("unknown argument {arg:?}; usage: {USAGE}"),
        }
    }
    run(quick, &base)
}

/// Every figure of one engine.
#[derive(Debug)]
pub(crate) struct EngineRun {
    pub(crate) engine: Engine,
    pub(crate) load: Value,
    pub(crate) disk: DiskUsage,
    pub(crate) read: Value,
    /// The last index the killed loader reported, or why the kill failed.
    pub(crate) killed: Result<u64, String>,
    /// The recovery child's figures, or why it failed (a panic on reopen
    /// is a result, not a reason to stop the run).
    pub(crate) recovered: Result<Value, String>,
}

fn run(quick: bool, base: &Path) -> Result<()> {
    let started = Instant::now();
    let events = if quick { QUICK_EVENTS } else { FULL_EVENTS };
    fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let bench_dir = tempfile::Builder::new()
        .prefix("bench-projection-")
        .tempdir_in(base)
        .with_context(|| format!("creating a directory in {}", base.display()))?;
    let dir = bench_dir.path();
    let filesystem = report::filesystem_of(dir);
    let load_dir = |engine: Engine| dir.join(format!("{}-load", engine.name()));
    let kill_dir = |engine: Engine| dir.join(format!("{}-kill", engine.name()));

    let mut loads = Vec::new();
    for engine in Engine::ALL {
        progress(&format!("{}: load of {events} events", engine.name()));
        let load = children::run("load", engine, &load_dir(engine), SEED, events)?;
        loads.push((load, disk_usage(&load_dir(engine))?));
    }
    let mut reads = Vec::new();
    for engine in Engine::ALL {
        progress(&format!("{}: reopen and read", engine.name()));
        reads.push(children::run(
            "read",
            engine,
            &load_dir(engine),
            SEED,
            events,
        )?);
    }
    let kill_at = workload::CONVERSATIONS as u64 + (events as f64 * KILL_FRACTION) as u64;
    let mut kills = Vec::new();
    for engine in Engine::ALL {
        progress(&format!(
            "{}: load killed at index {kill_at}",
            engine.name()
        ));
        let killed = children::load_and_kill(engine, &kill_dir(engine), SEED, events, kill_at)
            .map(|k| k.reported_index)
            .map_err(|e| format!("{e:#}"));
        progress(&format!(
            "{}: reopen after kill -9 and check",
            engine.name()
        ));
        let recovered = match &killed {
            Ok(_) => children::run("recover", engine, &kill_dir(engine), SEED, events)
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("not run: {e}")),
        };
        kills.push((killed, recovered));
    }

    let runs: Vec<EngineRun> = Engine::ALL
        .into_iter()
        .zip(loads)
        .zip(reads)
        .zip(kills)
        .map(
            |(((engine, (load, disk)), read), (killed, recovered))| EngineRun {
                engine,
                load,
                disk,
                read,
                killed,
                recovered,
            },
        )
        .collect();
    bench_dir.close().context("removing the bench directory")?;
    let runtime = started.elapsed();
    let report = report::Report {
        quick,
        events,
        kill_at,
        filesystem,
        runs,
    };
    report.print_table(runtime);
    println!("{}", report.json(runtime));
    Ok(())
}

/// The hidden subcommand: `child load|read|recover --engine E --dir D
/// --seed S --events N [--progress]`. Prints one JSON line last.
fn child(args: &[String]) -> Result<()> {
    let op = args.first().context("child needs an operation")?;
    let (mut engine, mut dir, mut seed, mut events, mut progress) = (None, None, None, None, false);
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--engine" => engine = Some(Engine::parse(value()?)?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--seed" => seed = Some(value()?.parse::<u64>()?),
            "--events" => events = Some(value()?.parse::<u64>()?),
            "--progress" => progress = true,
            _ => bail!("unknown child argument {arg:?}"),
        }
    }
    let engine = engine.context("--engine")?;
    let dir = dir.context("--dir")?;
    let seed = seed.context("--seed")?;
    let events = events.context("--events")?;
    let result = match op.as_str() {
        "load" => load::load(engine, &dir, seed, events, progress)?,
        "read" => read::read(engine, &dir, seed)?,
        "recover" => recover::recover(engine, &dir, seed, events)?,
        _ => bail!("unknown child operation {op:?}"),
    };
    println!("{result}");
    Ok(())
}

fn progress(what: &str) {
    eprintln!("bench-projection: {what}…");
}

/// The figures of a run, kept for the JSON line.
pub(crate) fn figures(run: &EngineRun) -> Value {
    json!({
        "load": run.load,
        "disk": {
            "allocated_bytes": run.disk.allocated,
            "apparent_bytes": run.disk.apparent,
            "files": run.disk.files,
        },
        "reopen_read": run.read,
        "kill": {
            "reported_index": run.killed.as_ref().ok(),
            "error": run.killed.as_ref().err(),
        },
        "recovery": match &run.recovered {
            Ok(v) => v.clone(),
            Err(e) => json!({ "error": e }),
        },
    })
}
