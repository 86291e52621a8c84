//! bench-ws: missive's WebSocket gateway — idle connections per gateway and
//! their memory, and delivery latency WebSocket → gateway → node → gateway
//! → WebSocket — side by side with a bare WebSocket relay on the same stack,
//! in one run on one machine.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-ws -- [--quick]
//!     [--idle N] [--users N] [--missive PATH] [--timeline FILE] [--goal-only]
//!     [--idle-only] [--partitions N]
//! ```
//!
//! `--goal-only` runs `missive serve` at the goal rate alone (its runs and
//! the soak; no idle phase, step-up or other system) and prints their
//! figures as JSON: for comparing two builds, alternated, in little time.
//! `--idle-only` runs the idle phase alone and prints its figures (its part
//! of the table and goals, then a JSON line). `--partitions N` starts the
//! delivery phases' `missive serve` with N partitions instead of its
//! default (one per two cores).
//!
//! # Method
//!
//! - **Processes**: `missive serve` (one chat node, ChatService on
//!   loopback, tokens checked with an HS256 secret of the benchmark's,
//!   which mints them in-process), the workspace's release binary (built
//!   first unless `--missive` names one), in two layouts: with its own
//!   gateway, in its process (**missive serve**, the default deployment;
//!   the latency goal is judged on it), and behind a separate `missive
//!   gateway` process reaching it over gRPC (**node+gateway**; the idle
//!   phase uses this one, so that the gateway's resident memory, VmRSS in
//!   /proc, is its own). Each phase gets fresh processes and data.
//! - **Idle**: N WebSockets (100,000; `--quick` 5,000) to the one gateway,
//!   spread over 64 loopback source addresses (one address has only ~28,000
//!   ephemeral ports), opened 256 at a time (authentication is a node call
//!   each). Each authenticates; the gateway's RSS is read; then each
//!   subscribes (a live `Subscribe` stream per connection, node to gateway)
//!   and it is read again. KiB per connection = RSS growth / connections
//!   still open. Clients keep reading, so the gateway's pings are answered.
//!   Each connection is a descriptor on each side, and one process holds at
//!   most its open-file limit less 1,000 (without `CAP_SYS_RESOURCE` the
//!   limit stays at its hard limit). When N is more, the gateway is started
//!   as W = ⌈N / (limit − 1,000)⌉ worker processes (`missive gateway
//!   --workers W`: children of the `missive gateway` process, sharing its
//!   port), and its RSS is the sum over that process and its children, read
//!   afresh each time; the clients are held by as many child processes of
//!   this executable (an internal `--hold-idle` mode: each opens its share
//!   of the users, then subscribes and closes them when the benchmark says,
//!   over its stdin, and reports its counts on stdout), and the benchmark
//!   reads memory between the steps as with one process. The output says
//!   how many processes each side used. The delivery phases' separate
//!   gateway is always one process.
//! - **Delivery**: U users (10,000; `--quick` 1,000), subscribed, in pairs
//!   each in a direct conversation. An open-loop generator (module `load`)
//!   offers a fixed rate of sends spread evenly over all users, so no user
//!   nears the per-user rate limits (ChatService's 50/s, the gateway's
//!   50/s per connection); latency runs from each message's *scheduled*
//!   send time to the partner's `event` frame (no coordinated omission).
//!   First the offered rate doubles from 1,250 msg/s until a step is not
//!   sustained (module `load` says when), then the goal rate (5,000 msg/s)
//!   runs a few times, then once for longer (the soak: 60 s, `--quick`
//!   20 s), long enough to hold the node's periodic work — a durable
//!   commit of a partition's projection store comes every 50,000 of its
//!   entries; the node's `/metrics` says how many fell inside it. The
//!   latency goal is judged on the worse of the runs' median and the soak.
//!   After each step the generator waits until the backlog, if any, is
//!   delivered.
//! - **The disk's stalls** (module `probe`): for the whole run a thread
//!   writes 512 bytes and fdatasyncs them 200 times a second beside the
//!   systems' data, noting each call that takes 10 ms or more. Every
//!   window says how many stalls it held, the longest, and how many of its
//!   over-goal messages were in flight during one: the share of the tail
//!   the disk alone explains, for missive and the durable relay alike.
//! - **Bare relay** (module `relay`): the same generator and frames against
//!   an axum WebSocket server (this executable, run as a child process)
//!   that forwards each text frame
//!   to the partner's connection — the loopback limit of the same stack.
//! - **Durable relay**: the same relay, but each frame is first written to
//!   a file and fdatasynced (one thread, group commit, over zeros written
//!   ahead) — the limit of a chat that delivers only what is on disk, as
//!   missive does, on this machine's disk.
//!   The systems run one after the other (missive serve, node+gateway,
//!   the two relays), each with its own fleet of users: without `CAP_SYS_RESOURCE` the open-file hard
//!   limit (20,000 on the machine this was written on) holds one fleet of
//!   10,000 clients at a time, not two.
//!
//! The machine's cores are shared by the node, the gateway, the relay and
//! the generator (and whatever else runs): figures are medians, the
//! comparison is the ratio, and the generator's own lag behind its schedule
//! is printed so a saturated generator is not taken for a slow system, with
//! how busy the whole machine was in each measured window (`/proc/stat`:
//! every process, the kernel's own work, the hypervisor's steal), so a
//! system capped by the cores is not taken for one that waits. The
//! last line of stdout is one JSON object holding every figure; progress
//! goes to stderr. With `--timeline FILE`, every measured window is also
//! appended to FILE slot by slot (20 ms of scheduled time each, on the wall
//! clock, with the slowest latency, the count over the goal and the longest
//! wait after the partition's leader stamped a message), to be read
//! beside the node's logs and metrics. Every process started is killed at
//! the end, on error too.
//!
//! # Goals
//!
//! - One gateway holds ≥ 100,000 idle connections at ≤ 20 KiB each.
//! - p99 delivery latency < 10 ms at 5,000 msg/s.
//!
//! # Layout
//!
//! - `rlimit`: the open-file limit.
//! - `servers`: the node and gateway processes, their memory.
//! - `client`: WebSocket clients and the protocol frames the setup sends.
//! - `idle`: the idle-connection phase, and its holder processes.
//! - `fleets`: the paired users of the delivery phase, on each system.
//! - `load`: the open-loop generator and its figures.
//! - `relay`: the bare relay and the durable relay.
//! - `probe`: the disk probe, which notes the disk's stalls.
//! - `report`: the goals, the table and the JSON line.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use missive_api::Auth;

