//! [`Node`]: one member of a cluster — P partitions, each an openraft group
//! over its own missive-log, and the internal gRPC service their peers and
//! operators call.
//!
//! # Layout
//!
//! - `meta`: the node metadata file (id, partition count).
//! - `write`: writes, forwarded to the partition's leader when needed.
//! - `membership`: initialize, add and remove nodes, spread leaders.
//! - `rebalance`: handing partitions back to their preferred leaders.
//! - `status`: [`NodeStatus`], read from openraft's metrics.
//! - `dump`: [`for_each_committed`], a stopped node's committed commands.
//! - `backup`: [`Node::backup`], a consistent backup while writes go on.
//!
//! # A node's data directory
//!
//! ```text
//! <data>/node.meta                  id and partition count
//! <data>/partitions/<p>/            partition p (see the crate docs)
//! <data>/partitions/<p>/incoming/   snapshots being received
//! ```
//!
//! # Invariants
//!
//! - The partition count is fixed when the directory is created.
//! - A restarted node needs nothing but its directory: vote, log and
//!   snapshot are durable, and openraft's leader finds it again.
//! - Every partition shares the node's one connection to each peer.
//!
//! # The consensus runtime
//!
//! openraft's tasks — each partition's core loop, its state machine worker
//! and its replication streams — run on a runtime of their own with one
//! thread (`raft-core`), not on the runtime that serves clients. A write
//! passes through the core several times (proposed, appended, flushed,
//! committed, applied), and each pass is a task wake-up; on the serving
//! runtime every wake-up waited its turn behind whatever else was runnable
//! — under load, thousands of subscription streams and connections — so
//! those queues, not the disk, set the commit latency. On its own thread
//! the core runs as soon as its input arrives, and the kernel shares the
//! cores between it and the serving threads. Callers on any runtime reach
//! it through openraft's channels as before.
//!
//! The internal transport runs there too: the `RaftInternal` server (its
//! connections, and the handlers of appends, votes and forwarded writes)
//! and the peers' channels (their connections and request queues). A
//! follower's append then reaches its core, and a leader's replication
//! request its connection, without waking another thread; each such
//! hand-off between threads costs more than the work it hands over on a
//! small machine. Measured with one writer in `bench-raft --quick`: 39–40
//! context switches per commit across the three nodes against 63–66 with
//! the transport on the serving runtime, and 1.5–1.7 ms of the nodes' CPU
//! per commit against 1.8–2.2 ms (docs/raft-storage.md). Client-facing
//! services stay on the serving runtime.

mod backup;
mod dump;
mod membership;
pub(crate) mod meta;
mod rebalance;
mod status;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use missive_log::Options;
use missive_proto::v1::raft_internal_server::RaftInternalServer;
use openraft::async_runtime::WatchReceiver;
use openraft::{Raft, RaftMetrics};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

pub use self::dump::for_each_committed;
pub use self::meta::NODE_META_FILE;
pub use self::status::{FollowerStatus, NodeStatus, PartitionStatus};
use crate::SNAPSHOT_DIR;
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::network::service::Service;
use crate::network::{ClusterSecret, MAX_MESSAGE_BYTES, PartitionNetwork, Peers};
use crate::sm_store::StateMachineStore;
use crate::state_machine::StateMachine;
use crate::types::{NodeId, TypeConfig};

/// Partitions a new node directory gets when none is asked for.
pub const DEFAULT_PARTITIONS: u32 = 4;

/// How often a node looks at whether its partitions should snapshot
/// (`crate::snapshot::Backlog`: by the log behind the current snapshot,
/// against the snapshot's size; docs/raft-storage.md, "How often a
/// partition snapshots"). openraft's own policy, which counts entries, is
/// off in [`NodeConfig::new`].
pub const SNAPSHOT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Name of the directory holding the partitions.
pub const PARTITIONS_DIR: &str = "partitions";

/// How a node starts.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's id; checked against the data directory's.
    pub id: NodeId,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The partition count for a new directory; `None` takes the stored
    /// one (or [`NodeConfig::new_partitions`]).
    pub partitions: Option<u32>,
    /// The partition count a new directory gets when `partitions` is
    /// `None` ([`DEFAULT_PARTITIONS`] unless changed).
    pub new_partitions: u32,
    /// What peers and operators must present.
    pub secret: ClusterSecret,
    /// The address peers reach this node at; `None` takes the listener's.
    pub advertise: Option<String>,
    /// openraft's configuration, shared by every partition. The node
    /// starts its partitions with [`LogStore::raft_config`] of it, whatever
    /// it says: a restarted leader must stand for election again.
    pub raft: Arc<openraft::Config>,
    /// Each partition log's options (their clock stamps entries).
    pub log: Options,
    /// How long a write may look for a leader before it fails.
    pub write_timeout: Duration,
    /// How often the node hands the partitions it leads back to their
    /// preferred leaders (see `rebalance`); `None` never.
    pub rebalance_every: Option<Duration>,
}

