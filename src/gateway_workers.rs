//! `missive gateway --workers N`: one gateway of N worker processes.
//!
//! Every WebSocket is a file descriptor, and a process can hold no more than
//! its hard limit of open files, which only a privileged process may raise;
//! containers often fix it at a few tens of thousands. A gateway of several
//! processes holds that many times more. The gateway keeps no chat state, so
//! its workers share nothing but the listening port: each binds it with
//! `SO_REUSEPORT` and the kernel spreads new connections over them by a hash
//! of their addresses. Each worker has its own links to the nodes, its share
//! of the connection cap (the total divided among them, rounded up) and its
//! connections' rate limits, which are per connection anyway.
//!
//! The process an operator starts is the supervisor and holds no
//! connection. It reserves the port (bound, never listening, so no
//! connection waits on it), starts the workers and waits until each listens,
//! restarts a worker that exits (after a pause that doubles while it keeps
//! failing), passes SIGTERM and Ctrl-C on to the workers and waits for their
//! graceful shutdown. On SIGHUP it replaces the workers one at a time, each
//! new one listening before the old one stops, so that a binary upgraded on
//! disk takes over without the port ever closing. A worker whose supervisor
//! dies stops by itself (the parent-death signal), so no worker outlives
//! the gateway.
//!
//! `/metrics`, answered by whichever worker the scrape reaches, covers the
//! whole gateway: the worker asks its siblings for their counters over Unix
//! sockets in a directory of the supervisor's (`worker-<i>-<pid>.sock`, one line
//! each) and adds them up. A worker's socket is also how the supervisor
//! knows it has started: the worker binds it once its port listens.
//!
//! `SO_REUSEPORT` admits any process of the same user to the port: run the
//! gateway as a user of its own.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use missive_gateway::{Gateway, StatsSnapshot};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixStream};
use tokio::time::{sleep, timeout};

/// How long a worker may take from its start to listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause before a failed worker is started again; it doubles with
/// each failure in a row, up to [`MAX_RESTART_PAUSE`].
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(100);
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(10);

/// A worker that ran this long before it exited starts again at once: its
/// exit is not one of a series.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// How often the supervisor looks at its workers.
const POLL: Duration = Duration::from_millis(100);

/// How long a scrape waits for a sibling's counters.
const SIBLING_TIMEOUT: Duration = Duration::from_millis(500);

/// Backlog of each worker's listening socket.
const BACKLOG: u32 = 1024;

/// What a worker is told by its supervisor, on its command line. Hidden:
/// only the supervisor passes them.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// This process is worker INDEX of a gateway.
    #[arg(long = "worker", hide = true, requires_all = ["worker_of", "worker_listen", "worker_dir", "supervisor"])]
    index: Option<u16>,
    /// How many workers the gateway has.
    #[arg(long, hide = true)]
    worker_of: Option<u16>,
    /// The address every worker listens on (its port resolved).
    #[arg(long, hide = true)]
    worker_listen: Option<SocketAddr>,
    /// The supervisor's directory of the workers' counter sockets.
    #[arg(long, hide = true)]
    worker_dir: Option<PathBuf>,
    /// The supervisor's process id.
    #[arg(long, hide = true)]
    supervisor: Option<i32>,
}

/// This process's place in a gateway of several.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    index: u16,
    of: u16,
    listen: SocketAddr,
    dir: PathBuf,
    supervisor: i32,
}

impl WorkerArgs {
    /// The worker this process is, if its supervisor started it.
    pub(crate) fn worker(&self) -> Option<Worker> {
        Some(Worker {
            index: self.index?,
            of: self.worker_of?,
            listen: self.worker_listen?,
            dir: self.worker_dir.clone()?,
            supervisor: self.supervisor?,
        })
    }
}

/// The most workers a gateway has.
const MAX_WORKERS: u16 = 256;

/// How many workers: a count, or `auto`, as many as `--max-connections`
/// needs under the hard limit of open files each process inherits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(u16),
}

impl std::str::FromStr for Workers {
    type Err = String;

    fn from_str(s: &str) -> Result<Workers, String> {
        if s == "auto" {
            return Ok(Workers::Auto);
        }
        match s.parse::<u16>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
            _ => Err(format!("a count from 1 to {MAX_WORKERS}, or auto")),
        }
    }
}

impl std::fmt::Display for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workers::Auto => f.write_str("auto"),
            Workers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The WebSockets one process of `limit` open files holds: the limit less
