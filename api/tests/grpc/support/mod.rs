//! What every ChatService integration test starts from: real chat nodes
//! (`Chat::start`) in a temporary directory, initialized as a cluster the
//! way `missive serve` initializes its one-node cluster, each serving
//! `ChatService` over gRPC on a 127.0.0.1:0 listener; and tonic clients of
//! it that present `authorization: Bearer <JWT>` minted with the nodes'
//! HS256 secret.
//!
//! Raft timers are short (50 ms heartbeats) so elections and fail-overs
//! take a fraction of a second, and every wait is a poll with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use missive_api::auth::Auth;
use missive_api::{Chat, ChatOptions};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_service_client::ChatServiceClient;
use missive_proto::v1::subscribe_response::Kind;
use missive_raft::{ClusterSecret, Node as Member, NodeConfig, NodeId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The JWT secret of every test node.
pub const JWT_SECRET: &[u8] = b"missive api integration tests: a 32+ byte secret";
/// What nodes present to each other.
pub const CLUSTER_SECRET: &str = "missive-api-tests-cluster-secret";
/// Partitions of a one-node cluster: more than one, so a conversation and
/// its members' own state (presence, keys) may live in different ones.
pub const PARTITIONS: u32 = 2;
/// Partitions of the three-node cluster: one led by each node.
pub const PARTITIONS_3: u32 = 3;
/// The longest any wait in these tests lasts before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `ChatService` client whose calls carry one fixed `authorization`.
pub type Client = ChatServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization` (when set) to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The test nodes' authentication.
pub fn auth() -> Auth {
    Auth::hs256(JWT_SECRET).expect("a valid HS256 secret")
}

/// A node's configuration with short raft timers.
pub fn config(id: NodeId, dir: &Path, partitions: u32) -> NodeConfig {
    let mut c = NodeConfig::new(
        id,
        dir,
        ClusterSecret::new(CLUSTER_SECRET).expect("a valid cluster secret"),
    )
    .expect("a node config");
    c.partitions = Some(partitions);
    let mut raft = (*c.raft).clone();
    raft.heartbeat_interval = 50;
    raft.election_timeout_min = 200;
    raft.election_timeout_max = 400;
    c.raft = Arc::new(raft.validate().expect("valid raft timers"));
    c
}

/// A running chat node and its `ChatService` server.
pub struct TestNode {
    pub chat: Chat,
    /// Where `ChatService` listens.
    pub addr: SocketAddr,
    /// The node's data directory.
    pub data: PathBuf,
    /// Stops the `ChatService` server.
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Starts node `id` on `data` (new or existing) and serves `ChatService`.
    pub async fn start(id: NodeId, data: &Path, partitions: u32) -> TestNode {
        Self::start_with(id, data, partitions, ChatOptions::default()).await
    }

    /// [`TestNode::start`] with other background timings (push retries,
    /// presence sweeps).
    pub async fn start_with(
        id: NodeId,
        data: &Path,
        partitions: u32,
        options: ChatOptions,
    ) -> TestNode {
        let internal = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the internal listener");
        let chat = Chat::start_with(config(id, data, partitions), auth(), internal, options)
            .await
            .expect("start the chat node");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the ChatService listener");
        let addr = listener.local_addr().expect("listener address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn({
            let chat = chat.clone();
            async move {
                chat.serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve ChatService");
            }
        });
        TestNode {
            chat,
            addr,
            data: data.to_owned(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// A client of this node calling as `user` on `device`.
    pub fn client(&self, user: &str, device: &str) -> Client {
        let token = self
            .chat
            .auth()
            .mint(user, Some(device), 3600)
            .expect("mint a token");
        self.client_with(Some(&format!("Bearer {token}")))
    }

    /// A client sending `authorization: <header>` (none when `None`).
    pub fn client_with(&self, header: Option<&str>) -> Client {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("an endpoint")
            .connect_lazy();
        let value = header.map(|h| h.parse().expect("an ASCII header"));
        ChatServiceClient::with_interceptor(channel, Bearer(value))
    }

    /// Stops serving `ChatService` and shuts the node down. Connections
    /// still open (live subscriptions) are cut after a short grace.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut served) = self.served.take()
            && timeout(Duration::from_secs(2), &mut served).await.is_err()
        {
            served.abort();
        }
        self.chat.shutdown().await.expect("shut the node down");
    }
}

/// Nodes in a temporary directory.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    /// Removed when the cluster is dropped.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A one-node cluster, initialized with itself, every partition led.
    pub async fn one() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let node = TestNode::start(1, &dir.path().join("1"), PARTITIONS).await;
        initialize(std::slice::from_ref(&node)).await;
        Cluster {
            nodes: vec![node],
            dir,
        }
    }

    /// Three nodes, initialized from node 1 with all three as members
    /// (missive-raft spreads the partitions' leaders over them).
    pub async fn three() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for id in 1..=3 {
            nodes.push(TestNode::start(id, &dir.path().join(id.to_string()), PARTITIONS_3).await);
        }
        initialize(&nodes).await;
        Cluster { nodes, dir }
    }

    /// The first node.
    pub fn node(&self) -> &TestNode {
        &self.nodes[0]
    }

    /// A client of the first node.
    pub fn client(&self, user: &str, device: &str) -> Client {
        self.nodes[0].client(user, device)
    }
}

/// Initializes the cluster of `nodes` from the first (unless it already
/// is) and waits until every node sees a leader of every partition.
pub async fn initialize(nodes: &[TestNode]) {
    let first = nodes[0].chat.node();
    let voters = first
        .metrics(0)
        .expect("partition 0")
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters == 0 {
        let members: BTreeMap<NodeId, Member> = nodes
            .iter()
            .map(|n| (n.chat.node().id(), Member::new(n.chat.node().addr())))
            .collect();
        first
            .initialize(members)
            .await
            .expect("initialize the cluster");
    }
    wait_for_leaders(nodes).await;
}

/// Waits until every node of `nodes` knows a leader of every partition,
/// one of `nodes`.
pub async fn wait_for_leaders(nodes: &[TestNode]) {
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.chat.node().id()).collect();
    eventually("every partition to have a leader", || {
        let ready = nodes.iter().all(|n| {
            let node = n.chat.node();
            (0..node.partitions()).all(|p| {
                node.metrics(p)
                    .expect("partition")
                    .current_leader
                    .is_some_and(|l| ids.contains(&l))
            })
        });
        async move { ready.then_some(()) }
    })
    .await;
}

/// Polls `check` every 20 ms until it gives a value; fails after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Plain text content.
pub fn text(s: &str) -> pb::Content {
    pb::Content {
        text: s.to_owned(),
        ..Default::default()
    }
}

/// Sends `body` as text with `client_msg_id` `id`.
pub async fn send(c: &mut Client, conv: &str, id: &str, body: &str) -> pb::SendResponse {
    c.send(pb::SendRequest {
        conversation_id: conv.to_owned(),
        client_msg_id: id.to_owned(),
        content: Some(text(body)),
        reply_to: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("send {id:?} to {conv}: {e}"))
    .into_inner()
}

/// Creates (or finds) the direct conversation with `peer`; its id.
pub async fn direct(c: &mut Client, peer: &str) -> String {
    c.create_direct(pb::CreateDirectRequest {
        peer: peer.to_owned(),
    })
    .await
    .expect("create a direct conversation")
    .into_inner()
    .conversation_id
}

/// Creates a group of the caller and `members`; its id.
pub async fn group(c: &mut Client, name: &str, members: &[&str]) -> String {
    c.create_group(pb::CreateGroupRequest {
        name: name.to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    })
    .await
    .expect("create a group")
    .into_inner()
    .conversation_id
}

/// Every message of `conv`, oldest first (at most 200).
pub async fn history(c: &mut Client, conv: &str) -> Vec<pb::Message> {
    let mut page = c
        .history(pb::HistoryRequest {
            conversation_id: conv.to_owned(),
            before: 0,
            after: 0,
            limit: 200,
        })
        .await
        .expect("history")
        .into_inner();
    assert!(!page.more, "more than one page of history");
    page.messages.reverse();
    page.messages
}

/// The conversation as its member sees it.
pub async fn conversation(c: &mut Client, conv: &str) -> pb::Conversation {
    c.get_conversation(pb::ConversationRequest {
        conversation_id: conv.to_owned(),
    })
    .await
    .expect("get the conversation")
    .into_inner()
}

/// The text of a message (empty when it has none).
pub fn body(m: &pb::Message) -> &str {
    m.content.as_ref().map_or("", |c| c.text.as_str())
}

/// Asserts `r` failed with `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: tonic::Code, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(s) => assert_eq!(s.code(), code, "{what}: {s:?}"),
    }
}

