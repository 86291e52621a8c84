//! `GatewayLink`: a gateway's users' ChatService calls and subscriptions on
//! one bidirectional stream (docs/gateway-link.md).
//!
//! Every request is authenticated by its own bearer token and handled by the
//! same [`Service`] methods a ChatService call reaches, so the link and the
//! gRPC surface cannot disagree about anything but transport.
//!
//! # Shape
//!
//! - The **reader** task takes requests off the incoming stream. A call runs
//!   in a task of its own (at most [`MAX_CALLS`] at once: past that the
//!   reader waits, and the gateway's sends wait behind it). A subscription
//!   is opened in a task (opening may wait for this node to catch up) and
//!   handed to the writer.
//! - The **writer** is the response stream itself ([`Down`]): when HTTP/2
//!   has room, it gathers whatever is ready — call answers, opened
//!   subscriptions, every subscription's next responses — into one
//!   `LinkDown`. A gateway that reads slowly is not polled past its flow
//!   control window; each subscription's own bounded queue then fills, and
//!   the hub drops the subscriptions that lag (the gateway subscribes again
//!   from its token), so memory here stays bounded.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{AbortHandle, Abortable, SelectAll};
use futures_util::{Stream, StreamExt};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_service_server::ChatService;
use missive_proto::v1::gateway_link_server::GatewayLink;
use missive_proto::v1::link_request::Kind as Up;
use missive_proto::v1::link_response::Kind as Down_;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use super::Service;
use super::subscribe::{self, EventStream};
use crate::auth::{Auth, Caller};
use crate::chat::Chat;

/// Calls of one link running at once.
pub const MAX_CALLS: usize = 4096;

/// Subscriptions being opened at once on one link, answered or not.
const MAX_OPENING: usize = 1024;

/// Responses gathered into one `LinkDown`, at most.
const MAX_BATCH: usize = 512;

/// Bytes gathered into one `LinkDown` before it is sent, about.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The `GatewayLink` service.
#[derive(Clone, Debug)]
pub struct Link {
    svc: Service,
    auth: Auth,
}

impl Link {
    /// `chat`'s side of a gateway's links: served over gRPC by
    /// `GatewayLink`, or to a gateway in the same process by
    /// [`Link::open`].
    pub fn new(chat: &Chat) -> Link {
        Link {
            svc: Service { chat: chat.clone() },
            auth: chat.auth().clone(),
        }
    }

    /// Serves one link: the gateway's requests come from `up`, everything
    /// for it leaves by the returned stream. Over gRPC, `up` is the
    /// request stream of `GatewayLink/Link`; a gateway in the same process
    /// (`missive serve`) hands its requests over directly, with no HTTP/2
    /// and no encoding of the link's own frames. Both run the same code
    /// from here on.
    pub fn open<S>(&self, up: S) -> DownStream
    where
        S: Stream<Item = Result<pb::LinkUp, Status>> + Send + Unpin + 'static,
    {
        // Capacity for every call that can run: a call's task never waits
        // to hand its answer over while holding its turn.
        let (answers_tx, answers) = mpsc::channel(MAX_CALLS);
        let (opened_tx, opened) = mpsc::channel(MAX_OPENING);
        let (cancels_tx, cancels) = mpsc::channel(MAX_OPENING);
        let chat = &self.svc.chat;
        tokio::spawn(read(
            self.clone(),
            up,
            chat.stopping(),
            Senders {
                answers: answers_tx,
                opened: opened_tx,
                cancels: cancels_tx,
            },
        ));
        Box::pin(Down {
            answers,
            opened,
            cancels,
            subs: SelectAll::new(),
            open: HashMap::new(),
            cancelled: HashSet::new(),
            reader_done: false,
            stopping: Box::pin(chat.stopping()),
        })
    }
}

/// The response stream's type.
pub type DownStream = Pin<Box<dyn Stream<Item = Result<pb::LinkDown, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayLink for Link {
    type LinkStream = DownStream;

    async fn link(
        &self,
        req: Request<Streaming<pb::LinkUp>>,
    ) -> Result<Response<DownStream>, Status> {
        Ok(Response::new(self.open(req.into_inner())))
    }
}

/// What the reader hands the writer.
struct Senders {
    answers: mpsc::Sender<pb::LinkResponse>,
    opened: mpsc::Sender<(u64, Result<EventStream, Status>)>,
    cancels: mpsc::Sender<u64>,
}

