//! The load phases: saturation (closed loop, N senders with one send in
//! flight each) and a fixed offered rate (open loop).
//!
//! Every send goes to a uniformly chosen conversation of the population,
//! from a uniformly chosen member of it, with that member's token: the
//! sends spread over thousands of users, so the per-user rate limit never
//! binds (refusals are counted as `throttled` all the same).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use missive_benches::stats::quantile;
use missive_proto::v1 as pb;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Plan;
use crate::clients::Clients;
use crate::node::Node;
use crate::population::Population;
use crate::rng::Rng;
use crate::subscribers::{Seen, Subscribers, stamp};
use missive_benches::cpu::own_cpu_seconds;

/// How long a sender pauses after a failed send.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Sends in flight at once in the open-loop phase; a dispatcher that finds
/// none free waits (and counts the send as dispatched late).
const MAX_IN_FLIGHT: usize = 2048;

/// A dispatch this much after its scheduled time counts as late.
const LATE: Duration = Duration::from_millis(10);

/// Which phase a message belongs to (stamped into its text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    Warmup = 0,
    Saturation = 1,
    Fixed = 2,
}

impl Tag {
    pub(crate) const COUNT: usize = 3;

    pub(crate) fn letter(self) -> char {
        match self {
            Tag::Warmup => 'w',
            Tag::Saturation => 's',
            Tag::Fixed => 'f',
        }
    }

    pub(crate) fn from_letter(c: char) -> Option<Tag> {
        match c {
            'w' => Some(Tag::Warmup),
            's' => Some(Tag::Saturation),
            'f' => Some(Tag::Fixed),
            _ => None,
        }
    }
}

/// Quantiles of a set of latencies.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Latency {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    pub(crate) samples: usize,
}

impl Latency {
    pub(crate) fn of(samples: &mut [f64]) -> Latency {
        Latency {
            p50_us: quantile(samples, 0.5).unwrap_or(f64::NAN),
            p99_us: quantile(samples, 0.99).unwrap_or(f64::NAN),
            max_us: quantile(samples, 1.0).unwrap_or(f64::NAN),
            samples: samples.len(),
        }
    }
}

/// What one load phase measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Phase {
    /// Concurrent senders (closed loop), or 0 for the open loop.
    pub(crate) senders: usize,
    /// The offered rate of the open loop.
    pub(crate) offered_per_s: Option<f64>,
    /// Sends acknowledged inside the measured window, per second of it.
    pub(crate) commits_per_s: f64,
    /// Send → commit (acknowledged) latency.
    pub(crate) commit: Latency,
    /// Sends acknowledged inside the window.
    pub(crate) committed: u64,
    /// Failed sends, and among them those the rate limit refused.
    pub(crate) errors: u64,
    pub(crate) throttled: u64,
    pub(crate) first_error: Option<String>,
    /// Open loop: sends dispatched more than [`LATE`] after their time.
    pub(crate) late_dispatches: u64,
    /// Deliveries to subscribers the phase's acknowledged sends owe.
    pub(crate) expected_deliveries: u64,
    /// Deliveries the subscribers saw.
    pub(crate) delivered: u64,
    /// Send → subscriber latency.
    pub(crate) delivery: Latency,
    /// Cores this process kept busy in the window.
    pub(crate) cores_busy: f64,
    /// This process's CPU time per acknowledged send, in µs.
    pub(crate) cpu_us_per_message: f64,
    /// Messages the push notifier had not settled at the window's end.
    pub(crate) push_backlog: u64,
}

impl Phase {
    /// The phase with what the subscribers saw of it.
    pub(crate) fn with_deliveries(mut self, seen: &Seen, tag: Tag) -> Phase {
        let phase = &seen.phases[tag as usize];
        self.delivered = phase.received;
        self.delivery = Latency::of(&mut phase.latencies_us.clone());
        self
    }
}

/// One send's outcome.
struct Sent {
    tag: Tag,
    conv: usize,
    result: Result<(), tonic::Status>,
    latency_us: f64,
    /// Acknowledged before the window closed.
    in_window: bool,
}

/// Sends one stamped message to a random conversation from a random member
/// of it.
async fn send_random(
    clients: &Clients,
    pop: &Population,
    rng: &mut Rng,
    connection: usize,
    tag: Tag,
    sent_us: u64,
    client_msg_id: String,
) -> (usize, Result<(), tonic::Status>) {
    let conv = rng.below(pop.conversations.len());
    let c = &pop.conversations[conv];
    let sender = c.members[rng.below(c.members.len())];
    let req = pb::SendRequest {
        conversation_id: c.id.clone(),
        client_msg_id,
        content: Some(pb::Content {
            text: stamp(tag, sent_us),
            ..Default::default()
        }),
        reply_to: 0,
    };
    let result = clients
        .client(connection)
        .send(clients.request(sender, req))
        .await
        .map(|_| ());
    (conv, result)
}

fn micros_since(origin: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(origin).as_micros() as u64
}

