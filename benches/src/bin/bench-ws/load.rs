//! The open-loop load generator both systems are driven by.
//!
//! A [`Fleet`] is N connected users in pairs (user `2k` with `2k + 1`);
//! each sends to its partner. At an offered rate R, message `i` is
//! *scheduled* at `t0 + i / R` and sent by user `i mod N`: sends happen on
//! schedule whether or not earlier ones were answered (open loop), and a
//! message's latency runs from its scheduled time to the moment its
//! partner's reader has the frame. A generator or system that falls behind
//! therefore shows as latency, never as silently fewer samples (no
//! coordinated omission).
//!
//! Both systems get the same bytes: a missive `send` frame whose text is
//! `wsb:<scheduled µs>:<sender>`. The gateway turns it into a `message_sent`
//! event to both members (the sender's own copy is skipped); the bare relay
//! forwards the frame itself to the partner. Readers find the marker by a
//! substring search, not a JSON parse, so the generator's cost per message
//! is small and the same for both.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use missive_benches::cpu::{MachineTicks, cpu_seconds, own_cpu_seconds};
use missive_benches::stats::quantile;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::report::GOAL_P99_US;

/// Tasks that send; user `u` is sent from by task `u mod SENDERS`. The
/// user count is a multiple of it, so message `i` lands on task
/// `i mod SENDERS`.
pub(crate) const SENDERS: usize = 8;

/// After a step's drain, the generator waits for deliveries to stop for
/// this long...
const QUIET: Duration = Duration::from_secs(1);
/// ...but at most this long.
const MAX_QUIESCE: Duration = Duration::from_secs(60);

/// The text marker of a benchmark message.
const MARKER: &str = "wsb:";

/// The benchmark's epoch: scheduled and receive times are µs since it.
/// It also remembers the wall-clock time (Unix, µs) it started at, to place
/// those times on the wall clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(Instant, u64);

impl Clock {
    pub(crate) fn new() -> Clock {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock(Instant::now(), unix_us)
    }

    fn us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_micros() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }

    /// `us` (µs since the epoch) on the wall clock, Unix µs.
    fn unix_us(&self, us: u64) -> u64 {
        self.1 + us
    }

    /// A wall-clock time in Unix milliseconds, in µs since the epoch.
    fn us_of_unix_ms(&self, ms: u64) -> u64 {
        (ms * 1000).saturating_sub(self.1)
    }
}

/// One delivered message, in µs since the benchmark's epoch: when it was
/// scheduled, when its partner received it, and when the partition's
/// leader stamped its log entry (the event's `timestamp_ms`, so to the
/// millisecond; `None` where no node stamps, as with the bare relay).
///
/// The stamp splits a message's latency in two: before it, the generator,
/// the gateway, the link and the node's way into Raft; after it, the log's
/// fdatasync, the commit, the apply, the fan-out and the way back out. All
/// processes run on one machine and read one clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    scheduled: u64,
    received: u64,
    stamped: Option<u64>,
}

impl Sample {
    fn latency(&self) -> u64 {
        self.received.saturating_sub(self.scheduled)
    }

    /// The part of the latency after the leader's stamp. The stamp is
    /// truncated to the millisecond, so this part may read up to 1 ms long.
    fn after_stamp(&self) -> Option<u64> {
        Some(self.received.saturating_sub(self.stamped?))
    }
}