mod client;
mod fleets;
mod idle;
mod load;
mod probe;
mod relay;
mod report;
mod rlimit;
mod servers;

use crate::load::{Clock, Fleet, SENDERS, StepRun, TAIL_SLOT_US, TIMELINE_SLOT_US, Timeline};
use crate::relay::Relay;
use crate::report::{Delivery, GOAL_P99_US, Report};
use crate::servers::{Layout, Missive};

/// The systems measured, by the names their figures carry.
pub(crate) const SERVE: &str = "missive serve";
pub(crate) const SPLIT: &str = "node+gateway";
pub(crate) const RELAY: &str = "bare relay";
pub(crate) const DURABLE_RELAY: &str = "durable relay";

const USAGE: &str = "bench-ws [--quick] [--idle N] [--users N] [--missive PATH-TO-MISSIVE-BINARY] [--timeline FILE] [--goal-only] [--idle-only] [--partitions N]";

/// The rate the latency goal is set at, msg/s.
pub(crate) const GOAL_RATE: f64 = 5_000.0;

/// The HS256 secret the node checks tokens with; the benchmark mints them.
const JWT_SECRET: &str = "bench-ws: a token secret of at least 32 bytes";

/// The most messages per second one user is asked to send: below the
/// per-user and per-connection limits (50/s), so no send is refused.
const MAX_PER_USER_RATE: f64 = 40.0;

/// Descriptors kept free beyond the connections (processes, files, gRPC).
const SPARE_FILES: u64 = 1_000;

