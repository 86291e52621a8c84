//! [`Peers`]: the client side of the internal transport.
//!
//! One tonic `Channel` per peer, created lazily at the first call and shared
//! by every partition (a channel multiplexes calls over one HTTP/2
//! connection and reconnects by itself). The number of channels is bounded
//! by the number of nodes in the partitions' memberships. Each call carries
//! the cluster secret and has a deadline: openraft's `RPCOption::hard_ttl`
//! for Raft calls, the caller's for the others.
//!
//! Forwarded writes go over one `Writes` stream per peer (see `writes`),
//! opened at the first write to it and again after it ends, rather than one
//! `Forward` call each.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::{Either, select};
use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use openraft::RaftNetworkFactory;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::MAX_MESSAGE_BYTES;
use super::secret::ClusterSecret;
use super::snapshot_stream;
use super::writes::WriteStream;
use crate::SnapshotFile;
use crate::pb as conv;
use crate::sm_store::RaftSnapshot;
use crate::types::{Node, NodeId, TypeConfig, Vote};

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which of Raft's two ballots a vote request is.
#[derive(Clone, Copy, Debug)]
enum Ballot {
    Vote,
    PreVote,
}

/// The shared client of every peer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Peers {
    /// Shared by every partition's network factory.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Added to every call.
    secret: ClusterSecret,
    /// Where the channels' tasks run: their connections and request queues.
    runtime: tokio::runtime::Handle,
    /// Each peer's address and its channel. A std `Mutex`: held only to look
    /// up or insert, never across an `.await`.
    channels: Mutex<HashMap<NodeId, Peer>>,
}

/// How one peer is reached.
#[derive(Debug)]
struct Peer {
    addr: String,
    channel: Channel,
    /// The write stream to it, once opened. A tokio mutex, one per peer:
    /// opening awaits, the writes that arrive meanwhile wait for that one
    /// rather than open their own, and a peer that does not answer holds up
    /// only the writes for it.
    writes: Arc<tokio::sync::Mutex<Option<Arc<WriteStream>>>>,
}

