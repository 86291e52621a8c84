//! One WebSocket connection, from its `auth` frame to its close.
//!
//! The session is generic over the socket's two halves (a `Sink` and a
//! `Stream` of WebSocket messages), so it runs the same over a real socket
//! and over channels.
//!
//! Invariants:
//! - Nothing reaches a node before the token was checked by one (the first
//!   frame must be `auth`, within `Limits::auth_timeout`).
//! - Everything sent goes through the connection's bounded [`Outbox`]; a
//!   producer never waits on the client.
//! - A connection holds at most `Limits::max_in_flight` calls and one
//!   subscription; when it ends, they are cancelled.
//! - A frame over `Limits::max_request_bytes`, malformed, unknown or over
//!   the rate gets an `error` frame and reaches no node.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};

use crate::dispatch::{self, dispatch};
use crate::limits::{CLOSE_TIMEOUT, Limits, MAX_TOKEN_BYTES};
use crate::media::Media;
use crate::nodes::{Bearer, Nodes};
use crate::outbox::{Outbox, Stats};
use crate::protocol::{self, Frame, ReqId, close, code};
use crate::ratelimit::Bucket;
use crate::render;
use crate::subscription;

/// Why reading the socket failed.
#[derive(Debug)]
pub enum ReadError {
    /// A message over `Limits::hard_message_bytes`.
    TooBig,
    /// Anything else: the connection is gone or broken.
    Broken(String),
}

/// What every session shares.
#[derive(Debug)]
pub struct Context {
    pub nodes: Arc<Nodes>,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    /// The media store, once the gateway keeps media (`Gateway::with_media`).
    pub media: OnceLock<Arc<Media>>,
}