/// the descriptors it keeps for other than its clients (its runtime, its
/// links to the nodes, its counters socket, a scrape's questions to its
/// siblings).
pub(crate) fn connections_per_process(limit: u64) -> u64 {
    limit.saturating_sub((limit / 20).clamp(64, 1000))
}

impl Workers {
    /// The count for a gateway of `max_connections` whose processes may
    /// each open `files` files (`None`: no limit).
    pub(crate) fn resolve(self, max_connections: usize, files: Option<u64>) -> u16 {
        match (self, files) {
            (Workers::Count(n), _) => n,
            (Workers::Auto, None) => 1,
            (Workers::Auto, Some(limit)) => {
                let each = connections_per_process(limit).max(1);
                let n = (max_connections as u64).div_ceil(each);
                u16::try_from(n.clamp(1, u64::from(MAX_WORKERS))).unwrap_or(MAX_WORKERS)
            }
        }
    }
}

/// Each worker's share of a cap of `total` connections.
pub(crate) fn share(total: usize, workers: u16) -> usize {
    total.div_ceil(usize::from(workers.max(1)))
}

impl Worker {
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// This worker's share of a cap of `total` connections.
    pub(crate) fn share_of(&self, total: usize) -> usize {
        share(total, self.of)
    }

    /// Stops this process when its supervisor dies, and fails if it has
    /// died already.
    pub(crate) fn follow_supervisor(&self) -> anyhow::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
            .context("asking for a signal when the supervisor dies")?;
        // The supervisor may have died before the request took effect.
        if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(self.supervisor) {
            bail!("the gateway's supervisor (pid {}) is gone", self.supervisor);
        }
        Ok(())
    }

    /// Listens on the gateway's port beside the other workers.
    pub(crate) fn listen(&self) -> anyhow::Result<TcpListener> {
        let socket = reusable_socket(self.listen)?;
        socket
            .bind(self.listen)
            .with_context(|| format!("binding {}", self.listen))?;
        socket
            .listen(BACKLOG)
            .with_context(|| format!("listening on {}", self.listen))
    }

    fn socket_path(&self) -> PathBuf {
        socket_path(&self.dir, self.index, std::process::id())
    }

    /// Answers the siblings' (and the supervisor's) questions for this
    /// worker's counters, from now until the process ends. Binding the
    /// socket tells the supervisor this worker has started.
    pub(crate) fn answer_siblings(&self, gateway: Gateway) -> anyhow::Result<()> {
        let path = self.socket_path();
        // Left by an earlier process of this id, long gone.
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    // Out of descriptors (a worker at its limit): a scrape
                    // goes without this worker's counters; do not spin.
                    sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let line = encode(&gateway.stats());
                tokio::spawn(async move {
                    let _ = timeout(SIBLING_TIMEOUT, stream.write_all(line.as_bytes())).await;
                });
            }
        });
        Ok(())
    }

    /// Renders `/metrics` for the whole gateway: this worker's counters and
    /// those of every sibling that answers in time.
    pub(crate) fn metrics_source(
        &self,
        gateway: Gateway,
    ) -> missive_gateway::gateway::MetricsSource {
        let worker = Arc::new(self.clone());
        Arc::new(move || {
            let (worker, gateway) = (worker.clone(), gateway.clone());
            Box::pin(async move {
                let mut total = gateway.stats();
                let mut answered = 1;
                // All at once: a sibling that does not answer costs one
                // timeout, not one each.
                let mut asks = tokio::task::JoinSet::new();
                for path in worker.siblings() {
                    asks.spawn(async move { timeout(SIBLING_TIMEOUT, ask(&path)).await });
                }
                while let Some(asked) = asks.join_next().await {
                    if let Ok(Ok(Ok(theirs))) = asked {
                        total.merge(&theirs);
                        answered += 1;
                    }
                }
                let mut registry = prometheus_client::registry::Registry::default();
                missive_gateway::metrics::register_snapshot(&mut registry, total);
                let workers = prometheus_client::metrics::gauge::Gauge::<i64>::default();
                workers.set(answered);
                registry.register(
                    "missive_ws_workers",
                    "Worker processes of this gateway whose counters this scrape includes",
                    workers,
                );
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &registry)
                    .map(|()| out)
                    .map_err(|e| e.to_string())
            })
        })
    }

    /// The other workers' sockets.
    fn siblings(&self) -> Vec<PathBuf> {
        let own = self.socket_path();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| *p != own && is_worker_socket(p))
            .collect()
    }
}

/// Worker `index`'s counters socket, as the process `pid` binds it: during
/// a replacement, two processes are worker `index` for a moment.
fn socket_path(dir: &Path, index: u16, pid: u32) -> PathBuf {
    dir.join(format!("worker-{index}-{pid}.sock"))
}

