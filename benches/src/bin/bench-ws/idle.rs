//! Idle connections: N authenticated, then subscribed, WebSockets held open
//! to one gateway, and the gateway's resident memory before and after.
//!
//! Every connection is a task that opens, authenticates (one node call
//! each, so at most [`OPENING`] at once), then waits, reading — so the
//! gateway's pings are answered and nothing times out — until it is told
//! to subscribe, and after that until it is told to close. Connections that
//! end on their own are counted: "held" is what is open when memory is
//! read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use missive_api::Auth;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::servers::{Missive, rss_kib};

/// Connections being opened and authenticated at once.
const OPENING: usize = 256;

/// Subscriptions being opened at once.
const SUBSCRIBING: usize = 256;

/// tungstenite's read buffer per idle client: frames here are small.
const CLIENT_READ_BUFFER: usize = 512;

/// How long the gateway is left to settle (its frees to reach the
/// allocator, the last tasks to park) before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// What the idle phase measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct IdleRun {
    /// Connections asked for.
    pub(crate) target: usize,
    /// Gateway RSS before any connection, KiB.
    pub(crate) rss_before_kib: u64,
    /// Connections open and authenticated when memory was read, and the RSS.
    pub(crate) held_authenticated: u64,
    pub(crate) rss_authenticated_kib: u64,
    /// Connections open and subscribed when memory was read, and the RSS.
    pub(crate) held_subscribed: u64,
    pub(crate) rss_subscribed_kib: u64,
    /// The node's RSS with every subscription live, KiB.
    pub(crate) node_rss_subscribed_kib: u64,
    /// Seconds to open and authenticate all, and to subscribe all.
    pub(crate) open_secs: f64,
    pub(crate) subscribe_secs: f64,
    /// Connections that failed to open, authenticate or subscribe.
    pub(crate) failures: u64,
    pub(crate) first_error: Option<String>,
}

impl IdleRun {
    /// Gateway KiB per authenticated connection.
    pub(crate) fn kib_per_authenticated(&self) -> f64 {
        per(
            self.rss_authenticated_kib,
            self.rss_before_kib,
            self.held_authenticated,
        )
    }

    /// Gateway KiB per subscribed connection.
    pub(crate) fn kib_per_subscribed(&self) -> f64 {
        per(
            self.rss_subscribed_kib,
            self.rss_before_kib,
            self.held_subscribed,
        )
    }
}

fn per(after: u64, before: u64, n: u64) -> f64 {
    after.saturating_sub(before) as f64 / n.max(1) as f64
}