impl NodeConfig {
    /// A configuration with production defaults for openraft's timers.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>, secret: ClusterSecret) -> Result<Self> {
        let raft = openraft::Config {
            cluster_name: "missive".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            // A snapshot costs what the state weighs, so the node takes
            // them by the log's size instead (SNAPSHOT_CHECK_EVERY).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..openraft::Config::default()
        };
        let raft = LogStore::raft_config(raft);
        Ok(NodeConfig {
            id,
            data_dir: data_dir.into(),
            partitions: None,
            new_partitions: DEFAULT_PARTITIONS,
            secret,
            advertise: None,
            raft: Arc::new(raft.validate().map_err(|e| Error::Config(e.to_string()))?),
            log: Options::default(),
            write_timeout: Duration::from_secs(10),
            rebalance_every: Some(Duration::from_secs(5)),
        })
    }
}

/// openraft over one partition's state machine.
pub type PartitionRaft<SM> = Raft<TypeConfig, StateMachineStore<SM>>;

/// One partition on this node.
struct Partition<SM: StateMachine> {
    /// Its Raft group member.
    raft: PartitionRaft<SM>,
    /// Its state machine, for reads.
    sm: StateMachineStore<SM>,
    /// Its directory.
    dir: PathBuf,
}

type Closed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The server task and how to stop it.
struct ServerTask {
    /// Sending (or dropping) it stops the server gracefully.
    stop: oneshot::Sender<()>,
    /// The server, awaited at shutdown so the listener is closed before the
    /// partitions stop.
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

struct Inner<SM: StateMachine> {
    /// This node's id.
    id: NodeId,
    /// Where peers reach it.
    addr: String,
    /// The shared client of every peer.
    peers: Peers,
    /// The partitions, indexed by number.
    partitions: Vec<Partition<SM>>,
    /// How long a write looks for a leader.
    write_timeout: Duration,
    /// Names received snapshot files uniquely.
    incoming: AtomicU64,
    /// Resolve when each partition's log is closed. A std `Mutex`: only
    /// taken to move the futures out, never held across an `.await`.
    closed: Mutex<Vec<Closed>>,
    /// The internal server, until shut down. A std `Mutex` for the same
    /// reason.
    server: Mutex<Option<ServerTask>>,
    /// Turns true when the node starts shutting down: the `Writes` streams
    /// it serves stop taking writes and end once they have answered the
    /// ones they took, so that the server's graceful stop can finish.
    stopping: watch::Sender<bool>,
    /// Where relayed ephemeral messages go ([`Node::on_relay`]); set once.
    relay: OnceLock<RelayHandler>,
    /// The periodic tasks (rebalancing, snapshots), aborted at shutdown. A
    /// std `Mutex`, never held across an `.await`.
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Where openraft's tasks run (see the module docs). Last, so
    /// everything above is dropped before it stops.
    consensus: ConsensusRuntime,
}

/// The runtime openraft's tasks run on (see the module docs).
struct ConsensusRuntime(Option<tokio::runtime::Runtime>);

impl ConsensusRuntime {
    fn new() -> Result<ConsensusRuntime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft-core")
            .enable_all()
            .build()
            .map(|rt| ConsensusRuntime(Some(rt)))
            .map_err(|e| Error::Config(format!("starting the consensus runtime: {e}")))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        // Only `Drop` takes the runtime.
        self.0.as_ref().expect("consensus runtime present").handle()
    }
}

impl Drop for ConsensusRuntime {
    fn drop(&mut self) {
        // A node may be dropped on an async thread, where a blocking drop
        // of a runtime panics; its tasks have been shut down (or are
        // abandoned with the node).
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What receives the application's ephemeral messages from other nodes.
pub type RelayHandler = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// How long one relayed message may take to reach a peer: an ephemeral
/// message later than this is worth nothing.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster node; cheap to clone (clones share it).
pub struct Node<SM: StateMachine> {
    /// Shared by the clones and by the internal service (which holds one
    /// until the server stops).
    inner: Arc<Inner<SM>>,
}

impl<SM: StateMachine> Clone for Node<SM> {
    fn clone(&self) -> Self {
        Node {
            inner: self.inner.clone(),
        }
    }
}

impl<SM: StateMachine> fmt::Debug for Node<SM> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("addr", &self.inner.addr)
            .field("partitions", &self.inner.partitions.len())
            .finish_non_exhaustive()
    }
}

