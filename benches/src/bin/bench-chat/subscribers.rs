//! Live subscribers: users holding a `Subscribe` stream each, recording the
//! send → subscriber latency of every message they receive.
//!
//! A sender stamps each message's text with the phase it belongs to and the
//! time it was sent (µs since the run's origin, one clock for the whole
//! process); the subscriber subtracts that from the time it decodes the
//! event. A stream the node ends (a subscriber that fell behind, see
//! `SUBSCRIBER_QUEUE`) is counted and resumed from its last token, so its
//! late events still arrive, late.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind as EventKind;
use missive_proto::v1::chat_service_client::ChatServiceClient;
use missive_proto::v1::subscribe_response::Kind;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::clients::{Clients, connect};
use crate::load::Tag;
use crate::population::Population;
use crate::rng::Rng;
use crate::{Plan, STREAMS_PER_CONNECTION};

/// The subscribers' seed.
const SEED: u64 = 0x7375_6273_6372_6962;

/// Subscriptions being set up at once (each reads every partition's
/// projections on the node's blocking pool).
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// How long all subscriptions may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Latency samples one subscriber keeps per phase (a bound on memory).
const MAX_SAMPLES: usize = 200_000;

/// Resumptions of one subscriber before it gives up.
const MAX_RESUMES: u64 = 100;

/// The events stop arriving when none came for this long...
const QUIET: Duration = Duration::from_millis(500);
/// ...or after this long, whichever is first.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How the subscriptions started.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Started {
    pub(crate) subscribers: usize,
    pub(crate) connections: usize,
    /// From the first call to the last `CaughtUp`.
    pub(crate) secs: f64,
    /// Events (presence of the others coming online) received until the
    /// stream went quiet, before any load.
    pub(crate) settle_events: u64,
}

/// What the subscribers saw of one phase.
#[derive(Clone, Debug, Default)]
pub(crate) struct PhaseSeen {
    /// Send → subscriber latencies, in µs (at most [`MAX_SAMPLES`] per
    /// subscriber).
    pub(crate) latencies_us: Vec<f64>,
    /// Messages received.
    pub(crate) received: u64,
}

/// What the subscribers saw, by phase.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    pub(crate) phases: [PhaseSeen; Tag::COUNT],
    /// Streams the node ended and that were resumed.
    pub(crate) disconnects: u64,
    /// `Resync` answers (history lost: never expected here).
    pub(crate) resyncs: u64,
    pub(crate) first_error: Option<String>,
}

impl Seen {
    fn merge(&mut self, other: Seen) {
        for (mine, theirs) in self.phases.iter_mut().zip(other.phases) {
            mine.latencies_us.extend(theirs.latencies_us);
            mine.received += theirs.received;
        }
        self.disconnects += other.disconnects;
        self.resyncs += other.resyncs;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// The running subscribers.
#[derive(Debug)]
pub(crate) struct Subscribers {
    /// Per conversation (same order as the population): its subscribed
    /// members, each of whom receives each of its messages.
    pub(crate) fanout: Vec<u64>,
    pub(crate) started: Started,
    /// Tells every subscriber to stop.
    stop: watch::Sender<bool>,
    tasks: JoinSet<Seen>,
    /// Events received by all subscribers.
    events: Arc<AtomicU64>,
}

/// Stamps a message's text: phase letter, send time, and filler to a
/// realistic length.
pub(crate) fn stamp(tag: Tag, sent_us: u64) -> String {
    format!(
        "{}{sent_us} the quick brown fox jumps over the lazy dog, again and again",
        tag.letter()
    )
}

/// The phase and send time a stamped text carries.
fn parse_stamp(text: &str) -> Option<(Tag, u64)> {
    let tag = Tag::from_letter(text.chars().next()?)?;
    let digits = text.get(1..)?.split(' ').next()?;
    Some((tag, digits.parse().ok()?))
}

/// Subscribes `plan.subscribers` random users and waits until every one
/// has caught up and the presence events their arrival caused are
/// delivered.
pub(crate) async fn start(
    clients: &Arc<Clients>,
    pop: &Population,
    plan: Plan,
    origin: Instant,
) -> Result<Subscribers> {
    let started_at = Instant::now();
    let mut rng = Rng::new(SEED);
    let users = rng.distinct(plan.subscribers, plan.users);
    let subscribed: HashSet<usize> = users.iter().copied().collect();
    let fanout = pop
        .conversations
        .iter()
        .map(|c| c.members.iter().filter(|m| subscribed.contains(m)).count() as u64)
        .collect();
    let connections = users.len().div_ceil(STREAMS_PER_CONNECTION).max(1);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(clients.addr).await?);
    }
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(users.len().max(1));
    let permits = Arc::new(Semaphore::new(SUBSCRIBE_CONCURRENCY));
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (k, &user) in users.iter().enumerate() {
        let sub = Subscriber {
            client: ChatServiceClient::new(channels[k % connections].clone()),
            clients: clients.clone(),
            user,
            origin,
            stop: stop_rx.clone(),
            ready: Some((ready_tx.clone(), permits.clone())),
            events: events.clone(),
        };
        tasks.spawn(sub.run());
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    for caught_up in 0..users.len() {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("subscribers ended before catching up ({caught_up} did)"),
            Err(_) => bail!(
                "only {caught_up} of {} subscribers caught up in {CATCH_UP_TIMEOUT:?}",
                users.len()
            ),
        }
    }
    let secs = started_at.elapsed().as_secs_f64();
    settle(&events).await;
    Ok(Subscribers {
        fanout,
        started: Started {
            subscribers: users.len(),
            connections,
            secs,
            settle_events: events.load(Ordering::Relaxed),
        },
        stop,
        tasks,
        events,
    })
}