impl Peers {
    /// Peers called with `secret`, whose channels' tasks run on `runtime`.
    pub fn new(secret: ClusterSecret, runtime: tokio::runtime::Handle) -> Peers {
        Peers {
            inner: Arc::new(Inner {
                secret,
                runtime,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Records where `id` is reached (membership entries carry addresses).
    pub fn learn(&self, id: NodeId, addr: &str) {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if channels.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        match channel_to(addr, &self.inner.runtime) {
            Ok(channel) => {
                let peer = Peer {
                    addr: addr.to_owned(),
                    channel,
                    writes: Arc::default(),
                };
                channels.insert(id, peer);
            }
            Err(e) => tracing::warn!(id, addr, error = %e, "peer address is not usable"),
        }
    }

    /// A client of node `id`, if its address is known.
    fn client(&self, id: NodeId) -> Result<RaftInternalClient<Channel>, Status> {
        self.peer(id, |p| client_of(p.channel.clone()))
    }

    /// `f` of node `id`'s entry, if its address is known.
    fn peer<T>(&self, id: NodeId, f: impl FnOnce(&Peer) -> T) -> Result<T, Status> {
        let channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        channels.get(&id).map(f).ok_or_else(|| unknown_address(id))
    }

    /// The open write stream to node `id`, opening one if there is none or
    /// the last has ended. Fails as opening the call does (nothing is sent).
    async fn write_stream(&self, id: NodeId) -> Result<Arc<WriteStream>, Status> {
        let slot = self.peer(id, |p| p.writes.clone())?;
        let mut slot = slot.lock().await;
        if let Some(stream) = slot.as_ref()
            && !stream.is_broken()
        {
            return Ok(stream.clone());
        }
        *slot = None;
        let (addr, channel) = self.peer(id, |p| (p.addr.clone(), p.channel.clone()))?;
        // Opened on the runtime the channel's tasks run on, where the
        // stream's reader is then spawned: it must live as long as the
        // channel, not as long as whichever runtime made the first write.
        let secret = self.inner.secret.clone();
        let opening = self.inner.runtime.spawn(async move {
            WriteStream::open(channel, &addr, &secret, MAX_MESSAGE_BYTES).await
        });
        let stream = opening
            .await
            .map_err(|e| Status::unavailable(format!("opening a write stream: {e}")))??;
        let stream = Arc::new(stream);
        *slot = Some(stream.clone());
        Ok(stream)
    }

    /// A request carrying `msg`, the secret and a deadline of `timeout`.
    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(timeout);
        self.inner.secret.attach(&mut r);
        r
    }

    /// Sends a vote or pre-vote request: the two differ only in the RPC.
    async fn ballot(
        &self,
        target: NodeId,
        partition: u32,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        kind: Ballot,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client(target).map_err(|s| rpc_error(target, s))?;
        let ttl = option.hard_ttl();
        let req = self.request(conv::vote_request_to_pb(partition, &rpc), ttl);
        let call = async {
            match kind {
                Ballot::Vote => client.vote(req).await,
                Ballot::PreVote => client.pre_vote(req).await,
            }
        };
        let resp = deadline(ttl, call)
            .await
            .map_err(|s| rpc_error(target, s))?;
        conv::vote_response_from_pb(&resp).map_err(|e| malformed_reply(target, e))
    }

    /// Sends a client write to node `leader`, which must lead `partition`,
    /// over its write stream. A failure to open the stream means nothing
    /// was sent; any other failure leaves the write's fate unknown.
    pub async fn forward(
        &self,
        leader: NodeId,
        partition: u32,
        command: pb::Command,
        timeout: Duration,
    ) -> Result<pb::ForwardResponse, Status> {
        let started = tokio::time::Instant::now();
        let stream = deadline_of(timeout, self.write_stream(leader)).await?;
        let write = pb::ForwardRequest {
            partition,
            command: Some(command),
            relayed: true,
        };
        stream
            .write(write, timeout.saturating_sub(started.elapsed()))
            .await
    }

    /// Sends an ephemeral application message to node `target`.
    pub async fn relay(
        &self,
        target: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<pb::RelayResponse, Status> {
        let mut client = self.client(target)?;
        let req = self.request(pb::RelayRequest { payload }, timeout);
        deadline(timeout, client.relay(req)).await
    }

    /// Sends a membership change to node `target` (the leader of the
    /// partition the request names).
    pub async fn add_node(
        &self,
        target: NodeId,
        req: pb::AddNodeRequest,
        timeout: Duration,
    ) -> Result<pb::AdminResponse, Status> {
        let mut client = self.client(target)?;
        let req = self.request(req, timeout);
        deadline(timeout, client.add_node(req)).await
    }

    /// As [`Peers::add_node`], removing.
    pub async fn remove_node(
        &self,
        target: NodeId,
        req: pb::RemoveNodeRequest,
        timeout: Duration,
    ) -> Result<pb::AdminResponse, Status> {
        let mut client = self.client(target)?;
        let req = self.request(req, timeout);
        deadline(timeout, client.remove_node(req)).await
    }
}

/// A client over `ch` accepting messages as large as the server does.
pub(crate) fn client_of(ch: Channel) -> RaftInternalClient<Channel> {
    RaftInternalClient::new(ch)
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES)
}

/// A lazily connected channel to `addr` (`host:port`), its tasks on
/// `runtime`.
pub(crate) fn channel_to(
    addr: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .executor(OnRuntime(runtime.clone()));
    Ok(missive_proto::wire::connect_lazy(&endpoint))
}

/// Spawns a channel's tasks on one runtime.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> for OnRuntime {
    fn execute(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(task);
    }
}

/// Runs `call` for at most `timeout`, whatever the server does with the
/// deadline it was sent.
async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    deadline_of(timeout, async {
        call.await.map(tonic::Response::into_inner)
    })
    .await
}

/// Runs `f` for at most `timeout`.
async fn deadline_of<T>(
    timeout: Duration,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        )))
    })
}

