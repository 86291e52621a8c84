//! The medians of a run, its goals, the table and the JSON line.

use std::path::Path;
use std::time::Duration;

use missive_benches::stats::median_of;
use serde_json::{Value, json};

use crate::limit::{CONCURRENT_LOOPS, Limit, SyncLatency};
use crate::load::LoadRun;
use crate::{MAX_CONNECTIONS, Plan, VALUE_BYTES};
use missive_benches::cpu::cores;

/// One system in one case: medians over the repeats.
#[derive(Clone, Debug)]
pub(crate) struct Side {
    pub(crate) commits_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Writes counted, over every repeat.
    pub(crate) commits: u64,
    /// Failed writes, over every repeat.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Cores the system's processes kept busy in the window.
    pub(crate) server_cores: f64,
    /// Their CPU time per commit, in µs.
    pub(crate) server_us_per_commit: f64,
    /// Cores the load generator kept busy in the window.
    pub(crate) client_cores: f64,
    /// The share of the whole machine busy in the window (0 to 1).
    pub(crate) machine_busy: f64,
}

impl Side {
    fn of(clients: usize, runs: &[(usize, LoadRun)], window: Duration) -> Side {
        let runs: Vec<&LoadRun> = runs
            .iter()
            .filter(|(c, _)| *c == clients)
            .map(|(_, r)| r)
            .collect();
        Side {
            commits_per_s: median_of(&runs, |r| r.commits_per_s),
            p50_us: median_of(&runs, |r| r.p50_us),
            p99_us: median_of(&runs, |r| r.p99_us),
            commits: runs.iter().map(|r| r.commits).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
            server_cores: median_of(&runs, |r| r.server_cpu_s / window.as_secs_f64()),
            server_us_per_commit: median_of(&runs, |r| r.server_cpu_s * 1e6 / r.commits as f64),
            client_cores: median_of(&runs, |r| r.client_cpu_s / window.as_secs_f64()),
            machine_busy: median_of(&runs, |r| r.machine_busy),
        }
    }

    fn json(&self) -> Value {
        json!({
            "commits_per_s": self.commits_per_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "commits": self.commits,
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cores": self.server_cores,
            "server_cpu_us_per_commit": self.server_us_per_commit,
            "load_generator_cores": self.client_cores,
            "machine_busy_share": self.machine_busy,
        })
    }
}

/// One client count: both systems and their ratios.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) clients: usize,
    pub(crate) missive: Side,
    pub(crate) etcd: Side,
    /// missive's commits/s over etcd's.
    pub(crate) throughput_ratio: f64,
    /// missive's p50 and p99 over etcd's.
    pub(crate) p50_ratio: f64,
    pub(crate) p99_ratio: f64,
    /// Each system's p50 over the write + fdatasync p50.
    pub(crate) missive_p50_vs_limit: f64,
    pub(crate) etcd_p50_vs_limit: f64,
}

impl Case {
    pub(crate) fn new(
        clients: usize,
        missive: &[(usize, LoadRun)],
        etcd: &[(usize, LoadRun)],
        limit: &SyncLatency,
        window: Duration,
    ) -> Case {
        let (missive, etcd) = (
            Side::of(clients, missive, window),
            Side::of(clients, etcd, window),
        );
        Case {
            clients,
            throughput_ratio: missive.commits_per_s / etcd.commits_per_s,
            p50_ratio: missive.p50_us / etcd.p50_us,
            p99_ratio: missive.p99_us / etcd.p99_us,
            missive_p50_vs_limit: missive.p50_us / limit.p50_us,
            etcd_p50_vs_limit: etcd.p50_us / limit.p50_us,
            missive,
            etcd,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Goal {
    pub(crate) what: String,
    /// A ratio.
    pub(crate) value: f64,
    pub(crate) target: &'static str,
    pub(crate) met: bool,
}

/// Every figure of a run.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) plan: Plan,
    pub(crate) dir: &'a Path,
    pub(crate) filesystem: String,
    pub(crate) partitions: u32,
    /// Which node led which partition.
    pub(crate) leaders: String,
    pub(crate) etcd_version: String,
    pub(crate) limit: Limit,
    pub(crate) cases: Vec<Case>,
}

impl Report<'_> {
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for c in &self.cases {
            if c.clients == 256 {
                goals.push(Goal {
                    what: "256 clients: commits/s, missive / etcd".to_owned(),
                    value: c.throughput_ratio,
                    target: ">= 2.00",
                    met: c.throughput_ratio >= 2.0,
                });
                goals.push(Goal {
                    what: "256 clients: p99 latency, missive / etcd".to_owned(),
                    value: c.p99_ratio,
                    target: "<= 1.00",
                    met: c.p99_ratio <= 1.0,
                });
            }
            if c.clients == 1 {
                goals.push(Goal {
                    what: "1 client: p50 commit latency / write+fdatasync p50".to_owned(),
                    value: c.missive_p50_vs_limit,
                    target: "<= 3.00",
                    met: c.missive_p50_vs_limit <= 3.0,
                });
            }
        }
        goals
    }