/// What the readers record: per delivered message, a [`Sample`]; and the
/// error frames.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// A std mutex: held for one push.
    samples: Mutex<Vec<Sample>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Recorder {
    fn record(&self, sample: Sample) {
        if let Ok(mut s) = self.samples.lock() {
            s.push(sample);
        }
    }

    fn error(&self, frame: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| frame.chars().take(300).collect());
        }
    }

    fn take(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Connected, paired users of one system.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) name: &'static str,
    /// Per user, the JSON prefix of its send frames up to `"req_id":`, and
    /// what follows the req_id up to the text marker.
    frames: Vec<(String, String)>,
    /// Per sender task, its users' writing halves (user `u` at
    /// `[u % SENDERS][u / SENDERS]`).
    sinks: Vec<Vec<SplitSink<Ws, Message>>>,
    recorder: Arc<Recorder>,
    readers: Vec<JoinHandle<()>>,
    clock: Clock,
    /// Steps run so far: part of every `client_msg_id`, so that no step
    /// repeats an id of an earlier one (the node would answer it as a
    /// retry, storing and delivering nothing).
    steps: u64,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Fleet {
    /// A fleet of `users` connections (in user order) whose partners'
    /// conversations are `conversations[u / 2]`.
    pub(crate) fn new(
        name: &'static str,
        users: Vec<Ws>,
        conversations: &[String],
        clock: Clock,
    ) -> Fleet {
        let n = users.len();
        let recorder = Arc::new(Recorder::default());
        let mut sinks: Vec<Vec<SplitSink<Ws, Message>>> =
            (0..SENDERS).map(|_| Vec::new()).collect();
        let mut readers = Vec::with_capacity(n);
        let mut frames = Vec::with_capacity(n);
        for (u, ws) in users.into_iter().enumerate() {
            let (sink, stream) = ws.split();
            sinks[u % SENDERS].push(sink);
            readers.push(tokio::spawn(read(
                stream,
                u as u64,
                recorder.clone(),
                clock,
            )));
            let conv = &conversations[u / 2];
            frames.push((
                "{\"type\":\"send\",\"req_id\":".to_owned(),
                format!(",\"conversation_id\":\"{conv}\",\"content\":{{\"text\":\"{MARKER}"),
            ));
        }
        Fleet {
            name,
            frames,
            sinks,
            recorder,
            readers,
            clock,
            steps: 0,
        }
    }

    /// Users in the fleet.
    pub(crate) fn users(&self) -> usize {
        self.frames.len()
    }

    /// Offers `rate` messages/s for `warmup + window`, then waits `drain`
    /// for the last ones; the window's figures. `pids` are the system's two
    /// server processes, whose CPU is measured with the machine's.
    pub(crate) async fn step(
        &mut self,
        rate: f64,
        warmup: Duration,
        window: Duration,
        drain: Duration,
        pids: [u32; 2],
    ) -> Result<StepRun> {
        let n = self.users();
        let t0 = Instant::now() + Duration::from_millis(50);
        let (w0, w1) = (t0 + warmup, t0 + warmup + window);
        let total = ((warmup + window).as_secs_f64() * rate) as u64;
        let frames = Arc::new(self.frames.clone());
        let mut tasks = JoinSet::new();
        let plan = Schedule {
            step: self.steps,
            users: n,
            rate,
            total,
            t0,
            clock: self.clock,
        };
        self.steps += 1;
        // CPU over the measured window alone, the processes' and the
        // machine's over the same span: the warm-up and the drain would
        // dilute it.
        let cpu = tokio::spawn(async move {
            let processes = || {
                [
                    cpu_seconds(&[pids[0]]),
                    cpu_seconds(&[pids[1]]),
                    own_cpu_seconds(),
                ]
            };
            sleep_until(w0).await;
            let (start, machine) = (processes(), MachineTicks::now());
            sleep_until(w1).await;
            let (end, secs) = (processes(), (w1 - w0).as_secs_f64());
            let cores: [f64; 3] = std::array::from_fn(|i| (end[i] - start[i]) / secs);
            (cores, MachineTicks::now().shares_since(&machine))
        });
        for (k, sinks) in std::mem::take(&mut self.sinks).into_iter().enumerate() {
            let frames = frames.clone();
            tasks.spawn(async move { send(k, sinks, frames, plan).await });
        }
        let mut lags_us = Vec::new();
        let mut send_failures = 0u64;
        let mut slots: Vec<(usize, Vec<SplitSink<Ws, Message>>)> = Vec::with_capacity(SENDERS);
        while let Some(joined) = tasks.join_next().await {
            let (k, sinks, lags, failures) = joined.map_err(|e| anyhow!("a sender failed: {e}"))?;
            slots.push((k, sinks));
            lags_us.extend(lags);
            send_failures += failures;
        }
        slots.sort_by_key(|(k, _)| *k);
        self.sinks = slots.into_iter().map(|(_, s)| s).collect();
        sleep_until(w1.max(Instant::now()) + drain).await;
        let samples = self.recorder.take();
        // A system that fell behind is still delivering: wait until it is
        // done, so the next step starts from an idle system.
        let mut late = 0;
        let quiet_by = Instant::now() + MAX_QUIESCE;
        while Instant::now() < quiet_by {
            tokio::time::sleep(QUIET).await;
            let more = self.recorder.take().len();
            if more == 0 {
                break;
            }
            late += more as u64;
        }
        let (w0, w1, t0) = (self.clock.us(w0), self.clock.us(w1), self.clock.us(t0));
        let in_window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.scheduled >= w0 && s.scheduled < w1)
            .collect();
        let mut latencies_us: Vec<f64> = in_window.iter().map(|s| s.latency() as f64).collect();
        let mut after_stamp_us: Vec<f64> = in_window
            .iter()
            .filter_map(|s| s.after_stamp())
            .map(|a| a as f64)
            .collect();
        let slow: Vec<&Sample> = in_window
            .iter()
            .filter(|s| s.latency() as f64 >= GOAL_P99_US)
            .copied()
            .collect();
        // An over-goal message waited mostly after the stamp when that part
        // is at least half of its latency.
        let slow_after_stamp = slow
            .iter()
            .filter(|s| s.after_stamp().is_some_and(|a| 2 * a >= s.latency()))
            .count() as u64;
        // The disk's stalls while the window's messages were in flight, and
        // the over-goal messages in flight during one (module `probe`).
        let last = in_window.iter().map(|s| s.received).max().unwrap_or(w1);
        let stalls = crate::probe::stalls(w0, last.max(w1));
        let slow_in_disk_stall = slow
            .iter()
            .filter(|s| {
                stalls
                    .iter()
                    .any(|&(a, b)| s.scheduled < b && s.received > a)
            })
            .count() as u64;
        let window_stalls: Vec<u64> = stalls
            .iter()
            .filter(|&&(a, b)| a < w1 && b > w0)
            .map(|&(a, b)| b - a)
            .collect();
        let timeline = Timeline::of(&samples, w0, w1, self.clock.unix_us(w0));
        let tail = Tail::of(&timeline);
        let received_in_window = samples
            .iter()
            .filter(|s| s.received >= w0 && s.received < w1)
            .count();
        let scheduled_in_window = (0..total)
            .filter(|i| {
                let s = t0 + (*i as f64 * 1e6 / rate) as u64;
                s >= w0 && s < w1
            })
            .count() as u64;
        let secs = window.as_secs_f64();
        let delivered = latencies_us.len() as u64;
        let ([node, gateway, bench], (machine_busy, machine_steal)) = cpu
            .await
            .map_err(|e| anyhow!("the CPU sampler failed: {e}"))?;
        Ok(StepRun {
            offered: rate,
            delivered_per_s: received_in_window as f64 / secs,
            p50_us: quantile(&mut latencies_us, 0.5).unwrap_or(f64::NAN),
            p99_us: quantile(&mut latencies_us, 0.99).unwrap_or(f64::NAN),
            max_us: latencies_us.last().copied().unwrap_or(f64::NAN),
            after_stamp_p99_us: quantile(&mut after_stamp_us, 0.99),
            slow_after_stamp,
            disk_stalls: window_stalls.len() as u64,
            disk_stall_max_us: window_stalls.iter().max().copied(),
            slow_in_disk_stall,
            scheduled: scheduled_in_window,
            delivered,
            errors: self.recorder.errors.swap(0, Ordering::Relaxed),
            first_error: self
                .recorder
                .first_error
                .lock()
                .ok()
                .and_then(|mut f| f.take()),
            send_failures,
            send_lag_p99_us: quantile(&mut lags_us, 0.99).unwrap_or(f64::NAN),
            late,
            node_cores: node,
            gateway_cores: gateway,
            bench_cores: bench,
            machine_busy,
            machine_steal,
            tail,
            timeline,
        })
    }
}