fn unknown_address(id: NodeId) -> Status {
    Status::unavailable(format!("no known address for node {id}"))
}

/// openraft's view of a failed call: an unreachable peer is backed off, any
/// other failure retried.
fn rpc_error(target: NodeId, status: Status) -> RPCError<TypeConfig> {
    let status = Status::new(
        status.code(),
        format!("node {target}: {}", status.message()),
    );
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn malformed_reply(target: NodeId, e: conv::Malformed) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("node {target}: {e}")))
}

impl GroupRouter<TypeConfig, u32> for Peers {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &self,
        target: NodeId,
        partition: u32,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client(target).map_err(|s| rpc_error(target, s))?;
        let ttl = option.hard_ttl();
        let req = self.request(conv::append_to_pb(partition, rpc), ttl);
        let resp = deadline(ttl, client.append_entries(req))
            .await
            .map_err(|s| rpc_error(target, s))?;
        conv::append_response_from_pb(resp).map_err(|e| malformed_reply(target, e))
    }

    async fn vote(
        &self,
        target: NodeId,
        partition: u32,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ballot(target, partition, rpc, option, Ballot::Vote)
            .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        partition: u32,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ballot(target, partition, rpc, option, Ballot::PreVote)
            .await
    }

    /// Streams the snapshot file. The deadline grows with its size: one
    /// `hard_ttl` per chunk, plus one for the answer.
    async fn full_snapshot(
        &self,
        target: NodeId,
        partition: u32,
        vote: Vote,
        snapshot: RaftSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable = |s: Status| -> StreamingError<TypeConfig> {
            match rpc_error(target, s) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }
        };
        let mut client = self.client(target).map_err(unreachable)?;
        let (chunks, len) = snapshot_stream::send(partition, &vote, snapshot.snapshot)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let n_chunks = len / snapshot_stream::SNAPSHOT_CHUNK_BYTES as u64 + 2;
        let ttl = option
            .hard_ttl()
            .saturating_mul(u32::try_from(n_chunks).unwrap_or(u32::MAX));
        let req = self.request(chunks, ttl);
        let call = pin!(deadline(ttl, client.install_snapshot(req)));
        let cancel = pin!(cancel);
        let resp = match select(call, cancel).await {
            Either::Left((r, _)) => r.map_err(unreachable)?,
            Either::Right((closed, _)) => return Err(StreamingError::Closed(closed)),
        };
        let vote = conv::vote_from_pb(resp.vote.as_ref())
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        partition: u32,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client(target).map_err(|s| rpc_error(target, s))?;
        let ttl = option.hard_ttl();
        let wire = self.request(conv::transfer_to_pb(partition, &req), ttl);
        let resp = deadline(ttl, client.transfer_leader(wire))
            .await
            .map_err(|s| rpc_error(target, s))?;
        if resp.rejected.is_empty() {
            Ok(Ok(()))
        } else {
            // The reason travels as text; openraft only logs it. Reported as
            // the log not being there yet, the refusal openraft retries.
            tracing::debug!(target, partition, reason = %resp.rejected, "transfer leader refused");
            Ok(Err(TransferLeaderError::LogNotFlushed {
                expected: req.last_log_id().copied(),
                actual: None,
            }))
        }
    }
}

/// openraft's network factory for one partition: every connection it asks
/// for is the shared channel of the peer, bound to this partition.
#[derive(Clone, Debug)]
pub struct PartitionNetwork {
    /// The shared channels.
    pub peers: Peers,
    /// The partition this factory serves.
    pub partition: u32,
}

impl RaftNetworkFactory<TypeConfig> for PartitionNetwork {
    type Network = GroupNetworkAdapter<TypeConfig, u32, Peers>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        self.peers.learn(target, &node.addr);
        GroupNetworkAdapter::new(self.peers.clone(), target, self.partition)
    }
}