    pub(crate) fn print_table(&self, runtime: Duration) {
        let p = self.plan;
        let mode = if p.quick { "quick" } else { "full" };
        println!(
            "bench-raft ({mode} run): {:?} warm-up + {:?} measured per case and system, median of {}",
            p.warmup, p.measure, p.repeats
        );
        println!("directory {} ({})", self.dir.display(), self.filesystem);
        if self.filesystem.starts_with("tmpfs") {
            println!("WARNING: tmpfs: fdatasync is free here, the figures mean nothing");
        }
        let plural = if self.partitions == 1 { "" } else { "s" };
        println!(
            "missive: 3 node processes, {} partition{plural}; {}",
            self.partitions, self.leaders
        );
        println!("etcd {}: 3 members (Debian etcd-server)", self.etcd_version);
        println!(
            "{VALUE_BYTES} B values, each client overwrites its own key with one write in flight; \
             every client writes to the leader, over min(clients, {MAX_CONNECTIONS}) HTTP/2 \
             connections (missive: one Writes stream on each; etcd: one KV.Put call per write)"
        );
        let (a, o, c) = (
            &self.limit.append,
            &self.limit.overwrite,
            &self.limit.concurrent,
        );
        println!(
            "limit: write({VALUE_BYTES} B) + fdatasync in the same directory, appending: p50 {:.0} \
             µs, p99 {:.0} µs ({} syncs);\n       overwriting a synced file (data only): p50 {:.0} \
             µs, p99 {:.0} µs ({} syncs);\n       {CONCURRENT_LOOPS} overwrite loops at once, a file \
             each (three nodes' logs on one disk): p50 {:.0} µs, p99 {:.0} µs ({} syncs)",
            a.p50_us, a.p99_us, a.syncs, o.p50_us, o.p99_us, o.syncs, c.p50_us, c.p99_us, c.syncs
        );
        println!(
            "\n{:>7} | {:^35} | {:^35} | {:^24} | {:^15}",
            "", "missive", "etcd", "missive / etcd", "p50 / fdatasync"
        );
        println!(
            "{:>7} | {:>9} {:>8} {:>8} {:>6} | {:>9} {:>8} {:>8} {:>6} | {:>9} {:>6} {:>6} | {:>7} {:>7}",
            "clients",
            "commits/s",
            "p50 µs",
            "p99 µs",
            "errors",
            "commits/s",
            "p50 µs",
            "p99 µs",
            "errors",
            "commits/s",
            "p50",
            "p99",
            "missive",
            "etcd"
        );
        for c in &self.cases {
            let (m, e) = (&c.missive, &c.etcd);
            println!(
                "{:>7} | {:>9.0} {:>8.0} {:>8.0} {:>6} | {:>9.0} {:>8.0} {:>8.0} {:>6} | \
                 {:>8.2}× {:>5.2}× {:>5.2}× | {:>6.2}× {:>6.2}×",
                c.clients,
                m.commits_per_s,
                m.p50_us,
                m.p99_us,
                m.errors,
                e.commits_per_s,
                e.p50_us,
                e.p99_us,
                e.errors,
                c.throughput_ratio,
                c.p50_ratio,
                c.p99_ratio,
                c.missive_p50_vs_limit,
                c.etcd_p50_vs_limit
            );
        }
        for (name, side) in self
            .cases
            .iter()
            .flat_map(|c| [("missive", &c.missive), ("etcd", &c.etcd)])
        {
            if let Some(e) = &side.first_error {
                println!("first {name} error: {e}");
            }
        }
        println!(
            "p50 / fdatasync: over the faster write + fdatasync p50 of the two above\n\nCPU in the measured \
             window ({} cores; servers: the 3 processes of the system under load)",
            cores()
        );
        println!("{:>7} | {:^40} | {:^40}", "", "missive", "etcd");
        println!(
            "{:>7} | {:>7} {:>12} {:>10} {:>8} | {:>7} {:>12} {:>10} {:>8}",
            "clients",
            "servers",
            "µs/commit",
            "load gen",
            "machine",
            "servers",
            "µs/commit",
            "load gen",
            "machine"
        );
        for c in &self.cases {
            let (m, e) = (&c.missive, &c.etcd);
            println!(
                "{:>7} | {:>7.2} {:>12.0} {:>10.2} {:>7.0}% | {:>7.2} {:>12.0} {:>10.2} {:>7.0}%",
                c.clients,
                m.server_cores,
                m.server_us_per_commit,
                m.client_cores,
                m.machine_busy * 100.0,
                e.server_cores,
                e.server_us_per_commit,
                e.client_cores,
                e.machine_busy * 100.0
            );
        }
        println!(
            "servers, load gen: cores kept busy; µs/commit: the servers' CPU time per commit; \
             machine: share of all cores busy, kernel and other processes included"
        );
        println!("\ngoals");
        for g in self.goals() {
            let verdict = if g.met { "met" } else { "NOT MET" };
            println!(
                "  {:<52} {:>6.2}×  goal {:<8}  {verdict}",
                g.what, g.value, g.target
            );
        }
        println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
    }

