//! bench-chat: missive as a chat backend under load — a one-node chat
//! cluster driven over gRPC by senders and live subscribers, the write cost
//! of a message to a small and to a huge group, and the rebuild of the
//! projections by replaying the log.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-chat -- [--quick] [--dir PATH]
//! ```
//!
//! # Method
//!
//! - **Node**: one missive node in this process ([`missive_api::Chat`] with
//!   the default partition count), initialized as a one-node cluster like
//!   `missive serve`, serving `ChatService` on 127.0.0.1 with HS256 tokens
//!   minted here. Its data lives under `target/` (or `--dir`): `/tmp` may be
//!   tmpfs, where fdatasync is free.
//! - **Population**: 10,000 users; 1,000 conversations, 70 % of them 1:1
//!   between random pairs, the rest groups of log-uniform sizes from 3 to
//!   1,000 members (one of exactly 1,000), created over gRPC.
//! - **Subscribers**: 2,000 random users hold a live `Subscribe` stream
//!   each, over HTTP/2 connections of at most [`STREAMS_PER_CONNECTION`]
//!   streams. The sender stamps its send time in the message text; each
//!   subscriber receiving the message records send → subscriber latency.
//! - **Saturation**: N concurrent senders, each with one send in flight,
//!   each send to a uniformly chosen conversation by a uniformly chosen
//!   member of it. Messages committed per second (acknowledged sends in the
//!   measured window) and send → commit latency.
//! - **Fixed rate**: the same sends, open loop, at half the saturation
//!   rate; latency measured from each send's scheduled time, so a stall
//!   counts against it.
//! - **Write cost**: one group of 10 members and one of 10,000 (created with
//!   1,000 members, then grown by `AddMembers` of 1,000), the 10 members of
//!   the small one also in the big one; the same 10 senders send the same
//!   number of messages to each, one in flight per sender. Compared: p50,
//!   throughput and the process's CPU time per message. No subscriber is
//!   connected then: live fan-out is O(subscribed members) by nature and is
//!   what the load phases measure.
//! - **Replay**: the node is stopped; each partition's log is read from disk
//!   (every segment, purged ones included) and its commands applied to a
//!   fresh `ChatStateMachine` in a temporary store, in batches, through the
//!   `StateMachine` trait: events per second, beside the raw scan of the
//!   same logs (read, CRC and hash chain, no decoding).
//!
//! Per-user write rate limit: `ChatService` allows each user
//! `WRITES_PER_SECOND` writes per second (burst `WRITE_BURST`). The load
//! phases spread sends over every member of every conversation, so no user
//! comes near it; the write-cost rounds stay within each sender's burst and
//! wait for the buckets to refill between rounds. Refused writes are counted
//! and printed, so a throttled figure cannot pass unnoticed.
//!
//! The load generator shares the machine's cores with the node; the table
//! says how many there are. The last line of stdout is one JSON object with
//! every figure; progress goes to stderr.
//!
//! # Goals
//!
//! - Write cost of a message to a 10,000-member group within 20 % of one to
//!   a 10-member group (p50 latency and throughput).
//! - Projection rebuild by replay ≥ 500,000 events/s.
//!
//! # Layout
//!
//! - `node`: the in-process node, its listener and its stop.
//! - `clients`: gRPC connections and each user's credentials.
//! - `population`: users, conversations and their creation.
//! - `subscribers`: live streams and the latencies they see.
//! - `load`: the saturation and fixed-rate phases.
//! - `write_cost`: the 10-member against the 10,000-member group.
//! - `replay`: the offline rebuild and the raw scan.
//! - `rng`, `cpu`: a seeded generator; this process's CPU time.
//! - `report`: the table and the JSON line.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use missive_benches::filesystem::filesystem_of;

mod clients;
mod load;
mod node;
mod population;
mod replay;
mod report;
mod rng;
mod subscribers;
mod write_cost;

use crate::report::Report;

const USAGE: &str = "bench-chat [--quick] [--dir PATH]";

/// Live `Subscribe` streams sharing one HTTP/2 connection at most (hyper's
/// server allows 200 by default; tonic lifts the bound, this keeps one).
pub(crate) const STREAMS_PER_CONNECTION: usize = 100;

/// Connections the senders share, round-robin.
pub(crate) const SENDER_CONNECTIONS: usize = 8;