fn is_worker_socket(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("worker-") && n.ends_with(".sock"))
}

/// A sibling's counters.
async fn ask(path: &Path) -> io::Result<StatsSnapshot> {
    let mut stream = UnixStream::connect(path).await?;
    let mut line = String::new();
    stream.read_to_string(&mut line).await?;
    decode(&line).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a counters line"))
}

/// The counters as one line of numbers, in [`StatsSnapshot`]'s field order.
fn encode(s: &StatsSnapshot) -> String {
    format!(
        "{} {} {} {} {} {}\n",
        s.connections, s.refused, s.slow_consumers, s.queue_high_water, s.requests, s.rate_limited
    )
}

fn decode(line: &str) -> Option<StatsSnapshot> {
    let mut n = line.split_ascii_whitespace().map(str::parse::<u64>);
    let mut next = || n.next()?.ok();
    let s = StatsSnapshot {
        connections: usize::try_from(next()?).ok()?,
        refused: next()?,
        slow_consumers: next()?,
        queue_high_water: usize::try_from(next()?).ok()?,
        requests: next()?,
        rate_limited: next()?,
    };
    n.next().is_none().then_some(s)
}

/// A TCP socket for `addr` that shares its port with the gateway's other
/// workers.
fn reusable_socket(addr: SocketAddr) -> anyhow::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("creating a socket")?;
    socket.set_reuseaddr(true).context("setting SO_REUSEADDR")?;
    socket.set_reuseport(true).context("setting SO_REUSEPORT")?;
    Ok(socket)
}

/// What the supervisor needs of the gateway's arguments.
pub(crate) struct Plan<'a> {
    pub(crate) listen: &'a str,
    pub(crate) workers: u16,
    pub(crate) nodes: &'a [String],
    pub(crate) max_connections: usize,
    /// How long a worker may take to stop after SIGTERM before it is killed.
    pub(crate) stop_grace: Duration,
}

/// Runs the supervisor of a gateway of `plan.workers` workers until SIGTERM
/// or Ctrl-C, then stops them.
pub(crate) fn supervise(plan: &Plan<'_>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // On this thread: a worker's parent-death signal follows the thread
    // that started it.
    rt.block_on(supervise_on(plan))
}