/// One step's figures (for one system at one offered rate).
#[derive(Clone, Debug)]
pub(crate) struct StepRun {
    /// Messages per second offered.
    pub(crate) offered: f64,
    /// Messages received by partners inside the window, per second of it.
    pub(crate) delivered_per_s: f64,
    /// Latency, scheduled send → partner's frame, of the messages scheduled
    /// in the window.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// The p99 of the part of the latency after the leader stamped the
    /// message's entry ([`Sample`]); `None` without a node.
    pub(crate) after_stamp_p99_us: Option<f64>,
    /// Of the messages at or over the goal, those that spent at least half
    /// of their latency after the stamp.
    pub(crate) slow_after_stamp: u64,
    /// The disk probe's stalls (fdatasyncs at or over the goal) that began
    /// or ended in the window, and the longest of them.
    pub(crate) disk_stalls: u64,
    pub(crate) disk_stall_max_us: Option<u64>,
    /// Of the messages at or over the goal, those in flight (between their
    /// scheduled send and their delivery) while the probe saw a stall.
    pub(crate) slow_in_disk_stall: u64,
    /// Messages scheduled in the window, and of them delivered (by the end
    /// of the drain).
    pub(crate) scheduled: u64,
    pub(crate) delivered: u64,
    /// Error frames received (e.g. rate limits), and sends that failed.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) send_failures: u64,
    /// How late the generator itself put messages on the wire (p99): a
    /// large value means the generator, not the system, fell behind.
    pub(crate) send_lag_p99_us: f64,
    /// Messages delivered after the drain, while waiting for the system to
    /// go quiet (not counted as delivered).
    pub(crate) late: u64,
    /// Cores kept busy over the measured window by the node, the gateway,
    /// and this process (the generator, and the relay's threads).
    pub(crate) node_cores: f64,
    pub(crate) gateway_cores: f64,
    pub(crate) bench_cores: f64,
    /// The share of all the machine's cores busy over the measured window
    /// (every process and the kernel's own work), and of them taken by the
    /// hypervisor: near 1, the step was capped by the cores.
    pub(crate) machine_busy: f64,
    pub(crate) machine_steal: f64,
    /// Where in the window the messages slower than the goal were sent.
    pub(crate) tail: Tail,
    /// The window's latency by 20-ms slot of scheduled time, for
    /// `--timeline`.
    pub(crate) timeline: Timeline,
}