/// A live `Subscribe` stream.
pub struct Sub {
    stream: tonic::Streaming<pb::SubscribeResponse>,
}

/// An event with the token that follows it.
#[derive(Clone, Debug)]
pub struct Ev {
    pub event: pb::ChatEvent,
    pub token: String,
}

impl Sub {
    /// Subscribes `c` from `since` ("" for now).
    pub async fn open(c: &mut Client, since: &str) -> Sub {
        Sub::try_open(c, since).await.expect("subscribe")
    }

    pub async fn try_open(c: &mut Client, since: &str) -> Result<Sub, tonic::Status> {
        let stream = c
            .subscribe(pb::SubscribeRequest {
                since: since.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Sub { stream })
    }

    /// The next response; fails after [`WAIT`] or if the stream ends.
    pub async fn next(&mut self) -> pb::SubscribeResponse {
        self.try_next()
            .await
            .expect("the subscription failed")
            .expect("the subscription ended")
    }

    /// The next response, or the stream's end or error.
    pub async fn try_next(&mut self) -> Result<Option<pb::SubscribeResponse>, tonic::Status> {
        timeout(WAIT, self.stream.message())
            .await
            .expect("timed out waiting for a subscription response")
    }

    /// Responses up to and including `CaughtUp`: the replayed events and
    /// the token `CaughtUp` carries.
    pub async fn until_caught_up(&mut self) -> (Vec<Ev>, String) {
        let mut events = Vec::new();
        loop {
            let r = self.next().await;
            match r.kind.expect("a response has a kind") {
                Kind::Event(event) => events.push(Ev {
                    event,
                    token: r.token,
                }),
                Kind::CaughtUp(_) => return (events, r.token),
                Kind::Resync(why) => panic!("unexpected resync: {why:?}"),
            }
        }
    }

    /// The next event for which `keep` holds, skipping others (presence
    /// changes arrive whenever someone comes or goes).
    pub async fn next_where(&mut self, keep: impl Fn(&pb::ChatEvent) -> bool) -> Ev {
        loop {
            let r = self.next().await;
            match r.kind.expect("a response has a kind") {
                Kind::Event(event) if keep(&event) => {
                    return Ev {
                        event,
                        token: r.token,
                    };
                }
                Kind::Event(_) => {}
                other => panic!("unexpected response {other:?}"),
            }
        }
    }

    /// The next conversation event (anything but presence).
    pub async fn next_conv_event(&mut self) -> Ev {
        self.next_where(|e| !is_presence(e)).await
    }

    /// Reads events until none has come for `quiet`; the token of the last
    /// one read, if any.
    pub async fn drain(&mut self, quiet: Duration) -> Option<String> {
        let mut last = None;
        loop {
            match timeout(quiet, self.stream.message()).await {
                Err(_) => return last,
                Ok(Ok(Some(r))) => last = Some(r.token),
                Ok(other) => panic!("the subscription ended: {other:?}"),
            }
        }
    }

    /// Asserts no event but presence arrives within `quiet`.
    pub async fn assert_no_conv_event(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(r))) => match r.kind {
                    Some(Kind::Event(e)) if is_presence(&e) => {}
                    other => panic!("expected nothing, got {other:?}"),
                },
                Ok(other) => panic!("the subscription ended: {other:?}"),
            }
        }
    }
}

/// True for a presence change.
pub fn is_presence(e: &pb::ChatEvent) -> bool {
    matches!(e.kind, Some(pb::chat_event::Kind::Presence(_)))
}