    pub(crate) fn json(&self, runtime: Duration) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                json!({
                    "clients": c.clients,
                    "missive": c.missive.json(),
                    "etcd": c.etcd.json(),
                    "throughput_ratio_to_etcd": c.throughput_ratio,
                    "p50_ratio_to_etcd": c.p50_ratio,
                    "p99_ratio_to_etcd": c.p99_ratio,
                    "missive_p50_ratio_to_fdatasync": c.missive_p50_vs_limit,
                    "etcd_p50_ratio_to_fdatasync": c.etcd_p50_vs_limit,
                })
            })
            .collect();
        let goals = self.goals();
        let goals_json: Vec<Value> = goals
            .iter()
            .map(|g| json!({"what": g.what, "value": g.value, "target": g.target, "met": g.met}))
            .collect();
        json!({
            "bench": "raft",
            "quick": self.plan.quick,
            "warmup_secs": self.plan.warmup.as_secs_f64(),
            "measure_secs": self.plan.measure.as_secs_f64(),
            "repeats": self.plan.repeats,
            "filesystem": self.filesystem,
            "value_bytes": VALUE_BYTES,
            "max_connections": MAX_CONNECTIONS,
            "clients_write_to": "leader",
            "missive": {
                "nodes": 3,
                "partitions": self.partitions,
                "leaders": self.leaders,
                "client_calls": "one Writes stream per connection",
            },
            "etcd": {
                "members": 3,
                "version": self.etcd_version,
                "client_calls": "one KV.Put call per write",
            },
            "cores": cores(),
            "fdatasync": {
                "p50_us": self.limit.append.p50_us,
                "p99_us": self.limit.append.p99_us,
                "syncs": self.limit.append.syncs,
                "method": "append write of value_bytes + fdatasync, same directory as the clusters",
                "overwrite_p50_us": self.limit.overwrite.p50_us,
                "overwrite_p99_us": self.limit.overwrite.p99_us,
                "overwrite_syncs": self.limit.overwrite.syncs,
                "floor_p50_us": self.limit.floor().p50_us,
                "concurrent_loops": CONCURRENT_LOOPS,
                "concurrent_p50_us": self.limit.concurrent.p50_us,
                "concurrent_p99_us": self.limit.concurrent.p99_us,
                "concurrent_syncs": self.limit.concurrent.syncs,
            },
            "cases": cases,
            "goals": goals_json,
            "all_goals_met": goals.iter().all(|g| g.met),
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}
