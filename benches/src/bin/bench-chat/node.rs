//! The node under test: one missive chat node in this process, initialized
//! as a one-node cluster the way `missive serve` does it, serving
//! `ChatService` on a loopback port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use missive_api::{Auth, Chat};
use missive_raft::{ClusterSecret, Node as Member, NodeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The node id of the one-node cluster.
const NODE_ID: u64 = 1;

/// The HS256 secret tokens are signed with (this process mints them all).
pub(crate) const JWT_SECRET: &[u8] = b"bench-chat: a secret of at least 32 bytes";

/// What the node's internal service checks (nothing calls it here).
const CLUSTER_SECRET: &str = "bench-chat-cluster";

/// How long the gRPC server may take to finish its calls at the stop.
const SERVE_STOP: Duration = Duration::from_secs(10);

/// A running node.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) chat: Chat,
    /// Where `ChatService` listens.
    pub(crate) addr: SocketAddr,
    /// Tells the gRPC server to stop.
    stop: Option<oneshot::Sender<()>>,
    /// The gRPC server.
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    /// Starts a node with its data in `data` and initializes its cluster.
    pub(crate) async fn start(data: &Path) -> Result<Node> {
        let internal = TcpListener::bind("127.0.0.1:0").await?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let secret = ClusterSecret::new(CLUSTER_SECRET)?;
        let config = NodeConfig::new(NODE_ID, data, secret)?;
        let auth = Auth::hs256(JWT_SECRET)?;
        let chat = Chat::start(config, auth, internal)
            .await
            .with_context(|| format!("starting a node in {}", data.display()))?;
        let members = BTreeMap::from([(NODE_ID, Member::new(chat.node().addr()))]);
        chat.node()
            .initialize(members)
            .await
            .context("initializing the one-node cluster")?;
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn({
            let chat = chat.clone();
            async move {
                chat.serve(grpc, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        Ok(Node {
            chat,
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.chat.node().partitions()
    }

    /// Messages whose push notifications are not settled yet, over every
    /// partition: the notifier's backlog.
    pub(crate) fn push_backlog(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let mut n = 0;
        for s in self.chat.stores() {
            let txn = s.read()?;
            n += txn.open_table(missive_api::store::PUSH_QUEUE)?.len()?;
        }
        Ok(n)
    }

    /// Stops serving, then stops the node (its logs closed, its stores
    /// made durable).
    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(SERVE_STOP, server).await {
                Ok(joined) => joined
                    .map_err(|e| anyhow!("the gRPC server task failed: {e}"))?
                    .context("serving ChatService")?,
                Err(_) => eprintln!("the gRPC server did not stop in {SERVE_STOP:?}"),
            }
        }
        self.chat.shutdown().await.context("stopping the node")
    }
}
