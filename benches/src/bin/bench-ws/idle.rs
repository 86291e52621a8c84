//! Idle connections: N authenticated, then subscribed, WebSockets held open
//! to one gateway, and the gateway's resident memory before and after.
//!
//! Every connection is a task that opens, authenticates (one node call
//! each, so at most [`OPENING`] at once), then waits, reading — so the
//! gateway's pings are answered and nothing times out — until it is told
//! to subscribe, and after that until it is told to close. Connections that
//! end on their own are counted: "held" is what is open when memory is
//! read.
//!
//! One process holds at most its open-file limit less 1,000 sockets
//! ([`processes`]), on either side of a connection. Past that:
//!
//! - the gateway is started with as many worker processes
//!   (`missive gateway --workers W`, sharing its port), and its memory is
//!   theirs and its own, summed ([`Missive::gateway_rss`]);
//! - the clients are spread over as many holder processes: this
//!   executable run with [`HOLD_FLAG`], each opening its share of the
//!   users (`idle{i:06}` for a range of i; connection i's source address
//!   is picked from i, as in one process), minting their tokens with the
//!   secret it is given in [`SECRET_ENV`] (not on its command line), and
//!   answering commands on stdin — `report` (its counts, one JSON line on
//!   stdout), `subscribe`, `close` — until `close` or the end of stdin.
//!   The benchmark reads memory between the steps as with one process.
//!
//! Below that, the benchmark's own process holds every client: the same
//! [`Share`] of connections, in process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use missive_api::Auth;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::servers::{Layout, Missive, rss_kib};

/// Connections being opened and authenticated at once (over all holder
/// processes).
const OPENING: usize = 256;

/// Subscriptions being opened at once (over all holder processes).
const SUBSCRIBING: usize = 256;

/// tungstenite's read buffer per idle client: frames here are small.
const CLIENT_READ_BUFFER: usize = 512;

/// How long the gateway is left to settle (its frees to reach the
/// allocator, the last tasks to park) before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// The argument that makes the benchmark's executable a holder process.
pub(crate) const HOLD_FLAG: &str = "--hold-idle";

/// The environment variable a holder process reads the token secret from.
const SECRET_ENV: &str = "BENCH_WS_IDLE_JWT_SECRET";

/// How long a holder process may take to close its connections and exit.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes `n` connections need on each side, at most `room` (the
/// open-file limit less the spare) in each.
pub(crate) fn processes(n: usize, room: usize) -> usize {
    n.div_ceil(room.max(1)).max(1)
}

/// The node and the separate gateway for `n` idle connections, in `dir`:
/// a gateway of as many worker processes as [`processes`] says.
pub(crate) fn start(
    binary: &Path,
    dir: &Path,
    secret: &str,
    n: usize,
    room: usize,
) -> Result<Missive> {
    let workers = processes(n, room);
    // Several workers: each may take as many as its open files allow (the
    // kernel spreads the port's connections over them by a hash, not in
    // equal counts), so the gateway's cap, split evenly, is theirs.
    let max_connections = if workers == 1 {
        n + 100
    } else {
        workers * room
    };
    Missive::start(
        binary,
        dir,
        secret,
        max_connections,
        Layout::Separate { workers },
        None,
    )
}

/// What the idle phase measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct IdleRun {
    /// Connections asked for.
    pub(crate) target: usize,
    /// The gateway's worker processes (1: one process, no `--workers`),
    pub(crate) gateway_workers: usize,
    /// and the processes its memory is summed over (with workers, theirs
    /// and their parent's).
    pub(crate) gateway_processes: usize,
    /// Child processes of the benchmark that held the clients (0: the
    /// benchmark's own process held them).
    pub(crate) client_holders: usize,
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
    /// The clients' processes' RSS then, summed, KiB.
    pub(crate) client_rss_subscribed_kib: u64,
    /// The machine's MemAvailable then, KiB.
    pub(crate) mem_available_subscribed_kib: u64,
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

    /// The processes on each side, in words.
    pub(crate) fn processes_in_words(&self) -> String {
        let gateway = if self.gateway_workers > 1 {
            format!(
                "one gateway of {} worker processes (its memory summed over them and their parent)",
                self.gateway_workers
            )
        } else {
            "one gateway process".to_owned()
        };
        let clients = if self.client_holders > 0 {
            format!(
                "the clients in {} holder processes of the benchmark",
                self.client_holders
            )
        } else {
            "the clients in the benchmark's own process".to_owned()
        };
        format!("{gateway}; {clients}")
    }
}

