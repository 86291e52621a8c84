//! The medians of a run, its goals, the table and the JSON line.

use std::time::Duration;

use missive_benches::cpu::cores;
use missive_benches::stats::median_of;
use serde_json::{Value, json};

use crate::idle::IdleRun;
use crate::load::{MAX_LOST_SHARE, SUSTAINED_P99_US, SUSTAINED_SHARE, StepRun};
use crate::{DURABLE_RELAY, Plan, RELAY, SERVE, SPLIT};

/// The goal: idle connections one gateway holds...
pub(crate) const GOAL_CONNECTIONS: u64 = 100_000;
/// ...at most this much gateway memory each.
pub(crate) const GOAL_KIB_PER_CONNECTION: f64 = 20.0;
/// The goal: p99 delivery latency at [`crate::GOAL_RATE`].
pub(crate) const GOAL_P99_US: f64 = 10_000.0;

/// One system's delivery figures: the repeats at the goal rate and the
/// step-up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delivery {
    pub(crate) at_goal: Vec<StepRun>,
    pub(crate) steps: Vec<StepRun>,
    /// The long run at the goal rate.
    pub(crate) soak: Option<StepRun>,
    /// The node's durable commits during the soak: how many, seconds in
    /// all.
    pub(crate) durable_commits: Option<(f64, f64)>,
}

impl Delivery {
    fn median(&self, f: impl Fn(&StepRun) -> f64) -> f64 {
        median_of(&self.at_goal, f)
    }

