//! What every gateway test starts from: a real one-node chat cluster
//! (`missive_api::Chat`, started the way api/tests/grpc/support starts one) serving
//! ChatService on 127.0.0.1:0, a [`Gateway`] in front of it on another
//! 127.0.0.1:0 listener, and WebSocket clients (tokio-tungstenite) that
//! speak protocol v1 to it.
//!
//! The gateway reaches the node over gRPC, as a gateway process does; the
//! test holds the node directly only to mint tokens with its key. An
//! [`Env::local`] gateway reaches its node in-process instead, as `missive
//! serve`'s embedded gateway does, through the same `GatewayLink` code.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use missive_api::Chat;
use missive_api::auth::Auth;
use missive_gateway::link::{DownStream, LocalNode, UpStream};
use missive_gateway::{Gateway, Limits};
use missive_raft::{ClusterSecret, Node as Member, NodeConfig, NodeId};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const JWT_SECRET: &[u8] = b"missive gateway tests: a secret of 32+ bytes";
const CLUSTER_SECRET: &str = "missive-gateway-tests-cluster-secret";
const PARTITIONS: u32 = 2;
/// The longest any wait in these tests lasts before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

fn config(id: NodeId, dir: &Path, partitions: u32) -> NodeConfig {
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

/// A chat node serving ChatService.
pub struct Node {
    pub chat: Chat,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
}

impl Node {
    async fn start(id: NodeId, data: &Path) -> Node {
        let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let auth = Auth::hs256(JWT_SECRET).expect("a valid HS256 secret");
        let chat = Chat::start(config(id, data, PARTITIONS), auth, internal)
            .await
            .expect("start the chat node");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
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
        Node {
            chat,
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut served) = self.served.take()
            && timeout(Duration::from_secs(2), &mut served).await.is_err()
        {
            served.abort();
        }
        self.chat.shutdown().await.expect("shut the node down");
    }
}

/// Initializes the cluster of `nodes` from the first and waits until each
/// node knows a leader of every partition.
async fn initialize(nodes: &[Node]) {
    let members: BTreeMap<NodeId, Member> = nodes
        .iter()
        .map(|n| (n.chat.node().id(), Member::new(n.chat.node().addr())))
        .collect();
    let first = nodes[0].chat.node();
    let voters = first
        .metrics(0)
        .expect("partition 0")
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters == 0 {
        first.initialize(members).await.expect("initialize");
    }
    let deadline = Instant::now() + WAIT;
    for n in nodes {
        let node = n.chat.node();
        while !(0..node.partitions())
            .all(|p| node.metrics(p).expect("partition").current_leader.is_some())
        {
            assert!(Instant::now() < deadline, "no leaders");
            sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Nodes and a gateway in front of them.
pub struct Env {
    /// The nodes; the gateway prefers the first.
    pub nodes: Vec<Node>,
    pub gateway: Gateway,
    /// Where the gateway listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub served: Option<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        Env::with(Limits::default()).await
    }

    pub async fn with(limits: Limits) -> Env {
        Env::cluster(1, limits).await
    }

    /// `n` nodes, every one of them known to the gateway.
    pub async fn cluster(n: u64, limits: Limits) -> Env {
        Env::build(n, limits, |gw, _, _| gw).await
    }

    /// One node and a gateway in the same process that reaches it without
    /// gRPC ([`Gateway::local`]), as `missive serve` runs them.
    pub async fn local(limits: Limits) -> Env {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes = vec![Node::start(1, &dir.path().join("1")).await];
        initialize(&nodes).await;
        let node = Arc::new(InProcess(missive_api::service::Link::new(&nodes[0].chat)));
        let gateway = Gateway::local(node, limits);
        Env::serve(nodes, gateway, dir).await
    }

    /// `n` nodes and a gateway that `configure` finishes (media, development
    /// login), given the test's directory and the first node's chat.
    pub async fn build(
        n: u64,
        limits: Limits,
        configure: impl FnOnce(Gateway, &Path, &Chat) -> Gateway,
    ) -> Env {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node::start(id, &dir.path().join(id.to_string())).await);
        }
        initialize(&nodes).await;
        let addrs = nodes.iter().map(|n| n.addr.to_string()).collect();
        let gateway = Gateway::new(addrs, limits).expect("a gateway");
        let gateway = configure(gateway, dir.path(), &nodes[0].chat);
        Env::serve(nodes, gateway, dir).await
    }

    /// Serves `gateway` on a listener of its own.
    async fn serve(nodes: Vec<Node>, gateway: Gateway, dir: tempfile::TempDir) -> Env {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn({
            let gw = gateway.clone();
            async move {
                gw.serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve the gateway");
            }
        });
        Env {
            nodes,
            gateway,
            addr,
            stop: Some(stop),
            served: Some(served),
            dir,
        }
    }

    /// A token of `user` on device `dev`.
    pub fn token(&self, user: &str) -> String {
        self.nodes[0]
            .chat
            .auth()
            .mint(user, Some("dev"), 3600)
            .expect("mint a token")
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A connected, unauthenticated client.
    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.url())
            .await
            .expect("connect to the gateway");
        Ws::new(ws)
    }

    /// A client authenticated as `user`.
    pub async fn login(&self, user: &str) -> Ws {
        let mut ws = self.connect().await;
        let r = ws.call("auth", json!({ "token": self.token(user) })).await;
        assert_eq!(r["type"], "result", "auth: {r}");
        ws
    }

    /// Stops the gateway's `serve` (graceful shutdown).
    pub fn stop_gateway(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The node's end of an in-process link, as the binary joins them.
#[derive(Debug)]
struct InProcess(missive_api::service::Link);

impl LocalNode for InProcess {
    fn open(&self, up: UpStream) -> DownStream {
        self.0.open(up)
    }
}

/// A protocol v1 client. Frames that are not the answer waited for are kept,
/// in order, for [`Ws::next_frame`].
pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pending: VecDeque<Value>,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum End {
    Closed(Option<u16>),
    /// Reset or EOF without a close frame.
    Dropped,
}

impl Ws {
    pub fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        Ws {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    /// Sends a request frame without waiting; its req_id.
    pub async fn send(&mut self, kind: &str, fields: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = fields;
        frame["type"] = json!(kind);
        frame["req_id"] = json!(id);
        self.send_text(frame.to_string()).await;
        id
    }

    /// The next JSON frame (skipping control frames); panics on close.
    pub async fn read(&mut self) -> Value {
        loop {
            let m = timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("the connection ended")
                .expect("a frame");
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a request and waits for its answer (`result` or `error`).
    pub async fn call(&mut self, kind: &str, fields: Value) -> Value {
        let id = self.send(kind, fields).await;
        self.answer(id).await
    }

    /// The answer to request `id`, keeping other frames for later.
    pub async fn answer(&mut self, id: u64) -> Value {
        if let Some(i) = self.pending.iter().position(|f| f["req_id"] == json!(id)) {
            return self.pending.remove(i).expect("present");
        }
        loop {
            let f = self.read().await;
            if f["req_id"] == json!(id) && f["type"] != "event" {
                return f;
            }
            self.pending.push_back(f);
        }
    }

    /// A request's `data`; panics on an error.
    pub async fn ok(&mut self, kind: &str, fields: Value) -> Value {
        let r = self.call(kind, fields.clone()).await;
        assert_eq!(r["type"], "result", "{kind} {fields}: {r}");
        r["data"].clone()
    }

    /// The next frame that is not an answer, in order.
    pub async fn next_frame(&mut self) -> Value {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        self.read().await
    }

    /// The next event frame for which `keep` holds, skipping others.
    pub async fn next_event_where(&mut self, keep: impl Fn(&Value) -> bool) -> Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] == "event" && keep(&f["event"]) {
                return f;
            }
        }
    }

    /// Subscribes from `since`; returns when the result arrived.
    pub async fn subscribe(&mut self, since: &str) {
        self.ok("subscribe", json!({ "since": since })).await;
    }

    /// Events up to `caught_up`: the events and caught_up's token.
    pub async fn until_caught_up(&mut self) -> (Vec<Value>, String) {
        let mut events = Vec::new();
        loop {
            let f = self.next_frame().await;
            match f["type"].as_str() {
                Some("event") => events.push(f),
                Some("caught_up") => {
                    return (events, f["token"].as_str().expect("a token").to_owned());
                }
                _ => panic!("unexpected frame {f}"),
            }
        }
    }

    /// Reads until the connection ends; how it ended, and the frames read.
    pub async fn until_end(&mut self, within: Duration) -> (End, Vec<Value>) {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await {
                Err(_) => panic!("the connection did not end within {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return (End::Dropped, frames),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return (
                        End::Closed(f.map(|f: CloseFrame| u16::from(f.code))),
                        frames,
                    );
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON"));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// True for a presence event (they come whenever someone connects).
pub fn is_presence(e: &Value) -> bool {
    e["kind"] == "presence"
}
