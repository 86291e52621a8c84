//! bench-raft: missive's replication side by side with a 3-member etcd
//! cluster and with the local fdatasync, in one run on one machine.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-raft -- [--quick] [--dir PATH]
//!     [--partitions P] [--missive PATH]
//! ```
//!
//! # Method
//!
//! - **missive**: 3 `missive node` processes (the release binary of this
//!   workspace, built first with `cargo build --release --bin missive`
//!   unless `--missive` names one) on 127.0.0.1, each with its own data
//!   directory, joined by `missive cluster init`. Each node replicates the
//!   key-value state machine (`missive_raft::kv`). By default the cluster has
//!   **one partition** — one Raft group, like etcd's one — so both systems
//!   order every write through one leader and one log (`--partitions` spreads
//!   the clients over more groups, each to its own leader).
//! - **etcd**: `benches/scripts/etcd-cluster` installs Debian's `etcd-server`
//!   if missing and starts 3 members on loopback ports.
//! - **Load**: one generator for both: N concurrent clients (1, 64, 256), each
//!   with one write in flight, writing a 256-byte value to its own key again
//!   and again, over gRPC, each system's way for a client with many writes
//!   in flight: missive's internal `Writes` stream (one per connection, the
//!   writes of the clients sharing it multiplexed on it; the way a node
//!   forwards writes to a leader), etcd's `KV.Put` (one unary call per
//!   write: etcd's API has no streamed write). **Every client talks to the
//!   leader** (missive's partition leader, etcd's leader, both found by
//!   asking the members), over at most [`MAX_CONNECTIONS`] HTTP/2
//!   connections shared round-robin. Both acknowledge a write after a quorum
//!   has made it durable (fdatasync) and the leader applied it, and each
//!   client waits for that before its next write.
//! - **Limit**: the latency of `write` of 256 bytes plus `fdatasync`, in the
//!   same directory as both clusters' data, at the end of a file and over a
//!   file written beforehand; the faster p50 of the two is the limit (see
//!   `limit`). One commit needs at least one of these (the leader's), and a
//!   3-node commit in practice a leader's and a follower's. Beside it, three
//!   overwrite loops at once, a file each: what each costs while the three
//!   nodes' logs share the disk (context, not the goal's measure).
//!
//! Each case runs a warm-up, then a measured window; a write counts if it
//! completes inside the window, and its latency is a sample. Throughput is
//! those writes over the window's length. Cases alternate between the two
//! systems (the order flips every repeat), and the full run repeats every
//! case and reports medians. Both clusters run for the whole benchmark; the
//! one not under load only sends heartbeats. The load generator shares the
//! machine's cores with both clusters; the CPU time each side's processes and
//! the generator used in each window is measured (from /proc) and reported,
//! with how busy the whole machine was (kernel work and the hypervisor's
//! steal included), to tell a CPU-bound figure from a disk-bound one.
//!
//! Everything lives in a fresh directory under `target/` (or `--dir`) on the
//! repository's filesystem: `/tmp` may be tmpfs, where fdatasync is free.
//! Every process started is killed at the end, on error too. The last line
//! of stdout is one JSON object holding every figure; progress goes to
//! stderr.
//!
//! # Goals
//!
//! - 256 clients: missive's commits/s ≥ 2 × etcd's, with a p99 latency no
//!   worse than etcd's.
//! - 1 client: missive's median commit latency ≤ 3 × one local
//!   write + fdatasync.
//!
//! # Layout
//!
//! - `cpu`: CPU time of the clusters' processes and of the generator.
//! - `load`: the load generator both systems are driven by.
//! - `missive`: the missive cluster (processes, init, leader) and its writer.
//! - `etcd`: the etcd cluster (the script) and its writer.
//! - `limit`: the local write + fdatasync latency.
//! - `report`: the goals, the table and the JSON line.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use missive_benches::filesystem::filesystem_of;
use missive_benches::stats::median_of;

mod etcd;
mod limit;
mod load;
mod missive;
mod report;

use crate::etcd::EtcdCluster;
use crate::limit::{Limit, SyncLatency, measure_limit};
use crate::load::{LoadRun, run_load};
use crate::missive::MissiveCluster;
use crate::report::{Case, Report};

const USAGE: &str =
    "bench-raft [--quick] [--dir PATH] [--partitions P] [--missive PATH-TO-MISSIVE-BINARY]";

/// Size of every written value, in bytes.
pub(crate) const VALUE_BYTES: usize = 256;

/// Concurrent clients of the cases.
const CLIENTS: [usize; 3] = [1, 64, 256];

/// The most HTTP/2 connections the clients of one case share; with fewer
/// clients, one each. A bound, so 256 clients do not open 256 connections,
/// and the same bound for both systems.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// How long one write may take before it counts as an error.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each measurement runs and how often.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Load before the measured window of each case, not counted: it opens
    /// the connections and fills the pipelines.
    pub(crate) warmup: Duration,
    /// The measured window of each case.
    pub(crate) measure: Duration,
    /// Runs of each case per system; medians are reported.
    pub(crate) repeats: usize,
    /// Length of one write + fdatasync loop.
    pub(crate) limit_time: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(4),
                repeats: 1,
                limit_time: Duration::from_secs(1),
            }
        } else {
            Plan {
                quick,
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(10),
                repeats: 3,
                limit_time: Duration::from_secs(2),
            }
        }
    }
}

