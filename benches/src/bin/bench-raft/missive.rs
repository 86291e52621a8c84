//! The missive side: 3 `missive node` processes on loopback, joined by
//! `missive cluster init`, and a writer that sends each client's writes
//! over the internal `Forward` call to its partition's leader.
//!
//! The processes are owned by [`MissiveCluster`]: dropping it kills every
//! one still running, so no path out of the benchmark leaves a node behind.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use missive_raft::network::{MAX_MESSAGE_BYTES, WriteStream};
use missive_raft::partition::partition_of;
use missive_raft::{ClusterSecret, Reply, kv};
use tokio::time::{Instant, sleep};
use tonic::transport::{Channel, Endpoint};

use crate::WRITE_TIMEOUT;
use crate::load::{System, Writer, connection_of, key_of, value};

/// Nodes in the cluster.
const NODES: u64 = 3;

/// How long the nodes may take to answer, and the partitions to get their
/// leaders, after starting.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often those waits look again.
const POLL: Duration = Duration::from_millis(100);

/// How long a stopped node may take to exit after SIGTERM before it is
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable the `missive` commands read the cluster secret
/// from (kept off their command lines).
const SECRET_ENV: &str = "MISSIVE_CLUSTER_SECRET";

/// One node process.
#[derive(Debug)]
struct NodeProcess {
    id: u64,
    /// Its internal service's address.
    addr: String,
    /// Its output, for the error message when it dies.
    log: PathBuf,
    child: Child,
}

/// A running 3-node cluster.
#[derive(Debug)]
pub(crate) struct MissiveCluster {
    binary: PathBuf,
    /// Killed on drop.
    nodes: Vec<NodeProcess>,
    /// The secret the nodes were started with.
    secret_text: String,
    secret: ClusterSecret,
    /// Per partition: its leader's id and address.
    leaders: Vec<(u64, String)>,
}

