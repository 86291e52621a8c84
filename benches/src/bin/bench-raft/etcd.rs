//! The etcd side: a 3-member cluster started by `benches/scripts/etcd-cluster`
//! (which installs Debian's etcd-server when missing), and a writer that
//! sends each client's writes as etcd v3 `KV.Put` calls to the leader.
//!
//! [`EtcdCluster`] runs the script's `stop` when dropped, so no path out of
//! the benchmark leaves a member behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::{Instant, sleep};
use tonic::transport::{Channel, Endpoint};

use self::etcdserverpb::kv_client::KvClient;
use self::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::WRITE_TIMEOUT;
use crate::load::{System, Writer, connection_of, key_of, value};

/// The etcd API subset of `benches/proto`, compiled by `build.rs`.
#[allow(missing_debug_implementations)]
mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Members the script starts.
const MEMBERS: u32 = 3;

/// How long the members may take to agree on a leader after the script
/// reported them healthy.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often that wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// The script that starts and stops the cluster.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/etcd-cluster")
}

/// A running 3-member cluster.
#[derive(Debug)]
pub(crate) struct EtcdCluster {
    /// The members' data directory, which the script's `stop` reads the
    /// process ids from.
    dir: PathBuf,
    /// The leader's client URL.
    leader: String,
    /// The version the members report.
    version: String,
    /// The members' process ids, from the script's pid files.
    pids: Vec<u32>,
    /// Set once `stop` ran, so drop does not run it again.
    stopped: bool,
}

impl EtcdCluster {
    /// Runs the script's `start` in `dir` and finds the leader.
    pub(crate) async fn start(dir: &Path) -> Result<EtcdCluster> {
        // Made before the script runs, so that members started by a script
        // that fails half-way are stopped too.
        let mut cluster = EtcdCluster {
            dir: dir.to_owned(),
            leader: String::new(),
            version: String::new(),
            pids: Vec::new(),
            stopped: false,
        };
        eprintln!("etcd: starting 3 members ({} start)", script().display());
        let dir = dir.to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(script())
                .arg("start")
                .arg(&dir)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
        })
        .await?
        .context("running the etcd-cluster script")?;
        if !out.status.success() {
            bail!("etcd-cluster start failed: {}", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoints: Vec<String> = stdout
            .lines()
            .last()
            .context("etcd-cluster start printed no endpoints")?
            .split(',')
            .map(|e| e.trim().to_owned())
            .collect();
        let (leader, version) = await_leader(&endpoints).await?;
        eprintln!("etcd {version}: leader at {leader}");
        cluster.leader = leader;
        cluster.version = version;
        cluster.pids = member_pids(&cluster.dir)?;
        Ok(cluster)
    }

    /// The etcd version the members run.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Runs the script's `stop`.
    pub(crate) async fn stop(mut self) -> Result<()> {
        self.stopped = true;
        let dir = self.dir.clone();
        let status = tokio::task::spawn_blocking(move || stop_members(&dir)).await??;
        if !status.success() {
            bail!("etcd-cluster stop failed: {status}");
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if !self.stopped
            && let Err(e) = stop_members(&self.dir)
        {
            eprintln!("etcd-cluster stop: {e:#}");
        }
    }
}

/// The members' process ids, from the `etcd-N.pid` files the script
/// writes.
fn member_pids(dir: &Path) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for n in 1..=MEMBERS {
        let file = dir.join(format!("etcd-{n}.pid"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        pids.push(
            text.trim()
                .parse()
                .with_context(|| format!("{}: not a process id", file.display()))?,
        );
    }
    Ok(pids)
}

fn stop_members(dir: &Path) -> Result<std::process::ExitStatus> {
    Command::new(script())
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .status()
        .context("running the etcd-cluster script")
}

/// The leader's endpoint and the version, once every member names the same
/// leader and one of them is it.
async fn await_leader(endpoints: &[String]) -> Result<(String, String)> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match leader_now(endpoints).await {
            Ok(Some(found)) => return Ok(found),
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ if Instant::now() >= deadline => {
                bail!("the etcd members did not agree on a leader within {LEADER_TIMEOUT:?}")
            }
            _ => sleep(POLL).await,
        }
    }
}

async fn leader_now(endpoints: &[String]) -> Result<Option<(String, String)>> {
    let mut leaders = Vec::new();
    let mut found = None;
    for endpoint in endpoints {
        let mut client = MaintenanceClient::new(connect(endpoint).await?);
        let mut req = tonic::Request::new(etcdserverpb::StatusRequest {});
        req.set_timeout(Duration::from_secs(3));
        let status = client.status(req).await?.into_inner();
        let member = status
            .header
            .as_ref()
            .ok_or_else(|| anyhow!("{endpoint}: status without a header"))?
            .member_id;
        if status.leader == member {
            found = Some((endpoint.clone(), status.version.clone()));
        }
        leaders.push(status.leader);
    }
    let agreed = leaders.windows(2).all(|w| w[0] == w[1]) && leaders.first() != Some(&0);
    Ok(found.filter(|_| agreed))
}

impl System for EtcdCluster {
    type Writer = EtcdWriter;

    async fn writer(&self, clients: usize, connections: usize) -> Result<EtcdWriter> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            channels.push(KvClient::new(connect(&self.leader).await?));
        }
        Ok(EtcdWriter {
            channels,
            keys: (0..clients).map(|c| key_of(c).into_bytes()).collect(),
            value: value().into_bytes(),
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.pids.clone()
    }
}

/// The writes of one case.
#[derive(Debug)]
pub(crate) struct EtcdWriter {
    /// The connections to the leader.
    channels: Vec<KvClient<Channel>>,
    /// Each client's key.
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
}

impl Writer for EtcdWriter {
    async fn put(&self, client: usize) -> Result<()> {
        // Cheap: a clone shares the connection.
        let mut conn = self.channels[connection_of(client, self.channels.len())].clone();
        let mut req = tonic::Request::new(etcdserverpb::PutRequest {
            key: self.keys[client].clone(),
            value: self.value.clone(),
            ..Default::default()
        });
        req.set_timeout(WRITE_TIMEOUT);
        conn.put(req).await?;
        Ok(())
    }
}

/// A channel to the member whose client URL is `endpoint`.
async fn connect(endpoint: &str) -> Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}
