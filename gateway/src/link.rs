//! The gateway's end of `GatewayLink`: every call and subscription of the
//! gateway's users towards one node, on one bidirectional stream
//! (docs/gateway-link.md).
//!
//! A node in another process is reached over gRPC (`GatewayLink/Link`); a
//! node in the gateway's own process (`missive serve`) is handed the same
//! request and response messages directly ([`LocalNode`]), with no HTTP/2
//! and no encoding of the link's frames (docs/gateway-link.md, "In one
//! process"). Everything else here is the same for both.
//!
//! A [`Link`] opens its stream on first use and again after it breaks.
//! Requests are numbered; a reader task routes each answer to whoever waits
//! for its number, and never waits itself: a subscription whose queue here
//! is full is ended (its client subscribes again from its token) rather
//! than hold up every other user's answers. When the stream breaks, every
//! waiting call and every subscription on it fails as UNAVAILABLE, the
//! status the rest of the gateway treats as "try the next node".

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};

use missive_proto::v1 as pb;
use missive_proto::v1::gateway_link_client::GatewayLinkClient;
use missive_proto::v1::link_request::Kind as Up;
use missive_proto::v1::link_response::Kind as Down;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Requests queued towards the node, at most; past that, callers wait.
const UP_QUEUE: usize = 4096;

/// Requests gathered into one `LinkUp`, at most.
const MAX_BATCH: usize = 512;

/// Responses queued for one subscription before it is ended as lagging.
/// Its reader only moves them to the client's own bounded queue, so this
/// fills only when that task cannot run.
const SUB_QUEUE: usize = 256;

/// The requests of one link, as the node reads them.
pub type UpStream = Pin<Box<dyn Stream<Item = Result<pb::LinkUp, Status>> + Send>>;

/// Everything a node sends back on one link.
pub type DownStream = Pin<Box<dyn Stream<Item = Result<pb::LinkDown, Status>> + Send>>;

/// A node in the gateway's own process. It serves a link exactly as its
/// `GatewayLink` service serves one over gRPC, minus the transport: the
/// gateway stays free of the node's crates, and the binary that holds
/// both joins them.
pub trait LocalNode: Send + Sync + std::fmt::Debug {
    /// Serves one link: requests from `up`, answers and events on the
    /// stream returned.
    fn open(&self, up: UpStream) -> DownStream;
}

/// How a link's stream reaches its node.
#[derive(Debug)]
enum Transport {
    Grpc {
        channel: Channel,
        max_message_bytes: usize,
    },
    Local(Arc<dyn LocalNode>),
}

/// One node's link.
#[derive(Debug)]
pub struct Link {
    addr: String,
    transport: Transport,
    /// The open stream, if any. A tokio mutex: opening one awaits, and the
    /// users that arrive meanwhile wait for it rather than open their own.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

/// One open stream.
#[derive(Debug)]
struct Conn {
    addr: String,
    up: mpsc::Sender<pb::LinkRequest>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// Set by the reader when the stream ended; no answer comes after.
    broken: AtomicBool,
}

#[derive(Debug)]
enum Waiter {
    Call(oneshot::Sender<Result<Vec<u8>, Status>>),
    Sub(SubWaiter),
}

#[derive(Debug)]
struct SubWaiter {
    /// Until the node says the subscription is open (or refuses it).
    opened: Option<oneshot::Sender<Result<(), Status>>>,
    tx: mpsc::Sender<Item>,
    /// Set when the queue overflowed and the subscription was ended here.
    lagged: Arc<AtomicBool>,
}

// Nearly every item is a response: boxing them to shrink the rare `End`
// would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Item {
    Response(pb::SubscribeResponse),
    /// The node ended the subscription with this status (OK: it is stopping).
    End(Status),
}

fn broken(addr: &str) -> Status {
    Status::unavailable(format!("the link to node {addr} is down"))
}