/// Waits until no event arrived for [`QUIET`] (at most [`SETTLE_LIMIT`]).
async fn settle(events: &AtomicU64) {
    let start = Instant::now();
    let mut last = events.load(Ordering::Relaxed);
    while start.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(QUIET).await;
        let now = events.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

impl Subscribers {
    /// Waits until the events in flight are delivered.
    pub(crate) async fn settle(&self) {
        settle(&self.events).await;
    }

    /// Stops every subscriber and gathers what they saw.
    pub(crate) async fn stop(mut self) -> Result<(Started, Seen)> {
        let _ = self.stop.send(true);
        let mut seen = Seen::default();
        while let Some(joined) = self.tasks.join_next().await {
            seen.merge(joined.map_err(|e| anyhow!("a subscriber task failed: {e}"))?);
        }
        Ok((self.started, seen))
    }
}

/// One subscribing user.
struct Subscriber {
    client: ChatServiceClient<Channel>,
    clients: Arc<Clients>,
    user: usize,
    origin: Instant,
    stop: watch::Receiver<bool>,
    /// Until it first catches up: where to say so, and the setup permits
    /// (one held while subscribing).
    ready: Option<(mpsc::Sender<()>, Arc<Semaphore>)>,
    /// Events received by all subscribers.
    events: Arc<AtomicU64>,
}

impl Subscriber {
    async fn run(mut self) -> Seen {
        let mut seen = Seen::default();
        let mut since = String::new();
        let mut permit = match &self.ready {
            Some((_, permits)) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        loop {
            let req = pb::SubscribeRequest {
                since: since.clone(),
            };
            let mut stream = tokio::select! {
                r = self.client.subscribe(self.clients.request(self.user, req)) => match r {
                    Ok(s) => s.into_inner(),
                    Err(status) => {
                        seen.first_error.get_or_insert_with(|| format!("subscribe: {status}"));
                        return seen;
                    }
                },
                _ = self.stop.changed() => return seen,
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = self.stop.changed() => return seen,
                };
                match msg {
                    Ok(Some(resp)) => {
                        since = resp.token;
                        match resp.kind {
                            Some(Kind::CaughtUp(_)) => {
                                permit = None;
                                if let Some((ready, _)) = self.ready.take() {
                                    let _ = ready.send(()).await;
                                }
                            }
                            Some(Kind::Event(e)) => self.record(&mut seen, e),
                            Some(Kind::Resync(_)) => seen.resyncs += 1,
                            None => {}
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        seen.first_error
                            .get_or_insert_with(|| format!("stream: {status}"));
                        break;
                    }
                }
            }
            drop(permit.take());
            seen.disconnects += 1;
            if seen.disconnects > MAX_RESUMES {
                return seen;
            }
        }
    }

    fn record(&self, seen: &mut Seen, e: pb::ChatEvent) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let Some(EventKind::MessageSent(m)) = e.kind else {
            return;
        };
        let Some((tag, sent_us)) = m.content.as_ref().and_then(|c| parse_stamp(&c.text)) else {
            return;
        };
        let now_us = self.origin.elapsed().as_micros() as u64;
        let phase = &mut seen.phases[tag as usize];
        phase.received += 1;
        if phase.latencies_us.len() < MAX_SAMPLES {
            phase
                .latencies_us
                .push(now_us.saturating_sub(sent_us) as f64);
        }
    }
}
