//! The goals, the table and the JSON line.

use std::path::Path;
use std::time::Duration;

use missive_api::limits::{WRITE_BURST, WRITES_PER_SECOND};
use serde_json::{Value, json};

use crate::load::{Latency, Phase};
use crate::replay::{Pass, Replay};
use crate::write_cost::Case;
use crate::{Live, Plan, SENDER_CONNECTIONS};
use missive_benches::cpu::cores;

/// The write-cost goal: each ratio between the groups within this.
const WRITE_COST_WITHIN: f64 = 1.2;
/// The replay goal, events per second.
const REPLAY_GOAL: f64 = 500_000.0;

#[derive(Clone, Debug)]
pub(crate) struct Goal {
    pub(crate) what: String,
    pub(crate) value: f64,
    pub(crate) target: String,
    pub(crate) met: bool,
}

/// Every figure of a run.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) plan: Plan,
    pub(crate) dir: &'a Path,
    pub(crate) filesystem: String,
    pub(crate) live: Live,
    pub(crate) replay: Replay,
}

fn ms(us: f64) -> f64 {
    us / 1e3
}

/// A ratio's distance from 1 either way (1.25 for 0.8 and for 1.25).
fn spread(ratio: f64) -> f64 {
    ratio.max(1.0 / ratio)
}