/// Runs one connection until it closes. `shutdown` turning true closes it
/// with 1012 (service restart).
pub async fn run<S, R>(ctx: Arc<Context>, sink: S, mut stream: R, shutdown: watch::Receiver<bool>)
where
    S: Sink<Message> + Send + Unpin + 'static,
    S::Error: Send,
    R: Stream<Item = Result<Message, ReadError>> + Unpin,
{
    let (out, mut writer) = Outbox::start(
        sink,
        ctx.limits.send_queue,
        ctx.limits.send_timeout,
        ctx.stats.clone(),
    );
    let mut session = None;
    let mut writer_done = false;
    // Boxed: the node call makes `authenticate` the largest state of this
    // future by far (~2 KiB), and a task's allocation is as big as its
    // largest state for as long as it lives. Boxed, those bytes are freed
    // once the connection is authenticated (docs/benchmarks-ws.md).
    let authenticated = Box::pin(authenticate(&ctx, &out, &mut stream)).await;
    if let Some(bearer) = authenticated {
        let mut s = Session {
            permits: Arc::new(Semaphore::new(ctx.limits.max_in_flight.max(1))),
            bucket: Bucket::new(
                ctx.limits.requests_per_second,
                ctx.limits.request_burst,
                std::time::Instant::now(),
            ),
            ctx: ctx.clone(),
            out: out.clone(),
            bearer,
            subscription: None,
            in_flight: JoinSet::new(),
        };
        writer_done = s.serve(&mut stream, &mut writer, shutdown).await;
        session = Some(s);
    }
    // Cancel what the connection still had running, then let the writer put
    // out the close frame (bounded by its own timeouts).
    if let Some(mut s) = session {
        if let Some(sub) = s.subscription.take() {
            sub.abort();
        }
        s.in_flight.abort_all();
    }
    drop(out);
    if !writer_done && timeout(CLOSE_TIMEOUT * 3, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Reads the `auth` frame and checks its token with a node. The bearer on
/// success; otherwise the connection is being closed.
async fn authenticate<R>(ctx: &Context, out: &Outbox, stream: &mut R) -> Option<Bearer>
where
    R: Stream<Item = Result<Message, ReadError>> + Unpin,
{
    let text = match timeout(ctx.limits.auth_timeout, next_text(stream)).await {
        Err(_) => {
            out.close(close::AUTH_TIMEOUT, "no auth frame in time");
            return None;
        }
        Ok(Err(code)) => {
            if let Some(code) = code {
                out.close(code, "message too big");
            }
            return None;
        }
        Ok(Ok(text)) => text,
    };
    if text.len() > ctx.limits.max_request_bytes {
        refuse(
            out,
            &ReqId::NONE,
            "the first frame must be a small auth frame",
        )
        .await;
        return None;
    }
    let frame = match protocol::parse(&text) {
        Ok(f) if f.kind == "auth" => f,
        Ok(f) => {
            refuse(
                out,
                &f.req_id,
                "the first frame must be {\"type\":\"auth\",\"token\":…}",
            )
            .await;
            return None;
        }
        Err((id, why)) => {
            refuse(out, &id, &why).await;
            return None;
        }
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Auth {
        token: String,
    }
    let token = match serde_json::from_value::<Auth>(Value::Object(frame.body)) {
        Ok(a) if !a.token.is_empty() && a.token.len() <= MAX_TOKEN_BYTES => a.token,
        _ => {
            refuse(
                out,
                &frame.req_id,
                &format!("auth needs a token of 1 to {MAX_TOKEN_BYTES} bytes"),
            )
            .await;
            return None;
        }
    };
    let Ok(bearer) = format!("Bearer {token}").parse::<Bearer>() else {
        refuse(out, &frame.req_id, "the token is not printable ASCII").await;
        return None;
    };
    // The gateway holds no key: a node checks the token, with the cheapest
    // authenticated call there is (presence of nobody).
    let probe = ctx
        .nodes
        .call::<_, missive_proto::v1::PresenceResponse>(
            &bearer,
            "Presence",
            missive_proto::v1::PresenceRequest { users: Vec::new() },
            true,
        )
        .await;
    match probe {
        Ok(_) => {
            out.text(protocol::result(&frame.req_id, render::done()))
                .await;
            Some(bearer)
        }
        Err(s) if s.code() == tonic::Code::Unauthenticated => {
            refuse(out, &frame.req_id, s.message()).await;
            None
        }
        Err(s) => {
            out.text(protocol::status_error(&frame.req_id, &s)).await;
            out.close(close::TRY_AGAIN_LATER, "no node could check the token");
            None
        }
    }
}

/// Answers the `auth` frame `id` with an `unauthenticated` error and closes.
async fn refuse(out: &Outbox, id: &ReqId, why: &str) {
    out.text(protocol::error(id, "unauthenticated", why)).await;
    out.close(close::UNAUTHENTICATED, "unauthenticated");
}

/// The next text message, skipping control frames. `Err(Some(code))` when
/// the connection must be closed with `code`, `Err(None)` when it is gone.
async fn next_text<R>(stream: &mut R) -> Result<String, Option<u16>>
where
    R: Stream<Item = Result<Message, ReadError>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => return Err(Some(close::UNAUTHENTICATED)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(ReadError::Broken(_))) => {
                return Err(None);
            }
            Some(Err(ReadError::TooBig)) => return Err(Some(close::MESSAGE_TOO_BIG)),
        }
    }
}

/// Resolves once `stop` is true or its sender is gone. The guard
/// `wait_for` returns is dropped here, so it is never held across an await.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An authenticated connection.
struct Session {
    ctx: Arc<Context>,
    out: Outbox,
    bearer: Bearer,
    /// Bounds the calls in flight (`Limits::max_in_flight`).
    permits: Arc<Semaphore>,
    /// The connection's request rate.
    bucket: Bucket,
    /// The running subscription, if any: a new `subscribe` replaces it.
    subscription: Option<JoinHandle<()>>,
    /// Calls being answered; aborted when the connection ends.
    in_flight: JoinSet<()>,
}