impl MissiveCluster {
    /// Starts the nodes in `dir` with `partitions` partitions, initializes
    /// the cluster and finds each partition's leader.
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        partitions: u32,
    ) -> Result<MissiveCluster> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Unique per run; the nodes only listen on loopback.
        let secret_text = format!("bench-raft-{}", std::process::id());
        let mut cluster = MissiveCluster {
            binary: binary.to_owned(),
            nodes: Vec::new(),
            secret: ClusterSecret::new(&secret_text)?,
            secret_text,
            leaders: Vec::new(),
        };
        for id in 1..=NODES {
            cluster.spawn_node(id, dir, partitions)?;
        }
        for node in 0..cluster.nodes.len() {
            cluster.await_answer(node).await?;
        }
        cluster.init()?;
        cluster.leaders = cluster.await_leaders(partitions).await?;
        eprintln!("missive: {}", cluster.leaders_description());
        Ok(cluster)
    }

    fn spawn_node(&mut self, id: u64, dir: &Path, partitions: u32) -> Result<()> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let data = dir.join(format!("node-{id}"));
        let log = dir.join(format!("node-{id}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(&self.binary)
            .arg("node")
            // The key-value state machine: replication is measured without
            // the chat domain's apply.
            .arg("--kv")
            .args(["--id", &id.to_string(), "--listen", &addr])
            .arg("--data")
            .arg(&data)
            .args(["--partitions", &partitions.to_string()])
            .env(SECRET_ENV, &self.secret_text)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.nodes.push(NodeProcess {
            id,
            addr,
            log,
            child,
        });
        Ok(())
    }

    /// Waits until node `node` answers a status call.
    async fn await_answer(&mut self, node: usize) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let addr = self.nodes[node].addr.clone();
            match self.status(&addr).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("node at {addr} did not answer")));
                }
                Err(_) => {}
            }
            self.check_alive()?;
            sleep(POLL).await;
        }
    }

    /// Fails if a node has exited.
    fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(status) = n.child.try_wait().context("waiting for a node")? {
                bail!(
                    "node {} exited ({status}); its output is in {}",
                    n.id,
                    n.log.display()
                );
            }
        }
        Ok(())
    }

    /// `missive cluster init` against node 1 with every node as a member.
    fn init(&self) -> Result<()> {
        let members: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect();
        let out = Command::new(&self.binary)
            .args(["cluster", "init", "--node", &self.nodes[0].addr])
            .args(["--members", &members.join(",")])
            .env(SECRET_ENV, &self.secret_text)
            .stdin(Stdio::null())
            .output()
            .context("running missive cluster init")?;
        if !out.status.success() {
            bail!(
                "missive cluster init failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        eprintln!("missive: {}", String::from_utf8_lossy(&out.stdout).trim());
        Ok(())
    }

    /// Per partition, the leader's id and address, once every partition
    /// has a leader that says so itself.
    async fn await_leaders(&mut self, partitions: u32) -> Result<Vec<(u64, String)>> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(leaders) = self.leaders_now(partitions).await {
                return Ok(leaders);
            }
            if Instant::now() >= deadline {
                bail!("the partitions did not all get a leader within {START_TIMEOUT:?}");
            }
            self.check_alive()?;
            sleep(POLL).await;
        }
    }

    async fn leaders_now(&self, partitions: u32) -> Option<Vec<(u64, String)>> {
        let view = self.status(&self.nodes[0].addr).await.ok()?;
        let mut leaders = Vec::new();
        for p in 0..partitions {
            let leader = view.partitions.get(p as usize)?.leader?;
            let addr = self.nodes.iter().find(|n| n.id == leader)?.addr.clone();
            let own = self.status(&addr).await.ok()?;
            if own.partitions.get(p as usize)?.leader != Some(leader) {
                return None;
            }
            leaders.push((leader, addr));
        }
        Some(leaders)
    }

    async fn status(&self, addr: &str) -> Result<pb::StatusResponse> {
        let mut client = RaftInternalClient::new(connect(addr).await?);
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(3));
        self.secret.attach(&mut req);
        Ok(client.status(req).await?.into_inner())
    }

    /// Which node leads which partition, for the report.
    pub(crate) fn leaders_description(&self) -> String {
        self.leaders
            .iter()
            .enumerate()
            .map(|(p, (id, addr))| format!("partition {p} led by node {id} ({addr})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stops every node: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub(crate) fn stop(mut self) -> Result<()> {
        for n in &self.nodes {
            // `kill` the command: std has no way to send SIGTERM, and a
            // node that fails to receive it is killed below anyway.
            let _ = Command::new("kill")
                .args(["-TERM", &n.child.id().to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        for n in &mut self.nodes {
            while n.child.try_wait().context("waiting for a node")?.is_none() {
                if std::time::Instant::now() >= deadline {
                    eprintln!("missive node {} ignored SIGTERM; killing it", n.id);
                    n.child.kill().context("killing a node")?;
                    n.child.wait().context("waiting for a node")?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for MissiveCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // Already exited after `stop`; then both calls are harmless.
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

impl System for MissiveCluster {
    type Writer = MissiveWriter;

    async fn writer(&self, clients: usize, connections: usize) -> Result<MissiveWriter> {
        let partitions = self.leaders.len();
        // The connections are split over the partitions' leaders, at least
        // one each; with one partition, all go to its leader.
        let per_partition = connections.div_ceil(partitions).max(1);
        let mut leaders = Vec::with_capacity(partitions);
        for (_, addr) in &self.leaders {
            let mut streams = Vec::with_capacity(per_partition);
            for _ in 0..per_partition {
                let channel = connect(addr).await?;
                let stream = WriteStream::open(channel, addr, &self.secret, MAX_MESSAGE_BYTES)
                    .await
                    .with_context(|| format!("opening a write stream to {addr}"))?;
                streams.push(stream);
            }
            leaders.push(streams);
        }
        let keys: Vec<String> = (0..clients).map(key_of).collect();
        let partition_of_client = keys
            .iter()
            .map(|k| partition_of(k.as_bytes(), partitions as u32))
            .collect();
        Ok(MissiveWriter {
            leaders,
            keys,
            partition_of_client,
            value: value(),
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }
}

/// The writes of one case.
#[derive(Debug)]
pub(crate) struct MissiveWriter {
    /// Per partition, a write stream to its leader on each connection.
    leaders: Vec<Vec<WriteStream>>,
    /// Each client's key.
    keys: Vec<String>,
    /// The partition each client's key lives in.
    partition_of_client: Vec<u32>,
    value: String,
}

impl Writer for MissiveWriter {
    async fn put(&self, client: usize) -> Result<()> {
        let p = self.partition_of_client[client];
        let streams = &self.leaders[p as usize];
        let stream = &streams[connection_of(client, streams.len())];
        let write = pb::ForwardRequest {
            partition: p,
            command: Some(kv::set(&self.keys[client], &self.value).into()),
            relayed: false,
        };
        let resp = stream.write(write, WRITE_TIMEOUT).await?;
        kv::previous(&Reply { body: resp.reply })?;
        Ok(())
    }
}

/// A channel to a node's internal service at `addr`.
async fn connect(addr: &str) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A port free on 127.0.0.1 now. Another process could take it before the
/// node binds it; the node then fails to start and the benchmark says so.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}