/// The sizes and durations of a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) users: usize,
    pub(crate) conversations: usize,
    /// Share of the conversations that are 1:1.
    pub(crate) direct_share: f64,
    /// Largest group of the population.
    pub(crate) max_group: usize,
    pub(crate) subscribers: usize,
    /// Concurrent senders at saturation.
    pub(crate) senders: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// The fixed rate, as a share of the saturation throughput.
    pub(crate) fixed_rate_share: f64,
    /// Members of the big write-cost group.
    pub(crate) big_group: usize,
    /// Members (and senders) of the small write-cost group.
    pub(crate) small_group: usize,
    /// Sends per sender per write-cost round (within the rate limit's burst).
    pub(crate) sends_per_sender: usize,
    /// Write-cost rounds per group.
    pub(crate) rounds: usize,
    /// Replays of the whole log; the median is reported.
    pub(crate) replays: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let full = Plan {
            quick,
            users: 10_000,
            conversations: 1_000,
            direct_share: 0.7,
            max_group: 1_000,
            subscribers: 2_000,
            senders: 128,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(10),
            fixed_rate_share: 0.5,
            big_group: 10_000,
            small_group: 10,
            sends_per_sender: 80,
            rounds: 4,
            replays: 3,
        };
        if quick {
            Plan {
                users: 2_000,
                conversations: 200,
                subscribers: 400,
                senders: 64,
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(4),
                rounds: 2,
                replays: 1,
                ..full
            }
        } else {
            full
        }
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
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("target"));
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let bench_dir = tempfile::Builder::new()
        .prefix("bench-chat-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a directory in {}", base.display()))?;
    let filesystem = filesystem_of(bench_dir.path());
    eprintln!(
        "bench-chat in {} ({filesystem})",
        bench_dir.path().display()
    );
    if filesystem.starts_with("tmpfs") {
        eprintln!("WARNING: tmpfs: fdatasync is free here, the figures mean little");
    }
    let data = bench_dir.path().join("node");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let live = rt.block_on(async {
        tokio::select! {
            r = live_phases(&data, plan) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    // Stops every task still running (the push notifier works through its
    // backlog forever otherwise), so the replay has the cores to itself.
    rt.shutdown_timeout(Duration::from_secs(10));
    let live = live?;
    eprintln!("replaying the log of {} partitions", live.partitions);
    let replay = replay::run(&data, bench_dir.path(), live.partitions, plan.replays)?;
    let report = Report {
        plan,
        dir: bench_dir.path(),
        filesystem,
        live,
        replay,
    };
    let runtime = started.elapsed();
    report.print_table(runtime);
    println!("{}", report.json(runtime));
    Ok(())
}

/// Everything measured while the node ran.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) partitions: u32,
    pub(crate) population: population::Summary,
    pub(crate) subscribe: subscribers::Started,
    /// Streams the node ended (resumed), `Resync`s, the first failure.
    pub(crate) subscribe_disconnects: u64,
    pub(crate) subscribe_resyncs: u64,
    pub(crate) subscribe_first_error: Option<String>,
    pub(crate) saturation: load::Phase,
    pub(crate) fixed: load::Phase,
    pub(crate) write_cost: write_cost::WriteCost,
}

/// Starts the node, runs the load phases and the write-cost rounds, stops
/// the node.
async fn live_phases(data: &std::path::Path, plan: Plan) -> Result<Live> {
    let node = node::Node::start(data).await?;
    let result = drive(&node, plan).await;
    // Stopped on the error path too: its logs must be closed before replay.
    let stopped = node.stop().await;
    let live = result?;
    stopped?;
    Ok(live)
}

async fn drive(node: &node::Node, plan: Plan) -> Result<Live> {
    let origin = Instant::now();
    let clients = Arc::new(clients::Clients::connect(node, plan.big_group.max(plan.users)).await?);
    eprintln!("creating {} conversations", plan.conversations);
    let pop = Arc::new(population::create(&clients, plan).await?);
    eprintln!(
        "{} direct, {} groups ({} memberships); subscribing {} users",
        pop.summary.direct, pop.summary.groups, pop.summary.memberships, plan.subscribers
    );
    let subs = subscribers::start(&clients, &pop, plan, origin).await?;
    eprintln!(
        "{} subscribers caught up in {:.1} s; saturation with {} senders",
        subs.started.subscribers, subs.started.secs, plan.senders
    );
    let saturation = load::saturation(node, &clients, &pop, &subs, plan, origin).await?;
    eprintln!(
        "saturation: {:.0} messages/s, p50 {:.1} ms; fixed rate",
        saturation.commits_per_s,
        saturation.commit.p50_us / 1e3
    );
    let rate = (saturation.commits_per_s * plan.fixed_rate_share).max(1.0);
    let fixed = load::fixed_rate(node, &clients, &pop, &subs, plan, origin, rate).await?;
    eprintln!(
        "fixed rate {rate:.0}/s: p50 {:.1} ms; stopping the subscribers",
        fixed.commit.p50_us / 1e3
    );
    let (started, seen) = subs.stop().await?;
    let saturation = saturation.with_deliveries(&seen, load::Tag::Saturation);
    let fixed = fixed.with_deliveries(&seen, load::Tag::Fixed);
    eprintln!(
        "write cost: {} against {} members",
        plan.small_group, plan.big_group
    );
    let write_cost = write_cost::run(node, &clients, plan).await?;
    Ok(Live {
        partitions: node.partitions(),
        population: pop.summary,
        subscribe: started,
        subscribe_disconnects: seen.disconnects,
        subscribe_resyncs: seen.resyncs,
        subscribe_first_error: seen.first_error,
        saturation,
        fixed,
        write_cost,
    })
}