impl Link {
    /// A link to the node at `addr`, over `channel`.
    pub fn new(addr: String, channel: Channel, max_message_bytes: usize) -> Link {
        Link {
            addr,
            transport: Transport::Grpc {
                channel,
                max_message_bytes,
            },
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// A link to `node`, in this process; `name` stands for its address in
    /// logs and errors.
    pub fn local(name: String, node: Arc<dyn LocalNode>) -> Link {
        Link {
            addr: name,
            transport: Transport::Local(node),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The open stream, opening one if there is none.
    async fn conn(&self) -> Result<Arc<Conn>, Status> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.broken.load(Ordering::Acquire)
        {
            return Ok(c.clone());
        }
        *slot = None;
        let (up, mut rx) = mpsc::channel::<pb::LinkRequest>(UP_QUEUE);
        // Each poll sends whatever requests are ready as one message.
        let requests = futures_util::stream::poll_fn(move |cx| {
            let Some(first) = std::task::ready!(rx.poll_recv(cx)) else {
                return std::task::Poll::Ready(None);
            };
            let mut requests = vec![first];
            while requests.len() < MAX_BATCH
                && let Ok(r) = rx.try_recv()
            {
                requests.push(r);
            }
            std::task::Poll::Ready(Some(pb::LinkUp { requests }))
        });
        let conn = Arc::new(Conn {
            addr: self.addr.clone(),
            up,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            broken: AtomicBool::new(false),
        });
        match &self.transport {
            Transport::Grpc {
                channel,
                max_message_bytes,
            } => {
                let mut client = GatewayLinkClient::new(channel.clone())
                    .max_decoding_message_size(*max_message_bytes)
                    .max_encoding_message_size(*max_message_bytes);
                let down = client.link(requests).await?.into_inner();
                tokio::spawn(read(conn.clone(), Box::pin(down)));
            }
            // In one process the reader also drives the node's side of the
            // link: each poll of `down` gathers the node's answers and
            // events from its queues, and every such receive spends the
            // task's cooperative budget (128 a turn), after which tokio
            // sends the task to the back of a run queue it shares with
            // every WebSocket of the gateway. Everyone's events would then
            // move 128 at a time per turn of the whole queue. Unbudgeted,
            // the reader takes what is ready and yields when nothing is:
            // routing never waits (see `route`), so it cannot hold a worker
            // for longer than the node keeps it supplied.
            Transport::Local(node) => {
                let down = node.open(Box::pin(requests.map(Ok)));
                tokio::spawn(tokio::task::unconstrained(read(conn.clone(), down)));
            }
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// One unary ChatService call: `method`'s request, encoded, and its
    /// response, encoded.
    pub async fn call(
        &self,
        authorization: &str,
        method: &str,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let conn = self.conn().await?;
        let (tx, rx) = oneshot::channel();
        let id = conn.register(Waiter::Call(tx))?;
        let _forget = Forget { conn: &conn, id };
        conn.send(pb::LinkRequest {
            id,
            kind: Some(Up::Call(pb::LinkCall {
                authorization: authorization.to_owned(),
                method: method.to_owned(),
                request,
            })),
        })
        .await?;
        rx.await.unwrap_or_else(|_| Err(broken(&conn.addr)))
    }

    /// ChatService `Subscribe`, once the node has opened it.
    pub async fn subscribe(
        &self,
        authorization: &str,
        since: String,
    ) -> Result<Subscription, Status> {
        let conn = self.conn().await?;
        let (opened_tx, opened) = oneshot::channel();
        let (tx, rx) = mpsc::channel(SUB_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = conn.register(Waiter::Sub(SubWaiter {
            opened: Some(opened_tx),
            tx,
            lagged: lagged.clone(),
        }))?;
        let sub = Subscription {
            conn,
            id,
            rx,
            lagged,
        };
        sub.conn
            .send(pb::LinkRequest {
                id,
                kind: Some(Up::Subscribe(pb::LinkSubscribe {
                    authorization: authorization.to_owned(),
                    since,
                })),
            })
            .await?;
        opened
            .await
            .unwrap_or_else(|_| Err(broken(&sub.conn.addr)))?;
        Ok(sub)
    }
}

impl Conn {
    fn register(&self, w: Waiter) -> Result<u64, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, w);
        // The reader sets `broken` before it fails every waiter: either it
        // saw this one, or this sees `broken`.
        if self.broken.load(Ordering::Acquire) {
            self.forget(id);
            return Err(broken(&self.addr));
        }
        Ok(id)
    }

    fn forget(&self, id: u64) -> Option<Waiter> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id)
    }

    async fn send(&self, r: pb::LinkRequest) -> Result<(), Status> {
        self.up.send(r).await.map_err(|_| broken(&self.addr))
    }

    /// Tells the node to end subscription `id`. Never waits: a full queue
    /// hands the request to a task that does.
    fn cancel(&self, id: u64) {
        let r = pb::LinkRequest {
            id,
            kind: Some(Up::Cancel(pb::LinkCancel {})),
        };
        if let Err(mpsc::error::TrySendError::Full(r)) = self.up.try_send(r) {
            let up = self.up.clone();
            tokio::spawn(async move {
                let _ = up.send(r).await;
            });
        }
    }
}

/// Forgets a call whose caller went away (a timeout, a closed
/// connection); the node still finishes it.
struct Forget<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

/// An open subscription; dropping it ends it at the node.
#[derive(Debug)]
pub struct Subscription {
    conn: Arc<Conn>,
    id: u64,
    rx: mpsc::Receiver<Item>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The next response; `Ok(None)` when the node ended the subscription.
    pub async fn message(&mut self) -> Result<Option<pb::SubscribeResponse>, Status> {
        match self.rx.recv().await {
            Some(Item::Response(r)) => Ok(Some(r)),
            Some(Item::End(s)) if s.code() == Code::Ok => Ok(None),
            Some(Item::End(s)) => Err(s),
            None if self.lagged.load(Ordering::Acquire) => Err(Status::resource_exhausted(
                "the subscription fell behind at the gateway",
            )),
            None => Err(broken(&self.conn.addr)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Still waited on here: the node has not ended it, so it is told to.
        if self.conn.forget(self.id).is_some() {
            self.conn.cancel(self.id);
        }
    }
}

/// Routes the node's answers until the stream ends, then fails everything
/// still waiting on it.
async fn read(conn: Arc<Conn>, mut down: DownStream) {
    let ended = loop {
        let batch = match down.next().await {
            Some(Ok(b)) => b,
            None => break broken(&conn.addr),
            Some(Err(s)) => break s,
        };
        let mut lagging = Vec::new();
        {
            let mut waiters = conn
                .waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in batch.responses {
                route(&mut waiters, r, &mut lagging);
            }
        }
        for id in lagging {
            conn.cancel(id);
        }
    };
    tracing::warn!(node = %conn.addr, status = %ended, "gateway link ended");
    conn.broken.store(true, Ordering::Release);
    let waiters = std::mem::take(
        &mut *conn
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let down = if super::nodes::is_unreachable(&ended) {
        ended
    } else {
        broken(&conn.addr)
    };
    for (_, w) in waiters {
        match w {
            Waiter::Call(tx) => {
                let _ = tx.send(Err(down.clone()));
            }
            Waiter::Sub(s) => {
                if let Some(o) = s.opened {
                    let _ = o.send(Err(down.clone()));
                }
                // Dropping `tx` tells the subscription the link is down.
            }
        }
    }
}

/// Hands one response to its waiter; subscriptions that overflowed are
/// pushed on `lagging` to be cancelled at the node.
fn route(waiters: &mut HashMap<u64, Waiter>, r: pb::LinkResponse, lagging: &mut Vec<u64>) {
    let id = r.id;
    match r.kind {
        Some(Down::Reply(bytes)) => {
            if let Some(Waiter::Call(tx)) = waiters.remove(&id) {
                let _ = tx.send(Ok(bytes));
            }
        }
        Some(Down::Status(s)) => {
            let status = Status::new(Code::from_i32(s.code), s.message);
            match waiters.remove(&id) {
                Some(Waiter::Call(tx)) => {
                    let _ = tx.send(Err(status));
                }
                Some(Waiter::Sub(mut sub)) => match sub.opened.take() {
                    Some(o) => {
                        let _ = o.send(Err(status));
                    }
                    None => {
                        if sub.tx.try_send(Item::End(status)).is_err() {
                            sub.lagged.store(true, Ordering::Release);
                        }
                    }
                },
                None => {}
            }
        }
        Some(Down::Opened(_)) => {
            if let Some(Waiter::Sub(sub)) = waiters.get_mut(&id)
                && let Some(o) = sub.opened.take()
            {
                let _ = o.send(Ok(()));
            }
        }
        Some(Down::Event(e)) => {
            let full = match waiters.get(&id) {
                Some(Waiter::Sub(sub)) => sub.tx.try_send(Item::Response(e)).is_err(),
                _ => false,
            };
            if full && let Some(Waiter::Sub(sub)) = waiters.remove(&id) {
                sub.lagged.store(true, Ordering::Release);
                lagging.push(id);
            }
        }
        // An answer kind newer than this gateway.
        None => {}
    }
}