/// The length of the slots [`Tail`] counts.
pub(crate) const TAIL_SLOT_US: u64 = 100_000;

/// Whether a window's slow messages came in bursts or throughout: the
/// messages scheduled in the window whose latency reached the goal
/// ([`GOAL_P99_US`]), and how many of the window's 100-ms slots (by
/// scheduled time) held any. A pause of the node makes a few slots hold
/// them all; a system short of CPU spreads them over many.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tail {
    pub(crate) slow: u64,
    pub(crate) slow_slots: u64,
    pub(crate) slots: u64,
    /// The most slow messages in one slot.
    pub(crate) worst_slot: u64,
}

impl Tail {
    /// From a window's [`Timeline`]: its slots taken [`TAIL_SLOT_US`] at a
    /// time.
    fn of(t: &Timeline) -> Tail {
        let per_slot: Vec<u64> = t
            .slots
            .chunks((TAIL_SLOT_US / TIMELINE_SLOT_US) as usize)
            .map(|c| c.iter().map(|slot| slot.over).sum())
            .collect();
        Tail {
            slow: per_slot.iter().sum(),
            slow_slots: per_slot.iter().filter(|n| **n > 0).count() as u64,
            slots: per_slot.len() as u64,
            worst_slot: per_slot.iter().copied().max().unwrap_or(0),
        }
    }
}