/// What the run does and how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Idle connections to open.
    pub(crate) idle: usize,
    /// Users of the delivery phase (a multiple of 2 × [`SENDERS`]).
    pub(crate) users: usize,
    /// Runs of each system at the goal rate.
    pub(crate) repeats: usize,
    /// Load before each measured window, not counted.
    pub(crate) warmup: Duration,
    /// Each measured window.
    pub(crate) window: Duration,
    /// Time left after the last send for the last deliveries.
    pub(crate) drain: Duration,
    /// The step-up's highest offered rate.
    pub(crate) max_rate: f64,
    /// The last run at the goal rate, measured for this long: long enough
    /// for the node's periodic work (a projection store's durable commit
    /// comes every 200,000 entries of a partition, 40 s at the goal rate)
    /// to fall inside it.
    pub(crate) soak: Duration,
    /// Only `missive serve` at the goal rate: no idle phase, no step-up,
    /// no other system (`--goal-only`, for comparing builds quickly).
    pub(crate) goal_only: bool,
    /// The delivery phases' partitions; `None`: `missive serve`'s default.
    pub(crate) partitions: Option<u32>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                idle: 5_000,
                users: 1_000,
                repeats: 1,
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(3),
                drain: Duration::from_secs(1),
                max_rate: 40_000.0,
                soak: Duration::from_secs(20),
                goal_only: false,
                partitions: None,
            }
        } else {
            Plan {
                quick,
                idle: 100_000,
                users: 10_000,
                repeats: 3,
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(5),
                drain: Duration::from_secs(2),
                max_rate: 160_000.0,
                soak: Duration::from_secs(60),
                goal_only: false,
                partitions: None,
            }
        }
    }

    /// The step-up's offered rates: doubling from a quarter of the goal
    /// rate (so a system that cannot take the goal rate still shows what it
    /// can), as far as the users can send without nearing their rate
    /// limits; none with `--goal-only`.
    fn rates(&self) -> Vec<f64> {
        if self.goal_only {
            return Vec::new();
        }
        let cap = self.max_rate.min(self.users as f64 * MAX_PER_USER_RATE);
        std::iter::successors(Some(GOAL_RATE / 4.0), |r| Some(r * 2.0))
            .take_while(|r| *r <= cap)
            .collect()
    }
}

#[derive(Debug)]
struct Args {
    quick: bool,
    idle: Option<usize>,
    users: Option<usize>,
    missive: Option<PathBuf>,
    timeline: Option<PathBuf>,
    goal_only: bool,
    idle_only: bool,
    partitions: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        idle: None,
        users: None,
        missive: None,
        timeline: None,
        goal_only: false,
        idle_only: false,
        partitions: None,
    };
    let count = |v: Option<std::ffi::OsString>, what: &str| -> Result<usize> {
        v.as_ref()
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 1)
            .with_context(|| format!("{what} needs a count >= 1"))
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--quick") => args.quick = true,
            Some("--goal-only") => args.goal_only = true,
            Some("--idle-only") => args.idle_only = true,
            Some("--idle") => args.idle = Some(count(it.next(), "--idle")?),
            Some("--users") => args.users = Some(count(it.next(), "--users")?),
            Some("--partitions") => {
                let n = count(it.next(), "--partitions")?;
                args.partitions = Some(u32::try_from(n).context("--partitions: too many")?);
            }
            Some("--missive") => {
                args.missive = Some(it.next().context("--missive needs a path")?.into());
            }
            Some("--timeline") => {
                args.timeline = Some(it.next().context("--timeline needs a file")?.into());
            }
            Some("-h" | "--help") => {
                println!("usage: {USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}; usage: {USAGE}"),
        }
    }
    if args.goal_only && args.idle_only {
        bail!("--goal-only and --idle-only exclude each other");
    }
    Ok(args)
}

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some(relay::SERVE_FLAG) => return relay::serve(),
        Some(idle::HOLD_FLAG) => return idle::hold_process(),
        _ => {}
    }
    let started = Instant::now();
    let args = parse_args()?;
    let mut plan = Plan::new(args.quick);
    plan.goal_only = args.goal_only;
    plan.partitions = args.partitions;
    if let Some(n) = args.idle {
        plan.idle = n;
    }
    if let Some(n) = args.users {
        // Whole pairs, and the same number of users on every sender task.
        plan.users = n.div_ceil(2 * SENDERS) * 2 * SENDERS;
    }
    let open_files = rlimit::raise_open_files()?;
    // Every connection is a descriptor in this process and one in the
    // gateway; without CAP_SYS_RESOURCE the hard limit caps both. The idle
    // phase spreads its connections over processes on both sides (module
    // `idle`); a delivery fleet is one process's.
    let room = open_files.saturating_sub(SPARE_FILES) as usize;
    if plan.users > room {
        bail!(
            "the open-file limit is {open_files}; {} users need more",
            plan.users
        );
    }
    let binary = match &args.missive {
        Some(path) => path.clone(),
        None => missive_benches::binary::build_missive()?,
    };
    let base = PathBuf::from("target");
    std::fs::create_dir_all(&base).context("creating target/")?;
    let dir = tempfile::Builder::new()
        .prefix("bench-ws-")
        .tempdir_in(&base)
        .context("creating the benchmark's directory")?;
    eprintln!("bench-ws in {}", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let auth = Auth::hs256(JWT_SECRET.as_bytes()).map_err(|e| anyhow!("the token secret: {e}"))?;

    let clock = Clock::new();
    probe::start(dir.path(), clock)?;
    let timeline = args.timeline.as_deref();
    if plan.goal_only {
        // `missive serve` at the goal rate, its figures as JSON.
        let dir = dir.path().join("delivery");
        let (d, _) = rt.block_on(deliver_missive(
            &binary,
            &dir,
            &auth,
            plan,
            (SERVE, Layout::Embedded),
            clock,
            timeline,
        ))?;
        println!("{}", d.json());
        return Ok(());
    }
    // Declared after `dir`, so dropped (processes killed) before the
    // directory they write in is removed, on every path out of here.
    let mut missive = idle::start(
        &binary,
        &dir.path().join("idle"),
        JWT_SECRET,
        plan.idle,
        room,
    )?;
    let idle = rt.block_on(idle::run(&mut missive, JWT_SECRET, plan.idle, room))?;
    missive.stop()?;
    if args.idle_only {
        report::print_idle(&idle, plan.quick, open_files);
        println!("{}", report::idle_only_json(&idle, plan.quick, open_files));
        return Ok(());
    }

    // One system at a time: the open-file limit may hold only one fleet.
    let mut deliveries = Vec::new();
    let mut conversations = Vec::new();
    for (name, layout, sub) in [
        (SERVE, Layout::Embedded, "delivery"),
        (SPLIT, Layout::Separate { workers: 1 }, "delivery-gateway"),
    ] {
        let (d, convs) = rt.block_on(deliver_missive(
            &binary,
            &dir.path().join(sub),
            &auth,
            plan,
            (name, layout),
            clock,
            timeline,
        ))?;
        conversations = convs;
        deliveries.push(d);
    }
    // The bare relay, then the durable one (its journal in this run's
    // directory, on the disk the node's data was on).
    let mut relays = Vec::new();
    for (name, journal) in [
        (RELAY, None),
        (DURABLE_RELAY, Some(dir.path().join("relay-journal"))),
    ] {
        let relay = Relay::start(journal.as_deref())?;
        relays.push(rt.block_on(async {
            let r = fleets::relay(name, relay.addr, plan.users, &conversations, clock).await?;
            // The relay's CPU in the gateway's column; it has no node.
            deliver(r, plan, None, [u32::MAX, relay.pid()], timeline).await
        })?);
    }
    let [relay_report, durable_relay]: [Delivery; 2] = relays
        .try_into()
        .map_err(|_| anyhow!("one delivery per relay"))?;
    let [serve, split]: [Delivery; 2] = deliveries
        .try_into()
        .map_err(|_| anyhow!("one delivery per layout"))?;

    let report = Report {
        plan,
        open_files,
        idle,
        missive: serve,
        split,
        relay: relay_report,
        durable_relay,
    };
    let runtime = started.elapsed();
    report.print_table(runtime);
    println!("{}", report.json(runtime));
    Ok(())
}