impl Report<'_> {
    /// The fastest replay variant.
    fn best_replay(&self) -> Option<&crate::replay::Variant> {
        self.replay
            .variants
            .iter()
            .max_by(|a, b| a.pass.events_per_s().total_cmp(&b.pass.events_per_s()))
    }

    pub(crate) fn goals(&self) -> Vec<Goal> {
        let w = &self.live.write_cost;
        let within = format!("within {:.0} %", (WRITE_COST_WITHIN - 1.0) * 100.0);
        let mut goals = vec![
            Goal {
                what: format!(
                    "write cost p50, {} / {} members",
                    w.big.members, w.small.members
                ),
                value: w.p50_ratio,
                target: within.clone(),
                met: spread(w.p50_ratio) <= WRITE_COST_WITHIN,
            },
            Goal {
                what: format!(
                    "write cost throughput, {} / {} members",
                    w.small.members, w.big.members
                ),
                value: w.throughput_ratio,
                target: within,
                met: spread(w.throughput_ratio) <= WRITE_COST_WITHIN,
            },
        ];
        if let Some(best) = self.best_replay() {
            let v = best.pass.events_per_s();
            goals.push(Goal {
                what: format!("replay events/s ({}, batch {})", best.name, best.batch),
                value: v,
                target: format!(">= {REPLAY_GOAL:.0}"),
                met: v >= REPLAY_GOAL,
            });
        }
        goals
    }

    pub(crate) fn print_table(&self, runtime: Duration) {
        let p = self.plan;
        let l = &self.live;
        let mode = if p.quick { "quick" } else { "full" };
        println!(
            "bench-chat ({mode} run): one missive node in this process, {} partitions, {} cores \
             shared by the node and the load generator",
            l.partitions,
            cores()
        );
        println!("directory {} ({})", self.dir.display(), self.filesystem);
        if self.filesystem.starts_with("tmpfs") {
            println!("WARNING: tmpfs: fdatasync is free here, the figures mean little");
        }
        let pop = &l.population;
        println!(
            "population: {} users; {} conversations: {} 1:1, {} groups (median {}, largest {} \
             members), {} memberships; created in {:.1} s",
            pop.users,
            pop.direct + pop.groups,
            pop.direct,
            pop.groups,
            pop.median_group,
            pop.largest_group,
            pop.memberships,
            pop.setup_secs
        );
        let s = &l.subscribe;
        println!(
            "subscribers: {} live Subscribe streams over {} connections, caught up in {:.1} s \
             ({} presence events on arrival)",
            s.subscribers, s.connections, s.secs, s.settle_events
        );
        println!(
            "senders: over {SENDER_CONNECTIONS} connections, each send to a random conversation \
             from a random member of it (rate limit {WRITES_PER_SECOND:.0} writes/s per user, \
             burst {WRITE_BURST:.0}: spread over the members, it does not bind; refusals show \
             as throttled); {:?} warm-up + {:?} measured",
            p.warmup, p.measure
        );
        println!(
            "\n{:<24} | {:>8} | {:^15} | {:^17} | {:^19} | {:>6} {:>6} | {:>5} {:>7} {:>7}",
            "load",
            "msgs/s",
            "send→commit ms",
            "send→subscriber ms",
            "deliveries",
            "errors",
            "thrtl",
            "cores",
            "CPU µs",
            "push"
        );
        println!(
            "{:<24} | {:>8} | {:>7} {:>7} | {:>8} {:>8} | {:>9} {:>9} | {:>6} {:>6} | {:>5} {:>7} {:>7}",
            "",
            "committed",
            "p50",
            "p99",
            "p50",
            "p99",
            "seen",
            "expected",
            "",
            "",
            "busy",
            "/msg",
            "backlog"
        );
        let row = |name: String, ph: &Phase| {
            println!(
                "{:<24} | {:>8.0} | {:>7.1} {:>7.1} | {:>8.1} {:>8.1} | {:>9} {:>9} | {:>6} {:>6} | \
                 {:>5.2} {:>7.0} {:>7}",
                name,
                ph.commits_per_s,
                ms(ph.commit.p50_us),
                ms(ph.commit.p99_us),
                ms(ph.delivery.p50_us),
                ms(ph.delivery.p99_us),
                ph.delivered,
                ph.expected_deliveries,
                ph.errors,
                ph.throttled,
                ph.cores_busy,
                ph.cpu_us_per_message,
                ph.push_backlog
            );
        };
        row(
            format!("saturation, {} senders", l.saturation.senders),
            &l.saturation,
        );
        row(
            format!(
                "fixed {:.0}/s ({:.0} %)",
                l.fixed.offered_per_s.unwrap_or(0.0),
                p.fixed_rate_share * 100.0
            ),
            &l.fixed,
        );
        println!(
            "fixed rate: open loop, latency from each send's scheduled time; {} sends dispatched \
             late; subscriber disconnects {}, resyncs {}",
            l.fixed.late_dispatches, l.subscribe_disconnects, l.subscribe_resyncs
        );
        for (name, e) in [
            ("saturation", &l.saturation.first_error),
            ("fixed", &l.fixed.first_error),
            ("subscribers", &l.subscribe_first_error),
        ] {
            if let Some(e) = e {
                println!("first {name} error: {e}");
            }
        }
        let w = &l.write_cost;
        println!(
            "\nwrite cost: the same {} senders, one send in flight each, {} rounds × {} sends \
             per group, no live subscriber; big group created (1 + {} AddMembers) in {:.1} s",
            p.small_group,
            p.rounds,
            p.small_group * p.sends_per_sender,
            w.big
                .members
                .div_ceil(missive_api::limits::MAX_MEMBERS_PER_CALL)
                - 1,
            w.big_setup_secs
        );
        println!(
            "{:>8} | {:>8} | {:>7} {:>7} {:>7} | {:>7} | {:>6} {:>6} | {:>7}",
            "members", "sends/s", "p50 ms", "p99 ms", "max ms", "CPU µs", "errors", "thrtl", "push"
        );
        let case = |c: &Case| {
            println!(
                "{:>8} | {:>8.0} | {:>7.2} {:>7.2} {:>7.1} | {:>7.0} | {:>6} {:>6} | {:>7}",
                c.members,
                c.per_s,
                ms(c.commit.p50_us),
                ms(c.commit.p99_us),
                ms(c.commit.max_us),
                c.cpu_us_per_message,
                c.errors,
                c.throttled,
                c.push_backlog
            );
        };
        case(&w.small);
        case(&w.big);
        println!(
            "{:>8} | {:>7.2}× | {:>6.2}× {:>15} | {:>6.2}× |",
            "ratio", w.throughput_ratio, w.p50_ratio, "", w.cpu_ratio
        );
        println!(
            "ratio: sends/s small/big, p50 big/small, CPU big/small; push: messages the push \
             notifier had not settled after the rounds (it drained the big group's at {:.0} \
             messages/s)",
            w.big_push_drain_per_s
        );
        for (name, e) in [
            ("small group", &w.small.first_error),
            ("big group", &w.big.first_error),
        ] {
            if let Some(e) = e {
                println!("first {name} error: {e}");
            }
        }
        let r = &self.replay;
        let mib = r.log_bytes as f64 / (1 << 20) as f64;
        println!(
            "\nreplay: the stopped node's {} partition logs, {:.1} MiB in {} segments, {} \
             records, {} commands; median of {}",
            r.partitions,
            mib,
            r.segments,
            r.scan.records,
            r.commands(),
            p.replays
        );
        println!(
            "{:<30} | {:>8} | {:>10} | {:>6} {:>6} {:>6} {:>6}",
            "", "secs", "events/s", "scan", "decode", "apply", "open+close"
        );
        println!(
            "{:<30} | {:>8.3} | {:>10} | {:>6} {:>6} {:>6} {:>6}   {:.0} MiB/s",
            "file read (page cache)",
            r.file_read_secs,
            "",
            "",
            "",
            "",
            "",
            mib / r.file_read_secs
        );
        println!(
            "{:<30} | {:>8.3} | {:>10.0} | {:>6} {:>6} {:>6} {:>6}   records/s: read, CRC, hash chain",
            "raw scan (limit)",
            r.scan.secs,
            r.scan.records as f64 / r.scan.secs,
            "100%",
            "",
            "",
            ""
        );
        let share = |part: f64, pass: &Pass| {
            let whole = pass.scan_secs + pass.decode_secs + pass.apply_secs + pass.open_close_secs;
            format!("{:.0}%", part / whole * 100.0)
        };
        let rows = format!("the store's limit: {} rows", r.limit_serial.rows);
        for (what, secs, note) in [
            (
                "redb alone, 1 thread".to_owned(),
                r.limit_serial.secs,
                &*rows,
            ),
            (
                format!("redb alone, {} threads", r.partitions),
                r.limit_parallel.secs,
                &*rows,
            ),
            (
                "floor, any replay into redb".to_owned(),
                r.floor_secs(),
                "the floor: scan over the cores + redb alone in parallel",
            ),
        ] {
            println!(
                "{:<30} | {:>8.3} | {:>10.0} |                               {note}",
                what,
                secs,
                r.commands() as f64 / secs,
            );
        }
        for v in &r.variants {
            let pass = &v.pass;
            println!(
                "{:<30} | {:>8.3} | {:>10.0} | {:>6} {:>6} {:>6} {:>6}   {:.1} µs/event in apply",
                format!("replay, {}, batch {}", v.name, v.batch),
                pass.secs,
                pass.events_per_s(),
                share(pass.scan_secs, pass),
                share(pass.decode_secs, pass),
                share(pass.apply_secs, pass),
                share(pass.open_close_secs, pass),
                pass.apply_secs * 1e6 / pass.commands.max(1) as f64
            );
        }
        println!(
            "an event is one applied command; apply = the chat command's decoding, the redb \
             transaction and its commit; open+close: the fresh stores' creation and last durable \
             commit (fsyncs); parts of a parallel pass are summed over its threads; rebuilt \
             store: {:.1} MiB; redb alone: the rebuilt rows written by redb in key order into \
             fresh files, one transaction and one durable commit per store, no log read and no \
             projection logic (no replay into redb can beat it)",
            r.store_bytes as f64 / (1 << 20) as f64
        );
        println!("\ngoals");
        for g in self.goals() {
            let verdict = if g.met { "met" } else { "NOT MET" };
            println!(
                "  {:<48} {:>10.2}  goal {:<12}  {verdict}",
                g.what, g.value, g.target
            );
        }
        let floor = self.replay.floor_events_per_s();
        println!(
            "  the floor of any replay into redb on these cores: {floor:.0} events/s ({} the replay goal)",
            if floor >= REPLAY_GOAL {
                "above"
            } else {
                "below"
            }
        );
        println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
    }

    pub(crate) fn json(&self, runtime: Duration) -> Value {
        let p = self.plan;
        let l = &self.live;
        let latency = |x: &Latency| json!({"p50_us": x.p50_us, "p99_us": x.p99_us, "max_us": x.max_us, "samples": x.samples});
        let phase = |ph: &Phase| {
            json!({
                "senders": ph.senders,
                "offered_per_s": ph.offered_per_s,
                "committed_per_s": ph.commits_per_s,
                "committed": ph.committed,
                "send_to_commit": latency(&ph.commit),
                "send_to_subscriber": latency(&ph.delivery),
                "deliveries_seen": ph.delivered,
                "deliveries_expected": ph.expected_deliveries,
                "errors": ph.errors,
                "throttled": ph.throttled,
                "first_error": ph.first_error,
                "late_dispatches": ph.late_dispatches,
                "cores_busy": ph.cores_busy,
                "cpu_us_per_message": ph.cpu_us_per_message,
                "push_backlog": ph.push_backlog,
            })
        };
        let case = |c: &Case| {
            json!({
                "members": c.members,
                "sends": c.sends,
                "sends_per_s": c.per_s,
                "send_to_commit": latency(&c.commit),
                "cpu_us_per_message": c.cpu_us_per_message,
                "errors": c.errors,
                "throttled": c.throttled,
                "push_backlog": c.push_backlog,
            })
        };
        let pass = |x: &Pass| {
            json!({
                "secs": x.secs,
                "records": x.records,
                "commands": x.commands,
                "events_per_s": x.events_per_s(),
                "scan_secs": x.scan_secs,
                "decode_secs": x.decode_secs,
                "apply_secs": x.apply_secs,
                "open_close_secs": x.open_close_secs,
                "batches": x.batches,
            })
        };
        let w = &l.write_cost;
        let r = &self.replay;
        let store_limit: Vec<Value> =
            [("serial", &r.limit_serial), ("parallel", &r.limit_parallel)]
                .iter()
                .map(|(name, l)| {
                    json!({
                        "name": name,
                        "secs": l.secs,
                        "rows": l.rows,
                        "bytes": l.bytes,
                        "events_per_s": r.commands() as f64 / l.secs,
                    })
                })
                .collect();
        let goals = self.goals();
        let pop = &l.population;
        json!({
            "bench": "chat",
            "quick": p.quick,
            "filesystem": self.filesystem,
            "cores": cores(),
            "partitions": l.partitions,
            "population": {
                "users": pop.users,
                "direct": pop.direct,
                "groups": pop.groups,
                "memberships": pop.memberships,
                "median_group": pop.median_group,
                "largest_group": pop.largest_group,
                "setup_secs": pop.setup_secs,
            },
            "subscribers": {
                "count": l.subscribe.subscribers,
                "connections": l.subscribe.connections,
                "caught_up_secs": l.subscribe.secs,
                "presence_events_on_arrival": l.subscribe.settle_events,
                "disconnects": l.subscribe_disconnects,
                "resyncs": l.subscribe_resyncs,
            },
            "rate_limit": {"writes_per_s": WRITES_PER_SECOND, "burst": WRITE_BURST},
            "warmup_secs": p.warmup.as_secs_f64(),
            "measure_secs": p.measure.as_secs_f64(),
            "saturation": phase(&l.saturation),
            "fixed_rate": phase(&l.fixed),
            "write_cost": {
                "senders": p.small_group,
                "rounds": p.rounds,
                "sends_per_round": p.small_group * p.sends_per_sender,
                "small": case(&w.small),
                "big": case(&w.big),
                "big_setup_secs": w.big_setup_secs,
                "big_push_drain_per_s": w.big_push_drain_per_s,
                "p50_ratio_big_to_small": w.p50_ratio,
                "throughput_ratio_small_to_big": w.throughput_ratio,
                "cpu_ratio_big_to_small": w.cpu_ratio,
            },
            "replay": {
                "partitions": r.partitions,
                "log_bytes": r.log_bytes,
                "segments": r.segments,
                "file_read_secs": r.file_read_secs,
                "raw_scan": pass(&r.scan),
                "variants": r.variants.iter().map(|v| json!({
                    "name": v.name,
                    "threads": v.threads,
                    "batch": v.batch,
                    "pass": pass(&v.pass),
                })).collect::<Vec<_>>(),
                "store_bytes": r.store_bytes,
                "store_limit": store_limit,
                "floor_events_per_s": r.floor_events_per_s(),
            },
            "goals": goals.iter().map(|g| json!({
                "what": g.what, "value": g.value, "target": g.target, "met": g.met
            })).collect::<Vec<_>>(),
            "all_goals_met": goals.iter().all(|g| g.met),
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}
