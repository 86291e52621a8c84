//! The write cost of one message to a 10-member group against a
//! 10,000-member one.
//!
//! Users `0..10` form the small group; users `0..10,000` the big one (so
//! the same 10 users belong to both). The same 10 senders, one send in
//! flight each, send the same number of messages to each group in rounds
//! that stay inside each sender's rate-limit burst; before each round the
//! buckets refill. All small rounds run first: the push notifier settles
//! each message by looking at every member, so the big group leaves a
//! backlog that would otherwise slow the small rounds after it. That
//! backlog and the rate the notifier drains it are reported beside. Each
//! group's rounds start once the notifier has settled everything before
//! them, the earlier phases' messages included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use missive_api::limits::{MAX_MEMBERS_PER_CALL, WRITE_BURST, WRITES_PER_SECOND};
use missive_benches::stats::median_of;
use missive_proto::v1 as pb;
use tokio::task::JoinSet;

use crate::Plan;
use crate::clients::Clients;
use crate::load::Latency;
use crate::node::Node;
use crate::population::create_big_group;
use missive_benches::cpu::own_cpu_seconds;

/// How long a backlog of push notifications may take to drain before a
/// group's rounds.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Waits (at most [`DRAIN_LIMIT`]) until the push notifier has settled
/// everything sent so far, so that a group's rounds do not share the
/// cores with the notifier's work for earlier messages: the phases before
/// (the fixed-rate load, the groups' creation) or the other group's rounds.
async fn settle(node: &Node) -> Result<()> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    while node.push_backlog()? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long the notifier's drain of the big group's backlog is watched.
const DRAIN_WATCH: Duration = Duration::from_secs(3);