/// `fleet`'s step-up until a step is not sustained, then its runs at the
/// goal rate. The step-up goes first so that it climbs from a system that
/// has had no more load than it could take; a step past that is followed
/// by a pause until the backlog is delivered (see [`Fleet::step`]). Fails if
/// the missive processes, when `fleet` is theirs, exit meanwhile.
async fn deliver(
    mut fleet: Fleet,
    plan: Plan,
    mut missive: Option<&mut Missive>,
    pids: [u32; 2],
    timeline: Option<&Path>,
) -> Result<Delivery> {
    eprintln!("delivery: {} users on {}", fleet.users(), fleet.name);
    let mut d = Delivery::default();
    for rate in plan.rates() {
        let s = step(&mut fleet, rate, plan, pids, timeline).await?;
        let sustained = s.sustained();
        d.steps.push(s);
        alive(&mut missive)?;
        if !sustained {
            break;
        }
    }
    for _ in 0..plan.repeats {
        d.at_goal
            .push(step(&mut fleet, GOAL_RATE, plan, pids, timeline).await?);
        alive(&mut missive)?;
    }
    let soak = Plan {
        window: plan.soak,
        ..plan
    };
    // Only a node has durable commits to count.
    let before = missive
        .as_deref()
        .map(Missive::durable_commits)
        .transpose()?;
    d.soak = Some(step(&mut fleet, GOAL_RATE, soak, pids, timeline).await?);
    alive(&mut missive)?;
    if let (Some(before), Some(m)) = (before, missive.as_deref()) {
        let after = m.durable_commits()?;
        let (n, secs) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "{:<13} durable commits of the projection stores during the {}-s run: {n:.0}, {:.1} ms each on average",
            fleet.name,
            plan.soak.as_secs(),
            if n > 0.0 { secs / n * 1e3 } else { 0.0 }
        );
        d.durable_commits = Some((n, secs));
    }
    Ok(d)
}