impl Session {
    /// Serves requests until the connection ends; true if that was because
    /// the writer ended (its handle must not be awaited again).
    async fn serve<R>(
        &mut self,
        stream: &mut R,
        writer: &mut JoinHandle<()>,
        mut shutdown: watch::Receiver<bool>,
    ) -> bool
    where
        R: Stream<Item = Result<Message, ReadError>> + Unpin,
    {
        let limits = self.ctx.limits.clone();
        let mut ping = tokio::time::interval_at(
            Instant::now() + limits.ping_interval,
            limits.ping_interval.max(Duration::from_millis(1)),
        );
        let idle = sleep_until(Instant::now() + limits.idle_timeout);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                // The writer ended: a close went out, or the socket broke.
                _ = &mut *writer => return true,
                // Also when the gateway is gone (the sender dropped).
                () = stopped(&mut shutdown), if !self.out.closing() => {
                    self.out.close(
                        close::SERVICE_RESTART,
                        "gateway restarting: reconnect and resume from your last token",
                    );
                }
                _ = ping.tick() => {
                    self.out.push(Message::Ping(Bytes::new()));
                }
                () = &mut idle, if !self.out.closing() => {
                    self.out.close(close::IDLE, "idle");
                }
                Some(_) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {}
                m = stream.next() => {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            if !self.out.closing() {
                                self.on_text(t.as_str()).await;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.out.text(protocol::error(
                                &ReqId::NONE,
                                code::BAD_REQUEST,
                                "frames are JSON text",
                            )).await;
                        }
                        // Pings are answered by the WebSocket layer; a pong
                        // only proves the client is there.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None | Some(Err(ReadError::Broken(_))) => {
                            return false;
                        }
                        Some(Err(ReadError::TooBig)) => {
                            self.out.close(close::MESSAGE_TOO_BIG, "message too big");
                            return false;
                        }
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) {
        let max = self.ctx.limits.max_request_bytes;
        if text.len() > max {
            self.out
                .text(protocol::error(
                    &ReqId::NONE,
                    code::TOO_LARGE,
                    &format!("a frame is at most {max} bytes"),
                ))
                .await;
            return;
        }
        let frame = match protocol::parse(text) {
            Ok(f) => f,
            Err((id, why)) => {
                self.out
                    .text(protocol::error(&id, code::BAD_REQUEST, &why))
                    .await;
                return;
            }
        };
        self.ctx
            .stats
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !self.bucket.take(std::time::Instant::now()) {
            self.ctx
                .stats
                .rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.out
                .text(protocol::error(
                    &frame.req_id,
                    code::RATE_LIMITED,
                    "too many requests: slow down",
                ))
                .await;
            return;
        }
        match frame.kind.as_str() {
            "ping" => {
                self.out.text(protocol::pong(&frame.req_id)).await;
            }
            "auth" => {
                self.out
                    .text(protocol::error(
                        &frame.req_id,
                        code::BAD_REQUEST,
                        "already authenticated",
                    ))
                    .await;
            }
            "subscribe" => self.subscribe(frame).await,
            "unsubscribe" => {
                if let Some(sub) = self.subscription.take() {
                    sub.abort();
                }
                self.out
                    .text(protocol::result(&frame.req_id, render::done()))
                    .await;
            }
            k if dispatch::TYPES.contains(&k) => self.call(frame).await,
            other => {
                let why = format!("unknown frame type {other:?}");
                self.out
                    .text(protocol::error(&frame.req_id, code::UNKNOWN_TYPE, &why))
                    .await;
            }
        }
    }

    async fn subscribe(&mut self, frame: Frame) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Subscribe {
            #[serde(default)]
            since: String,
        }
        let since = match serde_json::from_value::<Subscribe>(Value::Object(frame.body)) {
            Ok(s) => s.since,
            Err(e) => {
                self.out
                    .text(protocol::error(
                        &frame.req_id,
                        code::BAD_REQUEST,
                        &e.to_string(),
                    ))
                    .await;
                return;
            }
        };
        if let Some(old) = self.subscription.take() {
            old.abort();
        }
        self.subscription = Some(tokio::spawn(subscription::run(
            self.ctx.nodes.clone(),
            self.bearer.clone(),
            since,
            frame.req_id,
            self.out.clone(),
            self.ctx.limits.call_timeout,
        )));
    }

    /// Starts answering a unary request. Waits while the connection has
    /// `max_in_flight` calls out: reading stops, which slows the client.
    async fn call(&mut self, frame: Frame) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let (nodes, media, bearer, out) = (
            self.ctx.nodes.clone(),
            self.ctx.media.get().cloned(),
            self.bearer.clone(),
            self.out.clone(),
        );
        self.in_flight.spawn(async move {
            let answer =
                match dispatch(&nodes, media.as_deref(), &bearer, &frame.kind, frame.body).await {
                    Ok(data) => protocol::result(&frame.req_id, data),
                    Err(f) => protocol::error(&frame.req_id, f.code, &f.message),
                };
            out.text(answer).await;
            drop(permit);
        });
    }
}