/// How fast the notifier settles a backlog of `before` messages: the
/// backlog over the time it took to empty, polled every 10 ms, or what it
/// settled over [`DRAIN_WATCH`] if it is not empty by then. (Dividing by the
/// whole watch would understate a backlog drained sooner.)
async fn drain_rate(node: &Node, before: u64) -> Result<f64> {
    let started = Instant::now();
    loop {
        let now = node.push_backlog()?;
        let elapsed = started.elapsed();
        if now == 0 || elapsed >= DRAIN_WATCH {
            let settled = before.saturating_sub(now) as f64;
            return Ok(settled / elapsed.as_secs_f64().max(1e-3));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One group's rounds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Case {
    pub(crate) members: usize,
    pub(crate) sends: u64,
    /// Send → commit latency over every round.
    pub(crate) commit: Latency,
    /// Sends per second of a round (first send to last answer), median of
    /// the rounds.
    pub(crate) per_s: f64,
    /// This process's CPU time per message, median of the rounds.
    pub(crate) cpu_us_per_message: f64,
    pub(crate) errors: u64,
    pub(crate) throttled: u64,
    pub(crate) first_error: Option<String>,
    /// Messages whose push notifications were unsettled after the rounds.
    pub(crate) push_backlog: u64,
}

/// Both groups and their ratios.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteCost {
    pub(crate) small: Case,
    pub(crate) big: Case,
    /// Time to create the big group (1 create + AddMembers calls).
    pub(crate) big_setup_secs: f64,
    /// The notifier's drain of the big group's backlog, messages/s.
    pub(crate) big_push_drain_per_s: f64,
    /// big p50 / small p50.
    pub(crate) p50_ratio: f64,
    /// small throughput / big throughput.
    pub(crate) throughput_ratio: f64,
    /// big CPU per message / small CPU per message.
    pub(crate) cpu_ratio: f64,
}

/// One round's figures.
#[derive(Debug, Default)]
struct Round {
    latencies_us: Vec<f64>,
    per_s: f64,
    cpu_us_per_message: f64,
    errors: u64,
    throttled: u64,
    first_error: Option<String>,
}

/// How long a bucket emptied by a round takes to fill again, with margin.
fn refill() -> Duration {
    Duration::from_secs_f64(WRITE_BURST / WRITES_PER_SECOND * 1.25)
}

pub(crate) async fn run(node: &Node, clients: &Arc<Clients>, plan: Plan) -> Result<WriteCost> {
    let small_id = create_big_group(clients, plan.small_group, MAX_MEMBERS_PER_CALL).await?;
    let t = Instant::now();
    let big_id = create_big_group(clients, plan.big_group, MAX_MEMBERS_PER_CALL).await?;
    let big_setup_secs = t.elapsed().as_secs_f64();
    settle(node).await?;
    let small = case(clients, &small_id, plan.small_group, plan).await?;
    let small = Case {
        push_backlog: node.push_backlog()?,
        ..small
    };
    settle(node).await?;
    let big = case(clients, &big_id, plan.big_group, plan).await?;
    let before = node.push_backlog()?;
    let drain = drain_rate(node, before).await?;
    let big = Case {
        push_backlog: before,
        ..big
    };
    Ok(WriteCost {
        big_push_drain_per_s: drain,
        p50_ratio: big.commit.p50_us / small.commit.p50_us,
        throughput_ratio: small.per_s / big.per_s,
        cpu_ratio: big.cpu_us_per_message / small.cpu_us_per_message,
        big_setup_secs,
        small,
        big,
    })
}

/// `plan.rounds` rounds of sends to `conv` by users `0..plan.small_group`.
async fn case(clients: &Arc<Clients>, conv: &str, members: usize, plan: Plan) -> Result<Case> {
    let mut rounds = Vec::with_capacity(plan.rounds);
    for r in 0..plan.rounds {
        tokio::time::sleep(refill()).await;
        rounds.push(round(clients, conv, plan, r).await?);
        eprintln!(
            "  {members:>6} members, round {}/{}: {:.0} sends/s",
            r + 1,
            plan.rounds,
            rounds[r].per_s
        );
    }
    let mut latencies: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    Ok(Case {
        members,
        sends: latencies.len() as u64,
        commit: Latency::of(&mut latencies),
        per_s: median_of(&rounds, |r| r.per_s),
        cpu_us_per_message: median_of(&rounds, |r| r.cpu_us_per_message),
        errors: rounds.iter().map(|r| r.errors).sum(),
        throttled: rounds.iter().map(|r| r.throttled).sum(),
        first_error: rounds.iter().find_map(|r| r.first_error.clone()),
        push_backlog: 0,
    })
}

async fn round(clients: &Arc<Clients>, conv: &str, plan: Plan, r: usize) -> Result<Round> {
    let start = Instant::now();
    let cpu = own_cpu_seconds();
    let mut tasks = JoinSet::new();
    for sender in 0..plan.small_group {
        let (clients, conv) = (clients.clone(), conv.to_owned());
        let sends = plan.sends_per_sender;
        tasks.spawn(async move {
            let mut client = clients.client(sender);
            let mut out = Vec::with_capacity(sends);
            for i in 0..sends {
                let req = pb::SendRequest {
                    conversation_id: conv.clone(),
                    client_msg_id: format!("c-{r}-{i}"),
                    content: Some(pb::Content {
                        text: format!("round {r}, message {i}: the same text for both groups"),
                        ..Default::default()
                    }),
                    reply_to: 0,
                };
                let t0 = Instant::now();
                let result = client.send(clients.request(sender, req)).await;
                out.push((t0.elapsed().as_secs_f64() * 1e6, result.map(|_| ())));
            }
            out
        });
    }
    let mut round = Round::default();
    while let Some(joined) = tasks.join_next().await {
        for (latency_us, result) in joined.map_err(|e| anyhow!("a sender failed: {e}"))? {
            match result {
                Ok(()) => round.latencies_us.push(latency_us),
                Err(status) => {
                    round.errors += 1;
                    if status.code() == tonic::Code::ResourceExhausted {
                        round.throttled += 1;
                    }
                    round.first_error.get_or_insert_with(|| status.to_string());
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = round.latencies_us.len().max(1) as f64;
    round.per_s = round.latencies_us.len() as f64 / secs;
    round.cpu_us_per_message = (own_cpu_seconds() - cpu) * 1e6 / n;
    Ok(round)
}