/// A fresh `missive` in `dir`, laid out as `system`'s layout, through
/// [`deliver`] under `system`'s name; also its conversations' ids.
async fn deliver_missive(
    binary: &Path,
    dir: &Path,
    auth: &Auth,
    plan: Plan,
    (name, layout): (&'static str, Layout),
    clock: Clock,
    timeline: Option<&Path>,
) -> Result<(Delivery, Vec<String>)> {
    let mut missive = Missive::start(
        binary,
        dir,
        JWT_SECRET,
        plan.users + 100,
        layout,
        plan.partitions,
    )?;
    let (fleet, conversations) =
        fleets::missive(name, missive.gateway, auth, plan.users, clock).await?;
    let pids = [
        missive.node_pid(),
        missive.gateway_pid().unwrap_or(u32::MAX),
    ];
    let d = deliver(fleet, plan, Some(&mut missive), pids, timeline).await?;
    missive.stop()?;
    Ok((d, conversations))
}

/// Fails if `missive`'s processes have exited; the relay has none.
fn alive(missive: &mut Option<&mut Missive>) -> Result<()> {
    missive.as_deref_mut().map_or(Ok(()), Missive::check_alive)
}

/// One step of `fleet` at `rate`, reported on stderr, and its window slot
/// by slot in `timeline` if given.
async fn step(
    fleet: &mut Fleet,
    rate: f64,
    plan: Plan,
    pids: [u32; 2],
    timeline: Option<&Path>,
) -> Result<StepRun> {
    let s = fleet
        .step(rate, plan.warmup, plan.window, plan.drain, pids)
        .await?;
    if let Some(path) = timeline {
        append_timeline(path, fleet.name, rate, &s.timeline)?;
    }
    eprintln!(
        "{:<13} offered {:>7.0}/s: delivered {:>7.0}/s, p50 {:>8.2} ms, p99 {:>8.2} ms, \
         lost {} ({} late), errors {}, generator lag p99 {:.2} ms; cores: node {:.2}, gateway {:.2}, \
         bench {:.2}; machine busy {:.0} % (steal {:.0} %); {} at or over {:.0} ms, in {} of {} \
         {}-ms slots (at most {} in one){}; the disk stalled {} times{}, {} of those messages \
         in flight then{}",
        fleet.name,
        rate,
        s.delivered_per_s,
        s.p50_us / 1e3,
        s.p99_us / 1e3,
        s.scheduled.saturating_sub(s.delivered),
        s.late,
        s.errors + s.send_failures,
        s.send_lag_p99_us / 1e3,
        s.node_cores,
        s.gateway_cores,
        s.bench_cores,
        s.machine_busy * 100.0,
        s.machine_steal * 100.0,
        s.tail.slow,
        GOAL_P99_US / 1e3,
        s.tail.slow_slots,
        s.tail.slots,
        TAIL_SLOT_US / 1000,
        s.tail.worst_slot,
        match s.after_stamp_p99_us {
            Some(p99) => format!(
                "; after the leader's stamp: p99 {:.2} ms, and most of the wait of {} of those",
                p99 / 1e3,
                s.slow_after_stamp
            ),
            None => String::new(),
        },
        s.disk_stalls,
        s.disk_stall_max_us
            .map(|us| format!(" (longest {:.0} ms)", us as f64 / 1e3))
            .unwrap_or_default(),
        s.slow_in_disk_stall,
        if s.sustained() {
            ""
        } else {
            "  (not sustained)"
        }
    );
    Ok(s)
}

/// Appends a step's window to the `--timeline` file: one line per 20-ms
/// slot of scheduled time, tab-separated — the system, the offered rate,
/// the slot's start (Unix seconds, wall clock), the messages scheduled in
/// it that arrived, the slowest one's latency (ms), how many reached the
/// goal, and the longest part of a latency after the leader stamped the
/// entry (ms; empty without a node).
fn append_timeline(path: &Path, system: &str, rate: f64, t: &Timeline) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for (i, slot) in t.slots.iter().enumerate() {
        let at_us = t.start_unix_us + i as u64 * TIMELINE_SLOT_US;
        let after = slot
            .max_after_stamp_us
            .map_or(String::new(), |a| format!("{:.2}", a as f64 / 1e3));
        writeln!(
            out,
            "{system}\t{rate:.0}\t{}.{:06}\t{}\t{:.2}\t{}\t{after}",
            at_us / 1_000_000,
            at_us % 1_000_000,
            slot.arrived,
            slot.max_us as f64 / 1e3,
            slot.over
        )?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