fn status(id: u64, s: &Status) -> pb::LinkResponse {
    pb::LinkResponse {
        id,
        kind: Some(Down_::Status(pb::LinkStatus {
            code: s.code() as i32,
            message: s.message().to_owned(),
        })),
    }
}

/// Takes requests off the link until the gateway closes it or the node
/// stops.
async fn read(
    link: Link,
    mut up: impl Stream<Item = Result<pb::LinkUp, Status>> + Unpin,
    stopping: impl Future<Output = ()>,
    to: Senders,
) {
    let calls = Arc::new(Semaphore::new(MAX_CALLS));
    let opening = Arc::new(Semaphore::new(MAX_OPENING));
    tokio::pin!(stopping);
    loop {
        let batch = tokio::select! {
            m = up.next() => match m {
                Some(Ok(b)) => b,
                None => return,
                Some(Err(s)) => {
                    tracing::debug!(status = %s, "gateway link closed");
                    return;
                }
            },
            () = &mut stopping => return,
        };
        for r in batch.requests {
            let id = r.id;
            match r.kind {
                Some(Up::Call(c)) => {
                    let Ok(turn) = calls.clone().acquire_owned().await else {
                        return;
                    };
                    let (link, tx) = (link.clone(), to.answers.clone());
                    // Like a ChatService call's span (see `super::router`).
                    let span = tracing::info_span!("link", method = %c.method, id);
                    tokio::spawn(
                        async move {
                            let answer = match link.call(c).await {
                                Ok(reply) => pb::LinkResponse {
                                    id,
                                    kind: Some(Down_::Reply(reply)),
                                },
                                Err(s) => status(id, &s),
                            };
                            let _ = tx.send(answer).await;
                            drop(turn);
                        }
                        .instrument(span),
                    );
                }
                Some(Up::Subscribe(s)) => {
                    let Ok(turn) = opening.clone().acquire_owned().await else {
                        return;
                    };
                    let (link, tx) = (link.clone(), to.opened.clone());
                    tokio::spawn(async move {
                        let opened = match link.caller(&s.authorization) {
                            Ok(caller) => {
                                subscribe::start(link.svc.chat.clone(), caller, s.since).await
                            }
                            Err(e) => Err(e),
                        };
                        let _ = tx.send((id, opened)).await;
                        drop(turn);
                    });
                }
                Some(Up::Cancel(_)) => {
                    if to.cancels.send(id).await.is_err() {
                        return;
                    }
                }
                None => {
                    let s = Status::invalid_argument("a link request with no kind");
                    if to.answers.send(status(id, &s)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Generates the dispatch of a unary call by method name.
macro_rules! unary {
    ($svc:expr, $caller:expr, $call:expr; $($name:literal => $method:ident($req:ty)),* $(,)?) => {
        match $call.method.as_str() {
            $($name => {
                let msg = <$req>::decode($call.request.as_slice()).map_err(|e| {
                    Status::invalid_argument(format!("{}: the request does not decode: {e}", $name))
                })?;
                let mut req = Request::new(msg);
                req.extensions_mut().insert($caller);
                Ok(ChatService::$method($svc, req).await?.into_inner().encode_to_vec())
            })*
            m => Err(Status::unimplemented(format!("the link has no ChatService method {m:?}"))),
        }
    };
}

impl Link {
    fn caller(&self, authorization: &str) -> Result<Caller, Status> {
        self.auth
            .verify_header(Some(authorization))
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    /// Runs one unary call as ChatService would.
    async fn call(&self, c: pb::LinkCall) -> Result<Vec<u8>, Status> {
        let caller = self.caller(&c.authorization)?;
        let svc = &self.svc;
        unary!(svc, caller, c;
            "CreateDirect" => create_direct(pb::CreateDirectRequest),
            "CreateGroup" => create_group(pb::CreateGroupRequest),
            "GetConversation" => get_conversation(pb::ConversationRequest),
            "AddMembers" => add_members(pb::MembersRequest),
            "RemoveMembers" => remove_members(pb::MembersRequest),
            "Leave" => leave(pb::ConversationRequest),
            "SetRole" => set_role(pb::SetRoleRequest),
            "Send" => send(pb::SendRequest),
            "Edit" => edit(pb::EditRequest),
            "Delete" => delete(pb::MessageRef),
            "React" => react(pb::ReactRequest),
            "MarkDelivered" => mark_delivered(pb::ReceiptRequest),
            "MarkRead" => mark_read(pb::ReceiptRequest),
            "MessageStatus" => message_status(pb::MessageRef),
            "History" => history(pb::HistoryRequest),
            "Inbox" => inbox(pb::InboxRequest),
            "Presence" => presence(pb::PresenceRequest),
            "SetTyping" => set_typing(pb::TypingRequest),
            "PublishKeys" => publish_keys(pb::PublishKeys),
            "ClaimKeys" => claim_keys(pb::ClaimKeys),
            "SetPushTarget" => set_push_target(pb::SetPushTarget),
        )
    }
}

/// One open subscription's responses, tagged with its id; `None` once it
/// has ended.
type Tagged =
    Pin<Box<dyn Stream<Item = (u64, Option<Result<pb::SubscribeResponse, Status>>)> + Send>>;

/// The response stream: gathers what is ready into one `LinkDown` each time
/// HTTP/2 polls it.
struct Down {
    answers: mpsc::Receiver<pb::LinkResponse>,
    opened: mpsc::Receiver<(u64, Result<EventStream, Status>)>,
    cancels: mpsc::Receiver<u64>,
    subs: SelectAll<Tagged>,
    /// Open subscriptions.
    open: HashMap<u64, AbortHandle>,
    /// Subscriptions cancelled before they were open.
    cancelled: HashSet<u64>,
    /// The reader has stopped: the gateway closed its side.
    reader_done: bool,
    /// Resolves when the node begins to shut down: the link then ends, as
    /// a graceful server shutdown waits for every stream, and the gateway
    /// goes on with another node.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Down {
    fn add(&mut self, id: u64, stream: EventStream) {
        let (handle, reg) = AbortHandle::new_pair();
        let tagged = Abortable::new(stream, reg)
            .map(move |r| (id, Some(r)))
            .chain(futures_util::stream::once(async move { (id, None) }));
        self.subs.push(Box::pin(tagged));
        self.open.insert(id, handle);
    }

    /// Moves control messages (opened subscriptions, cancellations) into
    /// the state; answers that must go out are pushed on `out`.
    fn control(&mut self, cx: &mut Context<'_>, out: &mut Vec<pb::LinkResponse>) {
        while let Poll::Ready(Some(id)) = self.cancels.poll_recv(cx) {
            match self.open.remove(&id) {
                Some(h) => h.abort(),
                None => {
                    // Not open yet (or already over): remembered until its
                    // opening comes back, bounded by MAX_OPENING.
                    if self.cancelled.len() < MAX_OPENING {
                        self.cancelled.insert(id);
                    }
                }
            }
        }
        while let Poll::Ready(Some((id, r))) = self.opened.poll_recv(cx) {
            if self.cancelled.remove(&id) {
                continue;
            }
            match r {
                Ok(stream) => {
                    self.add(id, stream);
                    out.push(pb::LinkResponse {
                        id,
                        kind: Some(Down_::Opened(pb::LinkOpened {})),
                    });
                }
                Err(s) => out.push(status(id, &s)),
            }
        }
    }
}

impl Stream for Down {
    type Item = Result<pb::LinkDown, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        this.control(cx, &mut out);
        while out.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match this.answers.poll_recv(cx) {
                Poll::Ready(Some(a)) => {
                    bytes += a.encoded_len();
                    out.push(a);
                }
                Poll::Ready(None) => {
                    this.reader_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        while out.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES && !this.subs.is_empty() {
            match this.subs.poll_next_unpin(cx) {
                Poll::Ready(Some((id, Some(Ok(r))))) => {
                    let resp = pb::LinkResponse {
                        id,
                        kind: Some(Down_::Event(r)),
                    };
                    bytes += resp.encoded_len();
                    out.push(resp);
                }
                Poll::Ready(Some((id, Some(Err(s))))) => {
                    // A subscription's stream ends after its error.
                    if this.open.remove(&id).is_some() {
                        out.push(status(id, &s));
                    }
                }
                Poll::Ready(Some((id, None))) => {
                    if this.open.remove(&id).is_some() {
                        out.push(status(
                            id,
                            &Status::new(Code::Ok, "the node ended the subscription"),
                        ));
                    }
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(pb::LinkDown { responses: out })));
        }
        if this.stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Status::unavailable(
                "the node is shutting down; go on with another",
            ))));
        }
        if this.reader_done {
            // Every sender of answers is gone: the gateway closed its side
            // and no call is running.
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
