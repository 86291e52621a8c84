//! The missive side, in one of two layouts ([`Layout`]): `missive serve`
//! alone (one chat node and its gateway in one process, the default
//! deployment), or `missive serve` with a separate `missive gateway`
//! process in front of it, whose memory is its own and can be read from
//! /proc. A separate gateway may be made of several worker processes
//! (`missive gateway --workers W`: children of the `missive gateway`
//! process, sharing its port), for more connections than one process's
//! open-file limit holds; its memory is then theirs and its own, summed.
//!
//! The processes are owned by [`Missive`]: dropping it kills them (the
//! gateway's workers end with their gateway), so no path out of the
//! benchmark leaves one behind.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The environment variable `missive serve` reads its HS256 secret from.
const JWT_SECRET_ENV: &str = "MISSIVE_JWT_SECRET";

/// How long the node and the gateway may take to answer after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One process and where its output goes.
#[derive(Debug)]
struct Process {
    name: &'static str,
    log: PathBuf,
    child: Child,
}

/// Where the clients' gateway runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// In the node's process: `missive serve`'s own gateway.
    Embedded,
    /// A `missive gateway` process of its own, reaching the node over gRPC,
    /// made of `workers` worker processes (`--workers`; 1: the process
    /// serves alone), each holding its share of the connections.
    Separate { workers: usize },
}

/// A running node and gateway.
#[derive(Debug)]
pub(crate) struct Missive {
    /// The gateway's WebSocket address (`/ws`).
    pub(crate) gateway: SocketAddr,
    /// The node's own HTTP listener (`/metrics`; with [`Layout::Embedded`]
    /// also the gateway).
    http: SocketAddr,
    node: Process,
    gateway_process: Option<Process>,
    /// The gateway's worker processes asked for (1: it serves alone).
    workers: usize,
}

/// The resident memory of a separate gateway: its process and all its
/// children (its workers), summed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GatewayRss {
    pub(crate) kib: u64,
    /// Processes summed: the gateway's own and its children.
    pub(crate) processes: usize,
}