fn per(after: u64, before: u64, n: u64) -> f64 {
    after.saturating_sub(before) as f64 / n.max(1) as f64
}

/// Counts shared by every connection task of a [`Share`].
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

/// [`Counts`] read at one moment, added up over holders, and passed from
/// a holder process to the benchmark as a JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Tally {
    authenticated: u64,
    open: u64,
    subscribed_open: u64,
    settled: u64,
    failures: u64,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.authenticated += t.authenticated;
        self.open += t.open;
        self.subscribed_open += t.subscribed_open;
        self.settled += t.settled;
        self.failures += t.failures;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
    }
}

/// Phase of every connection, moved forward by the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
enum Step {
    Hold,
    Subscribe,
    Close,
}

impl Step {
    /// The command that moves a holder process to this step.
    fn command(self) -> Option<&'static str> {
        match self {
            Step::Hold => None,
            Step::Subscribe => Some("subscribe"),
            Step::Close => Some("close"),
        }
    }
}

/// Connections of one process: a task each, moved through the steps
/// together.
#[derive(Debug)]
struct Share {
    counts: Arc<Counts>,
    step: watch::Sender<Step>,
    tasks: JoinSet<()>,
}

impl Share {
    /// Starts connection i for each i of `users` (user `idle{i:06}`, its
    /// token minted with `auth`) to `server`: at most `opening` being opened
    /// at once, and, once told, `subscribing` subscribed at once.
    fn open(
        server: SocketAddr,
        auth: &Auth,
        users: Range<usize>,
        opening: usize,
        subscribing: usize,
    ) -> Result<Share> {
        let counts = Arc::new(Counts::default());
        let (step, step_rx) = watch::channel(Step::Hold);
        let opening = Arc::new(Semaphore::new(opening));
        let subscribing = Arc::new(Semaphore::new(subscribing));
        let mut tasks = JoinSet::new();
        for i in users {
            let token = auth
                .mint(&format!("idle{i:06}"), None, 24 * 3600)
                .map_err(|e| anyhow!("minting a token: {e}"))?;
            let (counts, step, opening, subscribing) = (
                counts.clone(),
                step_rx.clone(),
                opening.clone(),
                subscribing.clone(),
            );
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
        Ok(Share {
            counts,
            step,
            tasks,
        })
    }

    async fn tally(&self) -> Tally {
        let c = &self.counts;
        Tally {
            authenticated: c.authenticated.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            subscribed_open: c.subscribed_open.load(Ordering::Relaxed),
            settled: c.settled.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            first_error: c.first_error.lock().await.clone(),
        }
    }

    fn advance(&self, step: Step) {
        self.step.send_replace(step);
    }

    /// Closes every connection; returns once all have ended.
    async fn close(mut self) {
        self.advance(Step::Close);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A holder process: the benchmark's executable run with [`HOLD_FLAG`],
/// holding a [`Share`] of its own. Dropping this kills it.
#[derive(Debug)]
struct HolderProcess {
    child: Child,
    stdin: ChildStdin,
    /// Its stdout's lines, read on a thread of their own.
    lines: mpsc::UnboundedReceiver<String>,
}

impl HolderProcess {
    /// Starts a holder process for connections `users` to `server`.
    ///
    /// Called on the thread that runs the phase (the main thread, in
    /// `block_on`): the process's parent-death signal is tied to the
    /// thread that started it.
    fn spawn(
        server: SocketAddr,
        secret: &str,
        users: Range<usize>,
        opening: usize,
        subscribing: usize,
    ) -> Result<HolderProcess> {
        let exe = std::env::current_exe().context("finding the benchmark's executable")?;
        let mut child = Command::new(exe)
            .arg(HOLD_FLAG)
            .arg(server.to_string())
            .arg(users.start.to_string())
            .arg(users.end.to_string())
            .arg(opening.to_string())
            .arg(subscribing.to_string())
            .env(SECRET_ENV, secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a holder process")?;
        let stdin = child.stdin.take().context("a holder process's stdin")?;
        let stdout = child.stdout.take().context("a holder process's stdout")?;
        Ok(HolderProcess {
            child,
            stdin,
            lines: lines_of(stdout),
        })
    }

    fn command(&mut self, command: &str) -> Result<()> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("telling holder process {} to {command}", self.child.id()))
    }

    async fn tally(&mut self) -> Result<Tally> {
        self.command("report")?;
        match self.lines.recv().await {
            Some(line) => serde_json::from_str(&line)
                .with_context(|| format!("a holder process said {line:?}, not its counts")),
            None => bail!(
                "holder process {} ended ({:?})",
                self.child.id(),
                self.child.try_wait()
            ),
        }
    }

    /// Waits for the process, told to close, to exit.
    async fn finish(&mut self) -> Result<()> {
        let id = self.child.id();
        tokio::time::timeout(FINISH_TIMEOUT, async {
            // Its stdout ends when it exits.
            while self.lines.recv().await.is_some() {}
        })
        .await
        .map_err(|_| anyhow!("holder process {id} did not exit within {FINISH_TIMEOUT:?}"))?;
        let status = self.child.wait().context("waiting for a holder process")?;
        if !status.success() {
            bail!("holder process {id} exited with {status}");
        }
        Ok(())
    }
}

impl Drop for HolderProcess {
    fn drop(&mut self) {
        // Already exited after `finish`; then both calls are harmless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whoever holds a share of the clients: the benchmark's own process, or
/// a holder process.
#[derive(Debug)]
enum Holder {
    Local(Share),
    Process(HolderProcess),
}

impl Holder {
    async fn tally(&mut self) -> Result<Tally> {
        match self {
            Holder::Local(s) => Ok(s.tally().await),
            Holder::Process(p) => p.tally().await,
        }
    }

    fn advance(&mut self, step: Step) -> Result<()> {
        match self {
            Holder::Local(s) => s.advance(step),
            Holder::Process(p) => {
                if let Some(c) = step.command() {
                    p.command(c)?;
                }
            }
        }
        Ok(())
    }

    /// Closes every connection (once told to) and waits until they are.
    async fn finish(self) -> Result<()> {
        match self {
            Holder::Local(s) => {
                s.close().await;
                Ok(())
            }
            Holder::Process(mut p) => p.finish().await,
        }
    }

    /// The process whose memory holds these clients.
    fn pid(&self) -> u32 {
        match self {
            Holder::Local(_) => std::process::id(),
            Holder::Process(p) => p.child.id(),
        }
    }
}

/// Every holder's counts, added up.
async fn tally(holders: &mut [Holder]) -> Result<Tally> {
    let mut sum = Tally::default();
    for h in holders {
        sum.add(h.tally().await?);
    }
    Ok(sum)
}

/// Opens `n` connections to `missive`'s gateway (started by [`start`]),
/// reads its memory, has every connection subscribe, reads it again, then
/// closes them all. Tokens are signed with `secret`; each process holds at
/// most `room` clients.
pub(crate) async fn run(
    missive: &mut Missive,
    secret: &str,
    n: usize,
    room: usize,
) -> Result<IdleRun> {
    let gateway_workers = missive.gateway_workers();
    if gateway_workers > 1 {
        missive.await_workers()?;
        // Every worker to finish starting (and listen) before its memory
        // is read and connections are spread over them.
        tokio::time::sleep(SETTLE).await;
    }
    let before = missive.gateway_rss()?;
    let holders_wanted = processes(n, room);
    let mut run = IdleRun {
        target: n,
        gateway_workers,
        gateway_processes: before.processes,
        client_holders: if holders_wanted > 1 {
            holders_wanted
        } else {
            0
        },
        rss_before_kib: before.kib,
        ..IdleRun::default()
    };
    eprintln!("idle: {n} connections; {}", run.processes_in_words());
    let started = Instant::now();
    let mut holders = Vec::with_capacity(holders_wanted);
    if holders_wanted == 1 {
        let auth = Auth::hs256(secret.as_bytes()).map_err(|e| anyhow!("the token secret: {e}"))?;
        holders.push(Holder::Local(Share::open(
            missive.gateway,
            &auth,
            0..n,
            OPENING,
            SUBSCRIBING,
        )?));
    } else {
        for k in 0..holders_wanted {
            let users = k * n / holders_wanted..(k + 1) * n / holders_wanted;
            holders.push(Holder::Process(HolderProcess::spawn(
                missive.gateway,
                secret,
                users,
                OPENING.div_ceil(holders_wanted),
                SUBSCRIBING.div_ceil(holders_wanted),
            )?));
        }
    }
    let done = |t: &Tally| t.authenticated + t.failures;
    wait_for(missive, &mut holders, "authenticated", n as u64, done).await?;
    run.open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss = missive.gateway_rss()?;
    let t = tally(&mut holders).await?;
    run.rss_authenticated_kib = rss.kib;
    run.held_authenticated = t.open;
    eprintln!(
        "idle: {} connections authenticated in {:.1} s; gateway RSS {} → {} KiB ({})",
        run.held_authenticated,
        run.open_secs,
        run.rss_before_kib,
        rss.kib,
        count_processes(rss.processes)
    );
    let started = Instant::now();
    for h in &mut holders {
        h.advance(Step::Subscribe)?;
    }
    wait_for(missive, &mut holders, "subscribed", t.authenticated, |t| {
        t.settled
    })
    .await?;
    run.subscribe_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss = missive.gateway_rss()?;
    run.rss_subscribed_kib = rss.kib;
    run.node_rss_subscribed_kib = rss_kib(missive.node_pid())?;
    for h in &holders {
        run.client_rss_subscribed_kib += rss_kib(h.pid())?;
    }
    run.mem_available_subscribed_kib = mem_available_kib()?;
    let t = tally(&mut holders).await?;
    run.held_subscribed = t.subscribed_open;
    eprintln!(
        "idle: {} connections subscribed in {:.1} s; gateway RSS {} KiB ({}); \
         node RSS {} KiB; clients' RSS {} KiB; machine's MemAvailable {} KiB",
        run.held_subscribed,
        run.subscribe_secs,
        run.rss_subscribed_kib,
        count_processes(rss.processes),
        run.node_rss_subscribed_kib,
        run.client_rss_subscribed_kib,
        run.mem_available_subscribed_kib
    );
    for h in &mut holders {
        h.advance(Step::Close)?;
    }
    for h in holders {
        h.finish().await?;
    }
    // Every connection had opened by then: no failure comes after.
    run.failures = t.failures;
    run.first_error = t.first_error;
    Ok(run)
}

/// A holder process's life (the executable run with [`HOLD_FLAG`] and
/// `SERVER FIRST END OPENING SUBSCRIBING`): holds connections FIRST..END
/// to SERVER as [`Share::open`] says, answering the benchmark's commands
/// on stdin, until `close` or the end of stdin.
pub(crate) fn hold_process() -> Result<()> {
    // Killed if the benchmark dies; should it die before this line, the
    // end of stdin stops this process too.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("asking to be killed with the benchmark")?;
    // The open-file limits are the benchmark's, raised before it started
    // this process: inherited.
    let usage = || format!("usage: bench-ws {HOLD_FLAG} SERVER FIRST END OPENING SUBSCRIBING");
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [server, first, end, opening, subscribing] = args.as_slice() else {
        bail!("{}", usage());
    };
    let server: SocketAddr = server.parse().with_context(usage)?;
    let count = |s: &String| s.parse::<usize>().with_context(usage);
    let (first, end) = (count(first)?, count(end)?);
    let (opening, subscribing) = (count(opening)?, count(subscribing)?);
    let secret = std::env::var(SECRET_ENV).with_context(|| format!("{SECRET_ENV} is not set"))?;
    let auth = Auth::hs256(secret.as_bytes()).map_err(|e| anyhow!("the token secret: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the holder's runtime")?;
    rt.block_on(async {
        let mut commands = lines_of(std::io::stdin());
        let share = Share::open(server, &auth, first..end, opening, subscribing)?;
        let mut out = std::io::stdout();
        while let Some(command) = commands.recv().await {
            match command.trim() {
                "report" => {
                    writeln!(out, "{}", serde_json::to_string(&share.tally().await)?)?;
                    out.flush()?;
                }
                "subscribe" => share.advance(Step::Subscribe),
                "close" => break,
                other => bail!("unknown command {other:?}"),
            }
        }
        share.close().await;
        Ok(())
    })
}

/// The lines of `input`, read on a thread of their own (a blocking read);
/// the channel closes at the end of the input.
fn lines_of(input: impl Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(input).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// "1 process", "3 processes".
fn count_processes(n: usize) -> String {
    format!("{n} process{}", if n == 1 { "" } else { "es" })
}

/// The machine's MemAvailable (`/proc/meminfo`), KiB.
fn mem_available_kib() -> Result<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .context("reading /proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemAvailable in /proc/meminfo")
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

/// Waits until `count` of every holder's counts, added up, reaches `n`,
/// printing progress; fails if the gateway, the node or a holder process
/// exits.
async fn wait_for(
    missive: &mut Missive,
    holders: &mut [Holder],
    what: &str,
    n: u64,
    count: impl Fn(&Tally) -> u64,
) -> Result<()> {
    let mut last_print = Instant::now();
    loop {
        let now = count(&tally(holders).await?);
        if now >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        missive.check_alive()?;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("idle: {now} of {n} {what}");
        }
    }
}