    /// The highest offered rate that was sustained, if any.
    pub(crate) fn highest_sustained(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.sustained())
            .map(|s| s.offered)
            .reduce(f64::max)
    }

    /// The p99 the goal is judged on: the worse of the runs' median and
    /// the soak, which is the one long enough to hold the node's periodic
    /// work.
    fn goal_p99(&self) -> f64 {
        let p99 = self.median(|s| s.p99_us);
        self.soak.as_ref().map_or(p99, |s| p99.max(s.p99_us))
    }

    /// Over the runs at the goal rate (windows and soak): the over-goal
    /// messages, those of them in flight while the disk probe saw a stall,
    /// the stalls, and the longest (µs).
    fn disk_share(&self) -> (u64, u64, u64, Option<u64>) {
        self.at_goal.iter().chain(&self.soak).fold(
            (0, 0, 0, None),
            |(slow, in_stall, stalls, longest), s| {
                (
                    slow + s.tail.slow,
                    in_stall + s.slow_in_disk_stall,
                    stalls + s.disk_stalls,
                    longest.max(s.disk_stall_max_us),
                )
            },
        )
    }

    fn errors(&self) -> u64 {
        self.at_goal
            .iter()
            .chain(&self.steps)
            .chain(&self.soak)
            .map(|s| s.errors + s.send_failures)
            .sum()
    }

    fn first_error(&self) -> Option<String> {
        self.at_goal
            .iter()
            .chain(&self.steps)
            .chain(&self.soak)
            .find_map(|s| s.first_error.clone())
    }

    pub(crate) fn json(&self) -> Value {
        let step = |s: &StepRun| {
            json!({
                "offered_per_s": s.offered,
                "delivered_per_s": s.delivered_per_s,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
                "max_us": s.max_us,
                "over_goal": s.tail.slow,
                "over_goal_slots": s.tail.slow_slots,
                "slots": s.tail.slots,
                "over_goal_worst_slot": s.tail.worst_slot,
                "after_stamp_p99_us": s.after_stamp_p99_us,
                "over_goal_mostly_after_stamp": s.slow_after_stamp,
                "disk_stalls": s.disk_stalls,
                "disk_stall_max_us": s.disk_stall_max_us,
                "over_goal_in_disk_stall": s.slow_in_disk_stall,
                "scheduled": s.scheduled,
                "delivered": s.delivered,
                "errors": s.errors,
                "send_failures": s.send_failures,
                "generator_send_lag_p99_us": s.send_lag_p99_us,
                "delivered_after_drain": s.late,
                "node_cores": s.node_cores,
                "gateway_cores": s.gateway_cores,
                "bench_process_cores": s.bench_cores,
                "machine_busy_share": s.machine_busy,
                "machine_steal_share": s.machine_steal,
                "sustained": s.sustained(),
            })
        };
        json!({
            "at_goal_rate": {
                "p50_us": self.median(|s| s.p50_us),
                "p99_us": self.median(|s| s.p99_us),
                "delivered_per_s": self.median(|s| s.delivered_per_s),
                "runs": self.at_goal.iter().map(step).collect::<Vec<_>>(),
            },
            "soak": self.soak.as_ref().map(step),
            "goal_p99_us": self.goal_p99(),
            "durable_commits_in_soak": self.durable_commits.map(|(n, secs)| json!({
                "count": n,
                "seconds": secs,
            })),
            "steps": self.steps.iter().map(step).collect::<Vec<_>>(),
            "highest_sustained_per_s": self.highest_sustained(),
            "errors": self.errors(),
            "first_error": self.first_error(),
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Goal {
    pub(crate) what: &'static str,
    pub(crate) value: String,
    pub(crate) target: String,
    pub(crate) met: bool,
}

/// Every figure of a run.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) plan: Plan,
    pub(crate) open_files: u64,
    pub(crate) idle: IdleRun,
    /// `missive serve`, its gateway in the node's process: the default
    /// deployment, which the latency goal is judged on.
    pub(crate) missive: Delivery,
    /// The same node behind a `missive gateway` process of its own.
    pub(crate) split: Delivery,
    pub(crate) relay: Delivery,
    /// The relay that makes each frame durable before it forwards it.
    pub(crate) durable_relay: Delivery,
}

impl Report {
    /// Every system, by name, the one the goal is judged on first.
    fn systems(&self) -> [(&'static str, &Delivery); 4] {
        [
            (SERVE, &self.missive),
            (SPLIT, &self.split),
            (RELAY, &self.relay),
            (DURABLE_RELAY, &self.durable_relay),
        ]
    }

    pub(crate) fn goals(&self) -> Vec<Goal> {
        let p99 = self.missive.goal_p99();
        let mut goals = idle_goals(&self.idle);
        goals.push(Goal {
            what: "p99 delivery latency at the goal rate (missive serve)",
            value: format!("{:.2} ms", p99 / 1e3),
            target: format!("< {:.0} ms", GOAL_P99_US / 1e3),
            met: p99 < GOAL_P99_US,
        });
        goals
    }

    pub(crate) fn print_table(&self, runtime: Duration) {
        let p = self.plan;
        let i = &self.idle;
        let mode = if p.quick { "quick" } else { "full" };
        println!(
            "bench-ws ({mode} run) on {} cores shared with everything else on the machine; \
             open-file limit {}",
            cores(),
            self.open_files
        );
        println!(
            "{SERVE}: one chat node and its gateway in one process (the default deployment); \
             {SPLIT}: the node behind a separate `missive gateway` process (gRPC between them); \
             {RELAY}: an axum WebSocket server process, same stack and buffers (the loopback limit); \
             {DURABLE_RELAY}: the same, each frame written and fdatasynced (group commit) before it is forwarded \
             (the limit of delivering only what is on disk)"
        );
        print_idle_table(i);

        println!(
            "\ndelivery: {} users in pairs, open loop, latency from scheduled send to the partner's frame",
            p.users
        );
        println!(
            "  at {:.0} msg/s, median of {} runs each:",
            crate::GOAL_RATE,
            p.repeats
        );
        let r = &self.relay;
        let systems = self.systems();
        println!(
            "  {:<14} {:>12} {:>12} {:>14}",
            "", "p50", "p99", "delivered/s"
        );
        for (name, d) in systems {
            println!(
                "  {:<14} {:>9.2} ms {:>9.2} ms {:>14.0}",
                name,
                d.median(|s| s.p50_us) / 1e3,
                d.median(|s| s.p99_us) / 1e3,
                d.median(|s| s.delivered_per_s)
            );
        }
        let dr = &self.durable_relay;
        for (name, d) in [(SERVE, &self.missive), (SPLIT, &self.split)] {
            for (limit, l) in [("relay", r), ("durable relay", dr)] {
                println!(
                    "  {:<14} {:>11.1}× {:>11.1}×",
                    format!("{name} ÷ {limit}"),
                    d.median(|s| s.p50_us) / l.median(|s| s.p50_us),
                    d.median(|s| s.p99_us) / l.median(|s| s.p99_us)
                );
            }
        }
        let soak = |d: &Delivery| {
            d.soak.as_ref().map_or_else(String::new, |s| {
                format!(
                    "{:>9.2} ms {:>9.2} ms {:>14.0}",
                    s.p50_us / 1e3,
                    s.p99_us / 1e3,
                    s.delivered_per_s
                )
            })
        };
        println!(
            "  then one run of {} s (the soak; the goal is judged on the worse of it and the median):",
            p.soak.as_secs()
        );
        for (name, d) in systems {
            println!("  {:<14} {}", name, soak(d));
        }
        for (name, d) in systems {
            if let Some((n, secs)) = d.durable_commits {
                println!(
                    "  {name}: the node's durable projection-store commits during it: {n:.0}, {:.1} ms each on average",
                    if n > 0.0 { secs / n * 1e3 } else { 0.0 }
                );
            }
        }
        println!(
            "\n  step-up (sustained: delivered ≥ {:.0} % of offered, ≤ {:.0} % lost, p99 < {:.0} ms)",
            SUSTAINED_SHARE * 100.0,
            MAX_LOST_SHARE * 100.0,
            SUSTAINED_P99_US / 1e3
        );
        println!(
            "  {:>9} | {:^48} | {:^48} | {:^48} | {:^48}",
            "offered", SERVE, SPLIT, RELAY, DURABLE_RELAY
        );
        let head = format!(
            "{:>10} {:>9} {:>9} {:>6} {:>5} {:>4}",
            "deliv./s", "p50 ms", "p99 ms", "lag", "busy", "ok"
        );
        println!("  {:>9} | {head} | {head} | {head} | {head}", "msg/s");
        let rates: Vec<f64> = {
            let mut v: Vec<f64> = systems
                .iter()
                .flat_map(|(_, d)| &d.steps)
                .map(|s| s.offered)
                .collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        };
        let cell = |d: &Delivery, rate: f64| match d.steps.iter().find(|s| s.offered == rate) {
            Some(s) => format!(
                "{:>10.0} {:>9.2} {:>9.2} {:>6.1} {:>4.0}% {:>4}",
                s.delivered_per_s,
                s.p50_us / 1e3,
                s.p99_us / 1e3,
                s.send_lag_p99_us / 1e3,
                s.machine_busy * 100.0,
                if s.sustained() { "yes" } else { "no" }
            ),
            None => format!(
                "{:>10} {:>9} {:>9} {:>6} {:>5} {:>4}",
                "-", "", "", "", "", ""
            ),
        };
        for rate in rates {
            let cells: Vec<String> = systems.iter().map(|(_, d)| cell(d, rate)).collect();
            println!("  {:>9.0} | {}", rate, cells.join(" | "));
        }
        let fmt = |x: Option<f64>| x.map_or_else(|| "none".to_owned(), |v| format!("{v:.0} msg/s"));
        let sustained: Vec<String> = systems
            .iter()
            .map(|(name, d)| format!("{name} {}", fmt(d.highest_sustained())))
            .collect();
        println!("  highest sustained: {}", sustained.join(", "));
        println!(
            "  lag: the generator's own p99 delay behind schedule, ms (large: the generator fell behind)"
        );
        println!(
            "  busy: share of all the machine's cores busy in the measured window, kernel and other processes included"
        );
        for (name, d) in systems {
            if d.errors() > 0 {
                println!(
                    "  {name}: {} errors; first: {}",
                    d.errors(),
                    d.first_error().unwrap_or_default()
                );
            }
        }
        print_goals(&self.goals());
        let limit = self.durable_relay.goal_p99();
        println!(
            "  the same p99 for the {DURABLE_RELAY}, judged alike: {:.2} ms ({} the goal: the limit of durable delivery on this machine)",
            limit / 1e3,
            if limit < GOAL_P99_US {
                "within"
            } else {
                "over"
            }
        );
        for (name, d) in [(SERVE, &self.missive), (DURABLE_RELAY, &self.durable_relay)] {
            let (slow, in_stall, stalls, longest) = d.disk_share();
            println!(
                "  {name} at the goal rate: {in_stall} of its {slow} messages at or over the goal were in flight while the disk stalled ({stalls} stalls of {:.0} ms or more, longest {})",
                GOAL_P99_US / 1e3,
                longest.map_or_else(|| "-".to_owned(), |us| format!("{:.0} ms", us as f64 / 1e3)),
            );
        }
        println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
    }

    pub(crate) fn json(&self, runtime: Duration) -> Value {
        let i = &self.idle;
        let goals = self.goals();
        json!({
            "bench": "ws",
            "quick": self.plan.quick,
            "cores": cores(),
            "open_files": self.open_files,
            "idle": idle_json(i),
            "delivery": {
                "users": self.plan.users,
                "goal_rate_per_s": crate::GOAL_RATE,
                "repeats": self.plan.repeats,
                "warmup_secs": self.plan.warmup.as_secs_f64(),
                "window_secs": self.plan.window.as_secs_f64(),
                "missive": self.missive.json(),
                "missive_gateway_process": self.split.json(),
                "bare_relay": self.relay.json(),
                "p50_ratio": self.missive.median(|s| s.p50_us) / self.relay.median(|s| s.p50_us),
                "p99_ratio": self.missive.median(|s| s.p99_us) / self.relay.median(|s| s.p99_us),
                "gateway_process_p50_ratio": self.split.median(|s| s.p50_us) / self.relay.median(|s| s.p50_us),
                "gateway_process_p99_ratio": self.split.median(|s| s.p99_us) / self.relay.median(|s| s.p99_us),
                "durable_relay": self.durable_relay.json(),
                "p50_ratio_to_durable_relay": self.missive.median(|s| s.p50_us) / self.durable_relay.median(|s| s.p50_us),
                "p99_ratio_to_durable_relay": self.missive.median(|s| s.p99_us) / self.durable_relay.median(|s| s.p99_us),
                "goal_p99_us_durable_relay": self.durable_relay.goal_p99(),
            },
            "goals": goals_json(&goals),
            "all_goals_met": goals.iter().all(|g| g.met),
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}

/// The idle phase's goals.
fn idle_goals(i: &IdleRun) -> Vec<Goal> {
    let kib = i.kib_per_subscribed();
    vec![
        Goal {
            what: "idle connections held by one gateway",
            value: i.held_subscribed.to_string(),
            target: format!(">= {GOAL_CONNECTIONS}"),
            met: i.held_subscribed >= GOAL_CONNECTIONS,
        },
        Goal {
            what: "gateway memory per idle (subscribed) connection",
            value: format!("{kib:.1} KiB"),
            target: format!("<= {GOAL_KIB_PER_CONNECTION} KiB"),
            met: kib <= GOAL_KIB_PER_CONNECTION,
        },
    ]
}

fn goals_json(goals: &[Goal]) -> Vec<Value> {
    goals
        .iter()
        .map(|g| json!({"what": g.what, "value": g.value, "target": g.target, "met": g.met}))
        .collect()
}

fn print_goals(goals: &[Goal]) {
    println!("\ngoals");
    for g in goals {
        let verdict = if g.met { "met" } else { "NOT MET" };
        println!(
            "  {:<50} {:>12}  goal {:<10}  {verdict}",
            g.what, g.value, g.target
        );
    }
}

/// The idle phase's part of the table.
fn print_idle_table(i: &IdleRun) {
    println!("\nidle connections to one gateway (each authenticated, then subscribed)");
    println!("  {}", i.processes_in_words());
    println!(
        "  asked {}, failed {}{}",
        i.target,
        i.failures,
        i.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "  {:<14} {:>9} {:>12} {:>12} {:>8}",
        "", "held", "gateway RSS", "KiB / conn", "took"
    );
    println!("  {:<14} {:>9} {:>9} KiB", "before", 0, i.rss_before_kib);
    println!(
        "  {:<14} {:>9} {:>9} KiB {:>12.2} {:>6.1} s",
        "authenticated",
        i.held_authenticated,
        i.rss_authenticated_kib,
        i.kib_per_authenticated(),
        i.open_secs
    );
    println!(
        "  {:<14} {:>9} {:>9} KiB {:>12.2} {:>6.1} s",
        "subscribed",
        i.held_subscribed,
        i.rss_subscribed_kib,
        i.kib_per_subscribed(),
        i.subscribe_secs
    );
    println!(
        "  (with them all subscribed: the node's RSS {} KiB, the clients' {} KiB; \
         the machine's MemAvailable {} KiB)",
        i.node_rss_subscribed_kib, i.client_rss_subscribed_kib, i.mem_available_subscribed_kib
    );
}

fn idle_json(i: &IdleRun) -> Value {
    json!({
        "asked": i.target,
        "gateway_worker_processes": i.gateway_workers,
        "gateway_processes_measured": i.gateway_processes,
        "client_holder_processes": i.client_holders,
        "processes": i.processes_in_words(),
        "failures": i.failures,
        "first_error": i.first_error,
        "gateway_rss_before_kib": i.rss_before_kib,
        "authenticated_held": i.held_authenticated,
        "gateway_rss_authenticated_kib": i.rss_authenticated_kib,
        "kib_per_authenticated_connection": i.kib_per_authenticated(),
        "subscribed_held": i.held_subscribed,
        "gateway_rss_subscribed_kib": i.rss_subscribed_kib,
        "kib_per_subscribed_connection": i.kib_per_subscribed(),
        "node_rss_subscribed_kib": i.node_rss_subscribed_kib,
        "client_rss_subscribed_kib": i.client_rss_subscribed_kib,
        "mem_available_subscribed_kib": i.mem_available_subscribed_kib,
        "open_secs": i.open_secs,
        "subscribe_secs": i.subscribe_secs,
    })
}

/// `--idle-only`: the idle phase's part of the table and its goals.
pub(crate) fn print_idle(i: &IdleRun, quick: bool, open_files: u64) {
    let mode = if quick { "quick" } else { "full" };
    println!(
        "bench-ws ({mode} run, idle phase only) on {} cores; open-file limit {open_files}",
        cores()
    );
    print_idle_table(i);
    print_goals(&idle_goals(i));
}

/// `--idle-only`: its figures as one JSON object.
pub(crate) fn idle_only_json(i: &IdleRun, quick: bool, open_files: u64) -> Value {
    let goals = idle_goals(i);
    json!({
        "bench": "ws",
        "idle_only": true,
        "quick": quick,
        "cores": cores(),
        "open_files": open_files,
        "idle": idle_json(i),
        "goals": goals_json(&goals),
        "all_goals_met": goals.iter().all(|g| g.met),
    })
}