/// Counts shared by every connection task.
#[derive(Debug, Default)]
struct Counts {
    /// Connections that authenticated.
    authenticated: AtomicU64,
    /// Of those, the ones open now.
    open: AtomicU64,
    /// Connections open and subscribed now.
    subscribed_open: AtomicU64,
    /// Authenticated connections done with subscribing: subscribed, failed,
    /// or ended before.
    settled: AtomicU64,
    failures: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counts {
    async fn failed(&self, e: anyhow::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .await
            .get_or_insert_with(|| format!("{e:#}"));
    }
}

/// Phase of every connection, moved forward by the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
enum Step {
    Hold,
    Subscribe,
    Close,
}

/// Opens `n` connections to `missive`'s gateway, reads its memory, has
/// every connection subscribe, reads it again, then closes them all.
pub(crate) async fn run(missive: &mut Missive, auth: &Auth, n: usize) -> Result<IdleRun> {
    let pid = missive
        .gateway_pid()
        .context("the idle phase reads a gateway process's memory")?;
    let mut run = IdleRun {
        target: n,
        rss_before_kib: rss_kib(pid)?,
        ..IdleRun::default()
    };
    let counts = Arc::new(Counts::default());
    let (step_tx, step_rx) = watch::channel(Step::Hold);
    let opening = Arc::new(Semaphore::new(OPENING));
    let subscribing = Arc::new(Semaphore::new(SUBSCRIBING));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let token = auth
            .mint(&format!("idle{i:06}"), None, 24 * 3600)
            .map_err(|e| anyhow!("minting a token: {e}"))?;
        let (counts, step, opening, subscribing) = (
            counts.clone(),
            step_rx.clone(),
            opening.clone(),
            subscribing.clone(),
        );
        let server = missive.gateway;
        tasks.spawn(async move {
            let ws = {
                let Ok(_permit) = opening.acquire().await else {
                    return;
                };
                match open(i, server, &token).await {
                    Ok(ws) => ws,
                    Err(e) => return counts.failed(e).await,
                }
            };
            counts.authenticated.fetch_add(1, Ordering::Relaxed);
            counts.open.fetch_add(1, Ordering::Relaxed);
            hold(ws, step, &counts, &subscribing).await;
        });
    }
    let done =
        |c: &Counts| c.authenticated.load(Ordering::Relaxed) + c.failures.load(Ordering::Relaxed);
    wait_for(missive, "authenticated", n as u64, || done(&counts)).await?;
    run.open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    run.rss_authenticated_kib = rss_kib(pid)?;
    run.held_authenticated = counts.open.load(Ordering::Relaxed);
    eprintln!(
        "idle: {} connections authenticated in {:.1} s; gateway RSS {} → {} KiB",
        run.held_authenticated, run.open_secs, run.rss_before_kib, run.rss_authenticated_kib
    );
    let started = Instant::now();
    step_tx.send_replace(Step::Subscribe);
    let authenticated = counts.authenticated.load(Ordering::Relaxed);
    wait_for(missive, "subscribed", authenticated, || {
        counts.settled.load(Ordering::Relaxed)
    })
    .await?;
    run.subscribe_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    run.rss_subscribed_kib = rss_kib(pid)?;
    run.node_rss_subscribed_kib = rss_kib(missive.node_pid())?;
    run.held_subscribed = counts.subscribed_open.load(Ordering::Relaxed);
    eprintln!(
        "idle: {} connections subscribed in {:.1} s; gateway RSS {} KiB",
        run.held_subscribed, run.subscribe_secs, run.rss_subscribed_kib
    );
    step_tx.send_replace(Step::Close);
    while tasks.join_next().await.is_some() {}
    run.failures = counts.failures.load(Ordering::Relaxed);
    run.first_error = counts.first_error.lock().await.clone();
    Ok(run)
}

async fn open(i: usize, server: std::net::SocketAddr, token: &str) -> Result<Ws> {
    let mut ws = client::connect(i, server, "/ws", CLIENT_READ_BUFFER).await?;
    client::auth(&mut ws, token).await?;
    Ok(ws)
}

/// Holds `ws` open, reading, through the steps; subscribes when told.
/// A connection that ends is counted out of `open` (and of
/// `subscribed_open`), so the held counts are what is open now.
async fn hold(
    mut ws: Ws,
    mut step: watch::Receiver<Step>,
    counts: &Counts,
    subscribing: &Semaphore,
) {
    let mut subscribed = false;
    loop {
        let now = *step.borrow_and_update();
        match now {
            Step::Close => return,
            Step::Subscribe if !subscribed => {
                subscribed = true;
                let Ok(_permit) = subscribing.acquire().await else {
                    return;
                };
                let r = client::subscribe(&mut ws).await;
                counts.settled.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(()) => {
                        counts.subscribed_open.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts.open.fetch_sub(1, Ordering::Relaxed);
                        return counts.failed(e).await;
                    }
                }
                continue;
            }
            _ => {}
        }
        tokio::select! {
            changed = step.changed() => if changed.is_err() { return },
            frame = ws.next() => match frame {
                Some(Ok(_)) => {}
                _ => {
                    counts.open.fetch_sub(1, Ordering::Relaxed);
                    if subscribed {
                        counts.subscribed_open.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        counts.settled.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            },
        }
    }
}

/// Waits until `count()` reaches `n`, printing progress; fails if the
/// gateway or the node exits.
async fn wait_for(
    missive: &mut Missive,
    what: &str,
    n: u64,
    count: impl Fn() -> u64,
) -> Result<()> {
    let mut last_print = Instant::now();
    while count() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
        missive.check_alive()?;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("idle: {} of {n} {what}", count());
        }
    }
    Ok(())
}