/// The length of the slots [`Timeline`] describes; [`TAIL_SLOT_US`] is a
/// whole number of them.
pub(crate) const TIMELINE_SLOT_US: u64 = 20_000;

/// A window's latency slot by slot ([`TIMELINE_SLOT_US`] of scheduled
/// time each), placed on the wall clock so that it can be read beside the
/// node's logs and metrics: where a pause happened, and how long it held
/// messages.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    /// The wall-clock time (Unix, µs) the window's first slot starts at.
    pub(crate) start_unix_us: u64,
    pub(crate) slots: Vec<Slot>,
}

/// One slot of a [`Timeline`]: the messages scheduled in it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slot {
    /// How many arrived.
    pub(crate) arrived: u64,
    /// The slowest one's latency (µs).
    pub(crate) max_us: u64,
    /// How many reached the goal ([`GOAL_P99_US`]).
    pub(crate) over: u64,
    /// The longest part of a latency after the leader's stamp (µs), when
    /// the messages carry one.
    pub(crate) max_after_stamp_us: Option<u64>,
}

impl Timeline {
    /// Over the samples scheduled in `[w0, w1)`; `w0` is `start_unix_us`
    /// on the wall clock.
    fn of(samples: &[Sample], w0: u64, w1: u64, start_unix_us: u64) -> Timeline {
        let mut slots =
            vec![Slot::default(); w1.saturating_sub(w0).div_ceil(TIMELINE_SLOT_US) as usize];
        for s in samples {
            if s.scheduled >= w0 && s.scheduled < w1 {
                let latency = s.latency();
                let slot = &mut slots[((s.scheduled - w0) / TIMELINE_SLOT_US) as usize];
                slot.arrived += 1;
                slot.max_us = slot.max_us.max(latency);
                slot.over += u64::from(latency as f64 >= GOAL_P99_US);
                // `None` sorts below any stamp.
                slot.max_after_stamp_us = slot.max_after_stamp_us.max(s.after_stamp());
            }
        }
        Timeline {
            start_unix_us,
            slots,
        }
    }
}

/// A step counts as sustained when the partners received at least this
/// share of the offered rate...
pub(crate) const SUSTAINED_SHARE: f64 = 0.95;
/// ...every message scheduled in the window arrived but this share...
pub(crate) const MAX_LOST_SHARE: f64 = 0.01;
/// ...and the p99 latency stayed under this.
pub(crate) const SUSTAINED_P99_US: f64 = 100_000.0;

impl StepRun {
    /// See [`SUSTAINED_SHARE`].
    pub(crate) fn sustained(&self) -> bool {
        let lost =
            self.scheduled.saturating_sub(self.delivered) as f64 / self.scheduled.max(1) as f64;
        self.delivered_per_s >= SUSTAINED_SHARE * self.offered
            && lost <= MAX_LOST_SHARE
            && self.p99_us < SUSTAINED_P99_US
    }
}

/// What the senders of one step send.
#[derive(Clone, Copy)]
struct Schedule {
    /// The step's number.
    step: u64,
    /// Users in the fleet.
    users: usize,
    /// Messages per second, `total` of them, the first at `t0`.
    rate: f64,
    total: u64,
    t0: Instant,
    clock: Clock,
}