/// Folds the outcomes of a phase's sends.
fn summarize(
    outcomes: Vec<Sent>,
    tag: Tag,
    subs: &Subscribers,
    window: Duration,
    cpu_s: f64,
) -> Phase {
    let mut phase = Phase::default();
    let mut latencies = Vec::new();
    for s in outcomes.into_iter().filter(|s| s.tag == tag) {
        match s.result {
            Ok(()) => {
                phase.expected_deliveries += subs.fanout[s.conv];
                if s.in_window {
                    latencies.push(s.latency_us);
                }
            }
            Err(status) => {
                phase.errors += 1;
                if status.code() == tonic::Code::ResourceExhausted {
                    phase.throttled += 1;
                }
                phase.first_error.get_or_insert_with(|| status.to_string());
            }
        }
    }
    phase.committed = latencies.len() as u64;
    phase.commits_per_s = phase.committed as f64 / window.as_secs_f64();
    phase.commit = Latency::of(&mut latencies);
    phase.cores_busy = cpu_s / window.as_secs_f64();
    phase.cpu_us_per_message = cpu_s * 1e6 / phase.committed.max(1) as f64;
    phase
}

/// Samples this process's CPU seconds over `start..end`.
fn cpu_over(start: Instant, end: Instant) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before = own_cpu_seconds();
        tokio::time::sleep_until(end.into()).await;
        own_cpu_seconds() - before
    })
}

/// `plan.senders` senders, each with one send in flight, for the warm-up
/// and the measured window.
pub(crate) async fn saturation(
    node: &Node,
    clients: &Arc<Clients>,
    pop: &Arc<Population>,
    subs: &Subscribers,
    plan: Plan,
    origin: Instant,
) -> Result<Phase> {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.measure;
    let cpu = cpu_over(window_start, window_end);
    let mut tasks = JoinSet::new();
    for task in 0..plan.senders {
        let (clients, pop) = (clients.clone(), pop.clone());
        tasks.spawn(async move {
            let mut rng = Rng::new(0x5e4d_0000 + task as u64);
            let mut out = Vec::new();
            for i in 0u64.. {
                let t0 = Instant::now();
                if t0 >= window_end {
                    break;
                }
                let tag = if t0 < window_start {
                    Tag::Warmup
                } else {
                    Tag::Saturation
                };
                let id = format!("s-{task}-{i}");
                let (conv, result) = send_random(
                    &clients,
                    &pop,
                    &mut rng,
                    task,
                    tag,
                    micros_since(origin, t0),
                    id,
                )
                .await;
                let t1 = Instant::now();
                let failed = result.is_err();
                out.push(Sent {
                    tag,
                    conv,
                    result,
                    latency_us: (t1 - t0).as_secs_f64() * 1e6,
                    in_window: t1 <= window_end,
                });
                if failed {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
            out
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.extend(joined.map_err(|e| anyhow!("a sender failed: {e}"))?);
    }
    let cpu_s = cpu
        .await
        .map_err(|e| anyhow!("the CPU sampler failed: {e}"))?;
    let mut phase = summarize(outcomes, Tag::Saturation, subs, plan.measure, cpu_s);
    phase.senders = plan.senders;
    phase.push_backlog = node.push_backlog()?;
    subs.settle().await;
    Ok(phase)
}

/// Sends at `rate` per second on a fixed schedule, whatever the answers;
/// latency counts from each send's scheduled time.
pub(crate) async fn fixed_rate(
    node: &Node,
    clients: &Arc<Clients>,
    pop: &Arc<Population>,
    subs: &Subscribers,
    plan: Plan,
    origin: Instant,
    rate: f64,
) -> Result<Phase> {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.measure;
    let cpu = cpu_over(window_start, window_end);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::new();
    let mut late = 0;
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= window_end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = permits.clone().acquire_owned().await?;
        let tag = if due < window_start {
            Tag::Warmup
        } else {
            Tag::Fixed
        };
        if tag == Tag::Fixed && Instant::now() > due + LATE {
            late += 1;
        }
        let (clients, pop) = (clients.clone(), pop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let mut rng = Rng::new(0xf1_0000_0000 + i);
            let id = format!("f-{i}");
            let (conv, result) = send_random(
                &clients,
                &pop,
                &mut rng,
                i as usize,
                tag,
                micros_since(origin, due),
                id,
            )
            .await;
            let t1 = Instant::now();
            Sent {
                tag,
                conv,
                result,
                latency_us: t1.saturating_duration_since(due).as_secs_f64() * 1e6,
                in_window: t1 <= window_end,
            }
        });
        // Reap what finished, so the set holds only sends in flight.
        while let Some(joined) = tasks.try_join_next() {
            outcomes.push(joined.map_err(|e| anyhow!("a send failed: {e}"))?);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.map_err(|e| anyhow!("a send failed: {e}"))?);
    }
    let cpu_s = cpu
        .await
        .map_err(|e| anyhow!("the CPU sampler failed: {e}"))?;
    let mut phase = summarize(outcomes, Tag::Fixed, subs, plan.measure, cpu_s);
    phase.offered_per_s = Some(rate);
    phase.late_dispatches = late;
    phase.push_backlog = node.push_backlog()?;
    subs.settle().await;
    Ok(phase)
}