#[derive(Debug)]
struct Args {
    quick: bool,
    dir: Option<PathBuf>,
    partitions: u32,
    missive: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        dir: None,
        partitions: 1,
        missive: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--quick") => args.quick = true,
            Some("--dir") => args.dir = Some(it.next().context("--dir needs a path")?.into()),
            Some("--missive") => {
                args.missive = Some(it.next().context("--missive needs a path")?.into());
            }
            Some("--partitions") => {
                let p = it.next().context("--partitions needs a count")?;
                args.partitions = p
                    .to_str()
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p >= 1)
                    .with_context(|| format!("--partitions {p:?} is not a count >= 1"))?;
            }
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
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("target"));
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let bench_dir = tempfile::Builder::new()
        .prefix("bench-raft-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a directory in {}", base.display()))?;
    let filesystem = filesystem_of(bench_dir.path());
    eprintln!(
        "bench-raft in {} ({filesystem})",
        bench_dir.path().display()
    );
    if filesystem.starts_with("tmpfs") {
        eprintln!("WARNING: tmpfs: fdatasync is free here, the figures mean nothing");
    }
    let binary = match &args.missive {
        Some(path) => path.clone(),
        None => missive_benches::binary::build_missive()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Declared after `bench_dir`, so dropped (processes killed) before the
    // directory they write in is removed, on every path out of here.
    let missive = interruptible(
        &rt,
        MissiveCluster::start(&binary, &bench_dir.path().join("missive"), args.partitions),
    )?;
    let etcd = interruptible(&rt, EtcdCluster::start(&bench_dir.path().join("etcd")))?;
    let mut runs = Runs::default();
    for repeat in 0..plan.repeats {
        runs.limit
            .push(measure_limit(bench_dir.path(), plan.limit_time)?);
        for (i, &clients) in CLIENTS.iter().enumerate() {
            // Alternate which system goes first so that drift of the shared
            // machine falls on both alike.
            let missive_first = (repeat + i) % 2 == 0;
            for first in [missive_first, !missive_first] {
                let (name, run) = if first {
                    let run = interruptible(&rt, run_load(&missive, clients, plan))?;
                    ("missive", run)
                } else {
                    let run = interruptible(&rt, run_load(&etcd, clients, plan))?;
                    ("etcd", run)
                };
                eprintln!(
                    "repeat {}/{}, {clients:>3} clients, {name:<7}: {:>8.0} commits/s, p50 {:>7.0} µs, \
                     p99 {:>7.0} µs, {} errors",
                    repeat + 1,
                    plan.repeats,
                    run.commits_per_s,
                    run.p50_us,
                    run.p99_us,
                    run.errors
                );
                let slot = if first {
                    &mut runs.missive
                } else {
                    &mut runs.etcd
                };
                slot.push((clients, run));
            }
        }
    }
    runs.limit
        .push(measure_limit(bench_dir.path(), plan.limit_time)?);
    let etcd_version = etcd.version().to_owned();
    let leaders = missive.leaders_description();
    rt.block_on(etcd.stop())?;
    missive.stop()?;
    let median = |of: fn(&Limit) -> SyncLatency| SyncLatency {
        p50_us: median_of(&runs.limit, |l| of(l).p50_us),
        p99_us: median_of(&runs.limit, |l| of(l).p99_us),
        syncs: runs.limit.iter().map(|l| of(l).syncs).sum(),
    };
    let limit = Limit {
        append: median(|l| l.append),
        overwrite: median(|l| l.overwrite),
        concurrent: median(|l| l.concurrent),
    };
    let floor = limit.floor();
    let cases = CLIENTS
        .iter()
        .map(|&clients| Case::new(clients, &runs.missive, &runs.etcd, floor, plan.measure))
        .collect();
    let report = Report {
        plan,
        dir: bench_dir.path(),
        filesystem,
        partitions: args.partitions,
        leaders,
        etcd_version,
        limit,
        cases,
    };
    let runtime = started.elapsed();
    report.print_table(runtime);
    println!("{}", report.json(runtime));
    Ok(())
}

/// Runs `f` on `rt`, or fails on Ctrl-C, so that the error path drops (and
/// so stops) both clusters: etcd members started in the background by a
/// script ignore the terminal's SIGINT and would outlive the benchmark.
fn interruptible<T>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    rt.block_on(async {
        tokio::select! {
            result = f => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

/// Every run of every case, per system, and the limit's runs.
#[derive(Debug, Default)]
struct Runs {
    missive: Vec<(usize, LoadRun)>,
    etcd: Vec<(usize, LoadRun)>,
    limit: Vec<Limit>,
}