impl Missive {
    /// Starts `missive serve` in `dir` (tokens signed with `jwt_secret`)
    /// with its gateway laid out as `layout`, allowing `max_connections`
    /// WebSockets, with `partitions` (`None`: serve's default); returns
    /// once the gateway's `/healthz` says a node answers.
    pub(crate) fn start(
        binary: &Path,
        dir: &Path,
        jwt_secret: &str,
        max_connections: usize,
        layout: Layout,
        partitions: Option<u32>,
    ) -> Result<Missive> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let node = spawn(
            "missive serve",
            binary,
            &dir.join("node.log"),
            Command::new(binary)
                .arg("serve")
                .arg("--data")
                .arg(dir.join("data"))
                .args(["--grpc", &grpc])
                .args(["--http", &http.to_string()])
                .args(["--internal", &format!("127.0.0.1:{}", free_port()?)])
                .args(["--max-connections", &max_connections.to_string()])
                .args(partitions.map(|p| format!("--partitions={p}")))
                .env(JWT_SECRET_ENV, jwt_secret),
        )?;
        let (gateway, gateway_process, workers) = match layout {
            Layout::Embedded => (http, None, 1),
            Layout::Separate { workers } => {
                let gateway: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
                let mut cmd = Command::new(binary);
                cmd.arg("gateway")
                    .args(["--node", &grpc])
                    .args(["--listen", &gateway.to_string()])
                    .args(["--max-connections", &max_connections.to_string()])
                    .args(["--workers", &workers.to_string()]);
                let process = spawn(
                    "missive gateway",
                    binary,
                    &dir.join("gateway.log"),
                    &mut cmd,
                )?;
                (gateway, Some(process), workers)
            }
        };
        let mut missive = Missive {
            gateway,
            http,
            node,
            gateway_process,
            workers,
        };
        missive.await_healthy()?;
        Ok(missive)
    }

    /// The node's durable commits of its projection stores so far: how
    /// many, and the seconds they took (its `/metrics`).
    pub(crate) fn durable_commits(&self) -> Result<(f64, f64)> {
        let body = get(self.http, "/metrics")?;
        let series = |name: &str| -> Result<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("{name} is not in the node's /metrics"))?
                .trim()
                .parse()
                .with_context(|| format!("{name} is not a number"))
        };
        Ok((
            series("missive_store_durable_commit_seconds_count")?,
            series("missive_store_durable_commit_seconds_sum")?,
        ))
    }

    /// The gateway process's id, if it has one of its own.
    pub(crate) fn gateway_pid(&self) -> Option<u32> {
        self.gateway_process.as_ref().map(|p| p.child.id())
    }

    /// The gateway's worker processes asked for: 1 when it has none of
    /// its own (or is the node's).
    pub(crate) fn gateway_workers(&self) -> usize {
        self.workers
    }

    /// Waits until the separate gateway has all its worker processes
    /// (its children), within [`START_TIMEOUT`]; at once without
    /// `--workers`.
    pub(crate) fn await_workers(&mut self) -> Result<()> {
        let (Some(pid), true) = (self.gateway_pid(), self.workers > 1) else {
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = children(pid).len();
            if found == self.workers {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "the gateway has {found} worker processes, not {}, {START_TIMEOUT:?} after it answered",
                    self.workers
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The separate gateway's resident memory: its process's VmRSS and
    /// its children's (read afresh: the workers hold the connections).
    /// Fails if it has workers and any of them is gone.
    pub(crate) fn gateway_rss(&self) -> Result<GatewayRss> {
        let pid = self
            .gateway_pid()
            .context("the gateway has no process of its own")?;
        let workers = children(pid);
        if self.workers > 1 && workers.len() != self.workers {
            bail!(
                "the gateway has {} worker processes, not {}",
                workers.len(),
                self.workers
            );
        }
        let mut kib = rss_kib(pid)?;
        for w in &workers {
            kib += rss_kib(*w)?;
        }
        Ok(GatewayRss {
            kib,
            processes: 1 + workers.len(),
        })
    }

    /// Every process, the gateway's first.
    fn processes(&mut self) -> impl Iterator<Item = &mut Process> {
        self.gateway_process
            .iter_mut()
            .chain(std::iter::once(&mut self.node))
    }

    /// The node process's id.
    pub(crate) fn node_pid(&self) -> u32 {
        self.node.child.id()
    }

    fn await_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if healthz(self.gateway).unwrap_or(false) {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!("the gateway's /healthz did not say ok within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails if any of the processes has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for p in self.processes() {
            if let Some(status) = p.child.try_wait().context("waiting for a process")? {
                bail!(
                    "{} exited ({status}); its output is in {}",
                    p.name,
                    p.log.display()
                );
            }
        }
        Ok(())
    }

    /// Stops the gateway, if separate, then the node: SIGTERM, then SIGKILL after
    /// [`STOP_TIMEOUT`]. The gateway's workers are its own to stop: they
    /// end with it, killed or not (see `missive gateway --workers`).
    pub(crate) fn stop(mut self) -> Result<()> {
        for p in self.processes() {
            // `kill` the command: std has no way to send SIGTERM, and a
            // process that does not take it is killed below anyway.
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while p
                .child
                .try_wait()
                .context("waiting for a process")?
                .is_none()
            {
                if Instant::now() >= deadline {
                    eprintln!("{} ignored SIGTERM; killing it", p.name);
                    p.child.kill().context("killing a process")?;
                    p.child.wait().context("waiting for a process")?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Missive {
    fn drop(&mut self) {
        for p in self.processes() {
            // Already exited after `stop`; then both calls are harmless.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn spawn(name: &'static str, binary: &Path, log: &Path, cmd: &mut Command) -> Result<Process> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {} ({name})", binary.display()))?;
    Ok(Process {
        name,
        log: log.to_owned(),
        child,
    })
}

/// True when `GET /healthz` at `addr` answers 200.
fn healthz(addr: SocketAddr) -> Result<bool> {
    Ok(get(addr, "/healthz")?.starts_with("HTTP/1.1 200"))
}

/// A plain HTTP/1.1 GET: the whole answer, status line and headers
/// included.
fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The children of process `pid`, every thread's: `/proc/<pid>/task/*/children`.
/// None if it has exited.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The resident memory of process `pid` (VmRSS), in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A port free on 127.0.0.1 now. Another process could take it before the
/// server binds it; the server then fails to start and the benchmark says so.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}
