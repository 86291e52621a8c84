//! A connection's subscription: ChatService `Subscribe` forwarded as
//! `event`, `caught_up` and `resync` frames, surviving node failures.
//!
//! The task remembers the token of the last response it queued for the
//! client. When the stream fails because its node is unreachable (or the
//! node ends it, e.g. shutting down, or drops it as lagging), it subscribes
//! again on the next node *from that token*: ChatService replays exactly the
//! events after it, so the client sees neither a gap nor a duplicate. The
//! second `caught_up` such a re-subscription produces is not forwarded: the
//! client has been live since the first.
//!
//! If the client's queue is full, the connection is closed (slow consumer)
//! and the task ends; the client resumes from the last token *it* received.

use std::sync::Arc;
use std::time::Duration;

use missive_proto::v1::subscribe_response::Kind;
use tokio::time::{sleep, timeout};
use tonic::{Code, Status};

use crate::link::Subscription;
use crate::nodes::{Bearer, Nodes, is_unreachable};
use crate::outbox::Outbox;
use crate::protocol::{self, ReqId};
use crate::render;

/// The first pause before subscribing again after every node failed...
const RETRY_MIN: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Why a stream ended.
enum Ended {
    /// Subscribe again from the last token (on the next node).
    Again,
    /// The subscription is over (an error the client was told, or the
    /// connection is closing).
    Over,
}

/// Runs the subscription of the client behind `out` from `since` until the
/// connection closes or ChatService refuses it. `req_id` is the id of the
/// `subscribe` request: it gets the `result` once the first stream is open
/// (or the `error`).
pub async fn run(
    nodes: Arc<Nodes>,
    bearer: Bearer,
    since: String,
    req_id: ReqId,
    out: Outbox,
    call_timeout: Duration,
) {
    let mut s = State {
        token: since,
        answered: false,
        caught_up: false,
        req_id,
        out,
    };
    let mut pause = RETRY_MIN;
    let mut failures_in_a_row = 0;
    loop {
        let node = nodes.preferred();
        let opening = nodes.subscribe(node, &bearer, s.token.clone());
        let stream = match timeout(call_timeout, opening).await {
            Ok(Ok(sub)) => sub,
            Ok(Err(st)) if is_unreachable(&st) => {
                nodes.failed(node);
                failures_in_a_row += 1;
                if failures_in_a_row >= nodes.len() {
                    sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                continue;
            }
            Ok(Err(st)) => return s.refused(&st).await,
            Err(_) => {
                nodes.failed(node);
                failures_in_a_row += 1;
                continue;
            }
        };
        if !s.answered {
            s.answered = true;
            if !s
                .out
                .text(protocol::result(&s.req_id, render::done()))
                .await
            {
                return;
            }
        }
        match s.forward(stream).await {
            (Ended::Over, _) => return,
            (Ended::Again, got_any) => {
                tracing::info!(node = %nodes.addr(node), "subscribing again from the last token");
                nodes.failed(node);
                if got_any {
                    failures_in_a_row = 0;
                    pause = RETRY_MIN;
                } else {
                    failures_in_a_row += 1;
                    if failures_in_a_row >= nodes.len() {
                        sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

struct State {
    /// The position after the last response queued for the client.
    token: String,
    /// The `subscribe` request has had its `result`.
    answered: bool,
    /// A `caught_up` was forwarded.
    caught_up: bool,
    req_id: ReqId,
    out: Outbox,
}

impl State {
    /// Tells the client its subscription was refused.
    async fn refused(&self, st: &Status) {
        self.out
            .text(protocol::status_error(&self.req_id, st))
            .await;
    }

    /// Forwards one stream; how it ended and whether it yielded anything.
    async fn forward(&mut self, mut stream: Subscription) -> (Ended, bool) {
        let mut got_any = false;
        loop {
            let r = match stream.message().await {
                Ok(Some(r)) => r,
                // The node ended the stream (it is stopping): go on elsewhere.
                Ok(None) => return (Ended::Again, got_any),
                // Unreachable, or dropped by the node as lagging (which names
                // the token to resume from: ours is the same or later).
                Err(st) if is_unreachable(&st) || st.code() == Code::ResourceExhausted => {
                    return (Ended::Again, got_any);
                }
                Err(st) => {
                    self.refused(&st).await;
                    return (Ended::Over, got_any);
                }
            };
            got_any = true;
            let frame = match r.kind {
                Some(Kind::Event(e)) => protocol::event(&render::event(&e), &r.token),
                Some(Kind::CaughtUp(_)) if self.caught_up => {
                    self.token = r.token;
                    continue;
                }
                Some(Kind::CaughtUp(_)) => {
                    self.caught_up = true;
                    protocol::caught_up(&r.token)
                }
                Some(Kind::Resync(why)) => protocol::resync(&why.reason, &r.token),
                // A response kind newer than this gateway: nothing to show,
                // but its token is still the position.
                None => {
                    self.token = r.token;
                    continue;
                }
            };
            if !self.out.text(frame).await {
                return (Ended::Over, got_any);
            }
            self.token = r.token;
        }
    }
}
