//! A client of one node's internal service, for the operators' commands:
//! every call carries the cluster secret and a deadline.

use std::time::Duration;

use anyhow::Context;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use missive_raft::ClusterSecret;
use tonic::transport::{Channel, Endpoint};

/// How long a command's call may take (adding a node waits for it to catch
/// up, so this is generous).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected client and the secret it sends.
#[derive(Debug)]
pub struct NodeClient {
    /// The generated client over one channel.
    pub client: RaftInternalClient<Channel>,
    /// Added to every call.
    secret: ClusterSecret,
}

impl NodeClient {
    /// Connects to the node at `addr` (`host:port`).
    pub async fn connect(addr: &str, secret: ClusterSecret) -> anyhow::Result<NodeClient> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(NodeClient {
            client: RaftInternalClient::new(channel),
            secret,
        })
    }

    /// A request with the secret and a deadline of `timeout`.
    pub fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        self.secret.attach(&mut r);
        r
    }
}

/// Runs `f` on a fresh current-thread runtime: the client commands make a
/// few calls and exit.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(f)
}