impl<SM: StateMachine> Node<SM> {
    /// Opens (creating if needed) the node in `config.data_dir`, each
    /// partition's state machine from `state_machine(p)`, and serves the
    /// internal service on `listener`.
    pub async fn start(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
        mut state_machine: impl FnMut(u32) -> SM,
    ) -> Result<Node<SM>> {
        let local = listener
            .local_addr()
            .map_err(|e| Error::Transport(format!("listener address: {e}")))?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        let dir = config.data_dir.clone();
        let meta = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || meta::open_or_create(&dir, config.id, config.partitions, config.new_partitions)
        })
        .await
        .map_err(|e| Error::Config(e.to_string()))??;
        // Applied here too, not only in `NodeConfig::new`: callers replace
        // `config.raft` with their own, and a partition log must never run
        // under a leader restored after a restart (see `LogStore::raft_config`).
        let raft_config = Arc::new(LogStore::raft_config((*config.raft).clone()));
        let consensus = ConsensusRuntime::new()?;
        let peers = Peers::new(config.secret.clone(), consensus.handle().clone());
        let mut partitions = Vec::new();
        let mut closed: Vec<Closed> = Vec::new();
        for p in 0..meta.partitions {
            let pdir = partition_dir(&dir, p);
            reset_incoming(&pdir).await?;
            let log = LogStore::open(&pdir, config.log.clone()).await?;
            log.set_own_id(config.id);
            closed.push(Box::pin(log.closed()));
            // Linked, so snapshots carry the log's chain hash and a replica
            // that catches up by snapshot keeps the chain its peers have.
            let sm =
                StateMachineStore::open_with_log(pdir.join(SNAPSHOT_DIR), state_machine(p), &log)
                    .await?;
            let network = PartitionNetwork {
                peers: peers.clone(),
                partition: p,
            };
            // Spawned there, openraft's tasks stay there.
            let raft = consensus
                .handle()
                .spawn(Raft::new(
                    config.id,
                    raft_config.clone(),
                    network,
                    log,
                    sm.clone(),
                ))
                .await
                .map_err(|e| Error::Raft(e.to_string()))?
                .map_err(|e| Error::Raft(e.to_string()))?;
            partitions.push(Partition {
                raft,
                sm,
                dir: pdir,
            });
        }
        let node = Node {
            inner: Arc::new(Inner {
                id: config.id,
                consensus,
                addr,
                peers,
                partitions,
                write_timeout: config.write_timeout,
                incoming: AtomicU64::new(0),
                closed: Mutex::new(closed),
                server: Mutex::new(None),
                stopping: watch::Sender::new(false),
                relay: OnceLock::new(),
                background: Mutex::new(Vec::new()),
            }),
        };
        node.serve(listener, config.secret);
        if let Some(every) = config.rebalance_every {
            node.every(every, |node| async move {
                if let Err(e) = node.rebalance().await {
                    tracing::debug!(error = %e, "rebalancing leaders");
                }
            });
        }
        node.every(SNAPSHOT_CHECK_EVERY, |node| async move {
            node.snapshot_due_partitions().await;
        });
        tracing::info!(id = config.id, addr = %node.inner.addr, partitions = meta.partitions, "node started");
        Ok(node)
    }

    /// Runs `job` on the consensus runtime every `period` until the node
    /// shuts down. The task holds the node weakly: it never keeps a dropped
    /// node alive.
    fn every<F, Fut>(&self, period: Duration, job: F)
    where
        F: Fn(Node<SM>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        let task = self.inner.consensus.handle().spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                job(Node { inner }).await;
            }
        });
        self.inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Asks openraft for a snapshot of each partition whose log has grown
    /// enough behind its current one (`crate::snapshot::Backlog`).
    async fn snapshot_due_partitions(&self) {
        // Sizing takes the snapshot directory's lock, which a snapshot
        // being made current holds across a directory fsync: off the
        // consensus runtime's one worker.
        let stores: Vec<StateMachineStore<SM>> =
            self.inner.partitions.iter().map(|p| p.sm.clone()).collect();
        let backlogs = tokio::task::spawn_blocking(move || {
            stores
                .iter()
                .map(StateMachineStore::snapshot_backlog)
                .collect::<Vec<_>>()
        })
        .await;
        let backlogs = match backlogs {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "sizing the logs behind the snapshots");
                return;
            }
        };
        for ((p, part), backlog) in self.inner.partitions.iter().enumerate().zip(backlogs) {
            match backlog {
                Ok(Some(backlog)) if backlog.snapshot_due() => {
                    tracing::info!(partition = p, ?backlog, "snapshot due");
                    if let Err(e) = part.raft.trigger().snapshot().await {
                        tracing::debug!(partition = p, error = %e, "triggering a snapshot");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "sizing the log behind the snapshot")
                }
            }
        }
    }

    fn serve(&self, listener: tokio::net::TcpListener, secret: ClusterSecret) {
        let service = RaftInternalServer::new(Service { node: self.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let service = InterceptedService::new(service, move |r| secret.check(r));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(missive_proto::wire::incoming(listener), async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            });
        // On the consensus runtime, like the peers' channels: see the
        // module docs.
        let task = self.inner.consensus.handle().spawn(server);
        *self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ServerTask { stop, task });
    }

    /// Resolves once the node starts shutting down.
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.inner.stopping.subscribe();
        async move {
            // An error: the node is gone, which is stopping too.
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// How many partitions the cluster has.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    fn partition(&self, p: u32) -> Result<&Partition<SM>> {
        self.inner
            .partitions
            .get(p as usize)
            .ok_or(Error::UnknownPartition {
                partition: p,
                partitions: self.partitions(),
            })
    }

    /// The openraft instance of partition `p`.
    pub fn raft(&self, p: u32) -> Result<&PartitionRaft<SM>> {
        Ok(&self.partition(p)?.raft)
    }

    /// The state machine of partition `p` on this node, for reads.
    pub fn state_machine(&self, p: u32) -> Result<&StateMachineStore<SM>> {
        Ok(&self.partition(p)?.sm)
    }

    /// openraft's current metrics of partition `p`.
    pub fn metrics(&self, p: u32) -> Result<RaftMetrics<TypeConfig>> {
        Ok(self.raft(p)?.metrics().borrow_watched().clone())
    }

    /// Every partition as this node sees it.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: self.inner.id,
            partitions: self
                .inner
                .partitions
                .iter()
                .enumerate()
                .map(|(p, part)| {
                    PartitionStatus::from_metrics(p as u32, &part.raft.metrics().borrow_watched())
                })
                .collect(),
        }
    }

    /// A fresh path to receive a snapshot of partition `p` into.
    pub(crate) fn incoming_snapshot_path(&self, p: u32) -> Result<PathBuf> {
        let n = self.inner.incoming.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .partition(p)?
            .dir
            .join(INCOMING_DIR)
            .join(format!("{n}.snap")))
    }

    /// Sets what receives other nodes' relayed messages (once; later calls
    /// are ignored). Messages arriving before it is set are dropped.
    pub fn on_relay(&self, handler: RelayHandler) {
        let _ = self.inner.relay.set(handler);
    }

    /// Hands a message relayed by another node to the handler.
    pub(crate) fn deliver_relayed(&self, payload: Vec<u8>) {
        if let Some(h) = self.inner.relay.get() {
            h(payload);
        }
    }

    /// Sends an ephemeral message to every other member (of partition 0's
    /// membership: every node replicates every partition), at most once and
    /// best effort — for what is worth nothing late, like typing
    /// indicators. The calls run concurrently, each with
    /// [`RELAY_TIMEOUT`]; failures are only logged.
    pub async fn relay(&self, payload: Vec<u8>) {
        let Ok(members) = self.members(0) else {
            return;
        };
        let calls = members
            .into_iter()
            .filter(|(id, _)| *id != self.inner.id)
            .map(|(id, addr)| {
                self.inner.peers.learn(id, &addr);
                let payload = payload.clone();
                async move {
                    if let Err(e) = self.inner.peers.relay(id, payload, RELAY_TIMEOUT).await {
                        tracing::debug!(peer = id, error = %e, "relaying an ephemeral message");
                    }
                }
            });
        futures_util::future::join_all(calls).await;
    }

    /// Stops serving, shuts every partition down and waits until their logs
    /// are closed (so the directory can be reopened).
    pub async fn shutdown(&self) -> Result<()> {
        for task in take_all(&self.inner.background) {
            task.abort();
        }
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.inner.stopping.send_replace(true);
        if let Some(ServerTask { stop, task }) = server {
            let _ = stop.send(());
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "internal server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "internal server task failed"),
            }
        }
        for p in &self.inner.partitions {
            p.raft
                .shutdown()
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        for c in take_all(&self.inner.closed) {
            // Bounded: openraft's tasks drop their readers once shut down.
            if tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .is_err()
            {
                tracing::warn!("a partition log did not close within 10 s");
            }
        }
        Ok(())
    }

    /// The members of partition `p`'s membership, with addresses.
    fn members(&self, p: u32) -> Result<BTreeMap<NodeId, String>> {
        let m = self.metrics(p)?;
        Ok(m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect())
    }
}

/// Empties `m`, returning what it held.
fn take_all<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Where received snapshots are written, inside a partition directory.
const INCOMING_DIR: &str = "incoming";

/// The directory of partition `p` in a node's data directory.
pub fn partition_dir(data: &Path, p: u32) -> PathBuf {
    data.join(PARTITIONS_DIR).join(p.to_string())
}

/// Empties a partition's incoming directory: a transfer cut short by a crash
/// leaves a partial file nobody will use.
async fn reset_incoming(pdir: &Path) -> Result<()> {
    let dir = pdir.join(INCOMING_DIR);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", dir, e)),
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::io("create", dir, e))
}