/// Sender task `k`: messages `k, k + SENDERS, …` below `total`, each at its
/// scheduled time, from user `i mod users`. Gives back its sinks, the lag
/// of each send behind its schedule, and the failed sends.
async fn send(
    k: usize,
    mut sinks: Vec<SplitSink<Ws, Message>>,
    frames: Arc<Vec<(String, String)>>,
    s: Schedule,
) -> (usize, Vec<SplitSink<Ws, Message>>, Vec<f64>, u64) {
    let Schedule {
        step,
        users: n,
        rate,
        total,
        t0,
        clock,
    } = s;
    let mut lags = Vec::with_capacity((total as usize / SENDERS) + 1);
    let mut failures = 0;
    let mut i = k as u64;
    while i < total {
        let at = t0 + Duration::from_secs_f64(i as f64 / rate);
        sleep_until(at).await;
        let user = (i % n as u64) as usize;
        let (head, middle) = &frames[user];
        let frame = format!(
            "{head}{i}{middle}{}:{user}\"}},\"client_msg_id\":\"m{step}-{i}\"}}",
            clock.us(at)
        );
        let sink = &mut sinks[user / SENDERS];
        lags.push(Instant::now().saturating_duration_since(at).as_secs_f64() * 1e6);
        if sink.send(Message::text(frame)).await.is_err() {
            failures += 1;
        }
        i += SENDERS as u64;
    }
    (k, sinks, lags, failures)
}

/// User `me`'s reader: records each benchmark message from its partner;
/// counts error frames.
async fn read(mut stream: SplitStream<Ws>, me: u64, recorder: Arc<Recorder>, clock: Clock) {
    while let Some(Ok(m)) = stream.next().await {
        let Message::Text(t) = m else { continue };
        let t = t.as_str();
        if let Some((scheduled, sender)) = marker(t) {
            if sender != me {
                let received = clock.now_us();
                let stamped = stamp_ms(t).map(|ms| clock.us_of_unix_ms(ms));
                recorder.record(Sample {
                    scheduled,
                    received,
                    stamped,
                });
            }
        } else if t.contains("\"type\":\"error\"") {
            recorder.error(t);
        }
    }
}

/// The scheduled time and sender of a benchmark message in `frame`.
fn marker(frame: &str) -> Option<(u64, u64)> {
    let rest = &frame[frame.find(MARKER)? + MARKER.len()..];
    let (scheduled, rest) = rest.split_once(':')?;
    Some((scheduled.parse().ok()?, leading_number(rest)?))
}

/// The leader's stamp of the event in `frame`: its `timestamp_ms` (Unix
/// ms). The event frame's first `timestamp_ms` is the event's own
/// (docs/protocol.md, "event").
fn stamp_ms(frame: &str) -> Option<u64> {
    const KEY: &str = "\"timestamp_ms\":";
    leading_number(&frame[frame.find(KEY)? + KEY.len()..])
}

/// The decimal number `s` starts with.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_in_a_frame_and_in_an_event() {
        let frame = "{\"type\":\"send\",\"req_id\":7,\"conversation_id\":\"d-1\",\"content\":{\"text\":\"wsb:123:45\"},\"client_msg_id\":\"m7\"}";
        assert_eq!(marker(frame), Some((123, 45)));
        let event = "{\"event\":{\"message_sent\":{\"content\":{\"text\":\"wsb:9:0\"}}},\"type\":\"event\"}";
        assert_eq!(marker(event), Some((9, 0)));
        assert_eq!(marker("{\"type\":\"result\"}"), None);
    }

    #[test]
    fn the_stamp_is_the_events_timestamp() {
        let event = "{\"type\":\"event\",\"event\":{\"conversation_id\":\"d-1\",\"seq\":3,\"timestamp_ms\":1712345678901,\"message_sent\":{\"sent_ms\":1712345678901}}}";
        assert_eq!(stamp_ms(event), Some(1_712_345_678_901));
        assert_eq!(
            stamp_ms("{\"type\":\"send\",\"content\":{\"text\":\"wsb:1:2\"}}"),
            None
        );
    }
}