async fn supervise_on(plan: &Plan<'_>) -> anyhow::Result<ExitCode> {
    let addr = plan
        .listen
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", plan.listen))?
        .next()
        .with_context(|| format!("{} resolves to no address", plan.listen))?;
    // Bound and never listening: holds the port (port 0 picks it) until the
    // workers listen on it, and takes no connection.
    let reservation = reusable_socket(addr)?;
    reservation
        .bind(addr)
        .with_context(|| format!("binding {}", plan.listen))?;
    let addr = reservation
        .local_addr()
        .context("reading the bound address")?;
    let dir = Directory::create()?;
    let launch = Launch {
        // Resolved once: a binary replaced on disk later (an upgrade) is
        // what a restarted worker runs, where the link to this process's
        // own image would name a deleted file.
        exe: std::env::current_exe().context("finding this executable")?,
        workers: plan.workers,
        addr,
        dir: dir.0.clone(),
    };
    let mut workers: Vec<Slot> = (0..plan.workers).map(Slot::new).collect();
    let start = Instant::now();
    for slot in &mut workers {
        slot.start(&launch)?;
    }
    if let Err(e) = await_started(&mut workers, &launch.dir).await {
        stop(children(workers, None, Vec::new()), plan.stop_grace).await;
        return Err(e);
    }
    drop(reservation);
    say!(
        "missive gateway on ws://{addr}/ws in front of {}: {} worker processes, at most {} connections each ({} in all); started in {:.1} s",
        plan.nodes.join(", "),
        plan.workers,
        share(plan.max_connections, plan.workers),
        plan.max_connections,
        start.elapsed().as_secs_f64(),
    );
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut tick = tokio::time::interval(POLL);
    let mut rolling: Option<Rolling> = None;
    let mut retiring: Vec<Retiring> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                if rolling.is_none() {
                    say!("missive gateway: replacing its workers one at a time");
                    rolling = Some(Rolling::default());
                }
            }
            _ = tick.tick() => {
                for slot in &mut workers {
                    slot.tend(&launch);
                }
                if let Some(r) = &mut rolling {
                    match r.step(&mut workers, &launch, &mut retiring, plan.stop_grace) {
                        Ok(false) => {}
                        Ok(true) => {
                            say!("missive gateway: every worker replaced");
                            rolling = None;
                        }
                        Err(e) => {
                            eprintln!("missive gateway: the replacement stopped: {e:#}");
                            rolling = None;
                        }
                    }
                }
                retiring.retain_mut(|r| !r.done(&launch.dir));
            }
        }
    }
    stop(children(workers, rolling, retiring), plan.stop_grace).await;
    say!("missive gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// Waits until every worker has bound its counters socket; fails if one
/// exits first or takes longer than [`START_TIMEOUT`].
async fn await_started(workers: &mut [Slot], dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for slot in workers.iter_mut() {
        while !slot
            .child
            .as_ref()
            .is_some_and(|c| socket_path(dir, slot.index, c.id()).exists())
        {
            if let Some(status) = slot.exited(dir) {
                bail!(
                    "gateway worker {} exited as it started: {status}",
                    slot.index
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway worker {} did not start within {START_TIMEOUT:?}",
                    slot.index
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Every worker process there is: the slots', a replacement being started,
/// and the ones being retired.
fn children(workers: Vec<Slot>, rolling: Option<Rolling>, retiring: Vec<Retiring>) -> Vec<Child> {
    workers
        .into_iter()
        .filter_map(|s| s.child)
        .chain(rolling.and_then(|r| r.new).map(|(c, _)| c))
        .chain(retiring.into_iter().map(|r| r.child))
        .collect()
}

/// Sends SIGTERM to every one of `children`, waits for them to stop (at
/// most `grace`), then kills what is left.
async fn stop(mut children: Vec<Child>, grace: Duration) {
    for child in &children {
        terminate(child);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if children.is_empty() {
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Asks `child` to stop gracefully.
fn terminate(child: &Child) {
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
}

/// How a worker is started: the executable, the address every worker
/// listens on, and the directory of their counter sockets.
struct Launch {
    exe: PathBuf,
    workers: u16,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Launch {
    /// Starts a process to be worker `index`.
    fn spawn(&self, index: u16) -> anyhow::Result<Child> {
        Command::new(&self.exe)
            .args(std::env::args_os().skip(1))
            .args(["--worker", &index.to_string()])
            .args(["--worker-of", &self.workers.to_string()])
            .args(["--worker-listen", &self.addr.to_string()])
            .arg("--worker-dir")
            .arg(&self.dir)
            .args(["--supervisor", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting gateway worker {index}"))
    }
}

/// A rolling replacement of the workers (SIGHUP), one slot at a time: a
/// new process for the slot is started beside the old one; once it
/// listens, it takes the slot and the old one stops gracefully (its clients
/// are told to reconnect, and find the port open). The port is never
/// without a listener, so an upgrade of the binary on disk reaches every
/// worker without refusing a connection.
#[derive(Default)]
struct Rolling {
    /// The slot being replaced.
    next: usize,
    /// Its replacement while it starts, and since when.
    new: Option<(Child, Instant)>,
}

impl Rolling {
    /// Moves the replacement on by what has happened; `true` once every
    /// slot is replaced.
    fn step(
        &mut self,
        workers: &mut [Slot],
        launch: &Launch,
        retiring: &mut Vec<Retiring>,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        let Some(slot) = workers.get_mut(self.next) else {
            return Ok(true);
        };
        let Some((new, since)) = &mut self.new else {
            if slot.child.is_none() {
                // Waiting to restart after a failure: it restarts with the
                // binary on disk anyway.
                self.next += 1;
            } else {
                self.new = Some((launch.spawn(slot.index)?, Instant::now()));
            }
            return Ok(self.next >= workers.len());
        };
        if let Some(status) = new.try_wait().context("waiting for the new worker")? {
            self.new = None;
            bail!(
                "the new worker {} exited as it started: {status}",
                slot.index
            );
        }
        if socket_path(&launch.dir, slot.index, new.id()).exists() {
            if let Some((new, _)) = self.new.take()
                && let Some(old) = slot.replace(new)
            {
                terminate(&old);
                retiring.push(Retiring {
                    index: slot.index,
                    child: old,
                    deadline: Instant::now() + grace,
                });
            }
            self.next += 1;
            return Ok(self.next >= workers.len());
        }
        if since.elapsed() > START_TIMEOUT {
            if let Some((mut new, _)) = self.new.take() {
                let _ = new.kill();
                let _ = new.wait();
            }
            bail!(
                "the new worker {} did not start within {START_TIMEOUT:?}",
                slot.index
            );
        }
        Ok(false)
    }
}

/// A replaced worker finishing its graceful stop.
struct Retiring {
    index: u16,
    child: Child,
    /// When it is killed if it has not stopped.
    deadline: Instant,
}

impl Retiring {
    /// Whether it has stopped (killed past its deadline), its socket gone.
    fn done(&mut self, dir: &Path) -> bool {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if !exited && Instant::now() < self.deadline {
            return false;
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(socket_path(dir, self.index, self.child.id()));
        true
    }
}

/// One worker's place: its process while it runs, and when to start it
/// again after it failed.
struct Slot {
    index: u16,
    child: Option<Child>,
    started: Instant,
    failures: u32,
    restart_at: Option<Instant>,
}

impl Slot {
    fn new(index: u16) -> Slot {
        Slot {
            index,
            child: None,
            started: Instant::now(),
            failures: 0,
            restart_at: None,
        }
    }

    fn start(&mut self, launch: &Launch) -> anyhow::Result<()> {
        let child = launch.spawn(self.index)?;
        self.replace(child);
        Ok(())
    }

    /// Puts `child` in the slot as a fresh start; the process it held.
    fn replace(&mut self, child: Child) -> Option<Child> {
        self.started = Instant::now();
        self.restart_at = None;
        self.child.replace(child)
    }

    /// The worker's exit status, if it has exited; the slot is then empty
    /// and the worker's socket removed.
    fn exited(&mut self, dir: &Path) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok()??;
        let _ = std::fs::remove_file(socket_path(dir, self.index, child.id()));
        self.child = None;
        Some(status)
    }

    /// Notices an exit and schedules the restart; restarts when it is due.
    fn tend(&mut self, launch: &Launch) {
        if let Some(status) = self.exited(&launch.dir) {
            if self.started.elapsed() >= HEALTHY_RUN {
                self.failures = 0;
            }
            let pause = FIRST_RESTART_PAUSE
                .saturating_mul(1 << self.failures.min(16))
                .min(MAX_RESTART_PAUSE);
            self.failures += 1;
            eprintln!(
                "missive gateway: worker {} exited ({status}); starting it again in {pause:?}",
                self.index
            );
            self.restart_at = Some(Instant::now() + pause);
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at)
            && let Err(e) = self.start(launch)
        {
            eprintln!("missive gateway: {e:#}");
            self.restart_at = Some(Instant::now() + MAX_RESTART_PAUSE);
        }
    }
}

/// The supervisor's directory of counter sockets, removed when it ends.
struct Directory(PathBuf);

impl Directory {
    fn create() -> anyhow::Result<Directory> {
        let path = std::env::temp_dir().join(format!("missive-gateway.{}", std::process::id()));
        // Left by an earlier process with this id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Directory(path))
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_their_line_and_a_bad_line_is_refused() {
        let s = StatsSnapshot {
            connections: 17_000,
            refused: 3,
            slow_consumers: 2,
            queue_high_water: 31,
            requests: 123_456_789,
            rate_limited: 9,
        };
        assert_eq!(decode(&encode(&s)), Some(s));
        assert_eq!(decode("1 2 3 4 5"), None);
        assert_eq!(decode("1 2 3 4 5 6 7"), None);
        assert_eq!(decode("1 2 x 4 5 6"), None);
    }

    #[test]
    fn auto_takes_as_many_workers_as_the_cap_needs_under_the_file_limit() {
        // 20,000 files: 1,000 kept back, 19,000 connections a process.
        assert_eq!(Workers::Auto.resolve(100_000, Some(20_000)), 6);
        assert_eq!(Workers::Auto.resolve(19_000, Some(20_000)), 1);
        assert_eq!(Workers::Auto.resolve(19_001, Some(20_000)), 2);
        // A small limit keeps back 64.
        assert_eq!(Workers::Auto.resolve(500, Some(300)), 3);
        assert_eq!(Workers::Auto.resolve(10_000, None), 1);
        assert_eq!(Workers::Auto.resolve(usize::MAX, Some(100)), MAX_WORKERS);
        assert_eq!(Workers::Count(4).resolve(1, Some(20_000)), 4);
        assert_eq!("auto".parse(), Ok(Workers::Auto));
        assert_eq!("3".parse(), Ok(Workers::Count(3)));
        assert!("0".parse::<Workers>().is_err());
        assert!("257".parse::<Workers>().is_err());
    }

    #[test]
    fn the_cap_is_shared_rounding_up() {
        assert_eq!(share(100_000, 6), 16_667);
        assert_eq!(share(10_000, 1), 10_000);
        assert_eq!(share(1, 4), 1);
    }
}
