//! The gateway's gRPC side: one channel per ChatService endpoint, shared by
//! every connection, and fail-over between them.
//!
//! Each node is reached over one HTTP/2 connection carrying one
//! `GatewayLink` stream ([`crate::link`]): all users of a gateway ride on
//! `nodes.len()` TCP connections and as many streams. Calls go to the *preferred* node; a call
//! that fails because the node could not be reached (UNAVAILABLE, or a
//! transport error) moves the preference on and is tried on the next node,
//! each node at most once. Nodes answer every call (they forward writes to
//! partition leaders), so any node will do.
//!
//! # Calls in flight
//!
//! At most `Limits::node_calls_in_flight` unary calls are open towards the
//! nodes at once; a call waits up to [`ADMIT_WAIT`] for its turn and is otherwise
//! answered UNAVAILABLE without reaching any node. An overloaded node
//! answers slowly; without the bound, the gateway would keep opening calls
//! that time out, and every timed-out call resets an HTTP/2 stream on the
//! connection all users share, until the node closes the connection
//! (HTTP/2's defence against reset floods) and every call and subscription
//! on it fails at once. With it, the backlog waits here, bounded, and what
//! cannot wait is refused early with an answer clients already retry.
//!
//! Retrying a write after UNAVAILABLE is what ChatService asks of clients
//! (docs/grpc.md, "Errors"): sends are idempotent by `client_msg_id`,
//! watermarks and membership changes by their nature. Creating a group is
//! the exception (its id is random), so it is never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use missive_proto::v1 as pb;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::error::Error;
use crate::link::{Link, LocalNode, Subscription};

/// How the node in the gateway's own process is named in logs and errors.
const LOCAL_NODE: &str = "local";

/// Largest gRPC message the gateway accepts from a node: ChatService's own
/// bound (a history page of 200 messages of up to 1 MiB is cut well below it).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 << 20;

/// How long a call waits for a turn among the calls in flight before it is
/// refused (see the module docs).
pub const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// How long connecting to a node may take before the call fails over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 pings on each channel, so a node that vanished without closing its
/// connection (power loss, partition) is noticed and its streams fail over.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/healthz` waits for a node's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 receive windows for the link: one stream carries every user's
/// answers and events, which the 64 KiB default would throttle to a window
/// per round trip.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// The nodes and their links.
#[derive(Debug)]
pub struct Nodes {
    /// `(address, link)` per node, in the order given.
    channels: Vec<(String, Link)>,
    /// The node calls try first. Moved on (never back on its own) when that
    /// node fails, so every connection stops trying a dead node at once.
    preferred: AtomicUsize,
    /// The deadline of one unary call.
    call_timeout: Duration,
    /// Turns of the unary calls in flight, and how many there are.
    in_flight: Semaphore,
    max_in_flight: usize,
}

/// An `authorization: Bearer <JWT>` value, checked once and reused.
pub type Bearer = MetadataValue<Ascii>;

/// True when `s` says the node could not be reached or could not serve the
/// call right now, so another node may.
pub fn is_unreachable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        // tonic reports connection and protocol failures as UNKNOWN with the
        // transport error as the source; a node's own UNKNOWN has none.
        Code::Unknown | Code::Cancelled => std::error::Error::source(s).is_some(),
        _ => false,
    }
}

impl Nodes {
    /// Channels to `addrs` (`host:port` or `http://host:port`). Nothing is
    /// connected yet: each channel connects on its first call.
    ///
    /// With `tls`, an address without a scheme is reached over `https://`
    /// and the node's certificate is checked against `tls`'s CA.
    pub fn new(
        addrs: Vec<String>,
        call_timeout: Duration,
        max_in_flight: usize,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Nodes, Error> {
        if addrs.is_empty() {
            return Err(Error::NoNodes);
        }
        let mut channels = Vec::with_capacity(addrs.len());
        for a in addrs {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let uri = if a.contains("://") {
                a.clone()
            } else {
                format!("{scheme}://{a}")
            };
            let bad = |e: &dyn std::fmt::Display| Error::BadNode {
                addr: a.clone(),
                reason: e.to_string(),
            };
            let mut endpoint = Endpoint::from_shared(uri).map_err(|e| bad(&e))?;
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
            }
            let endpoint = endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW);
            let link = Link::new(
                a.clone(),
                missive_proto::wire::connect_lazy(&endpoint),
                MAX_GRPC_MESSAGE_BYTES,
            );
            channels.push((a, link));
        }
        Ok(Nodes::with_links(channels, call_timeout, max_in_flight))
    }

    /// The one node `node`, in this process; it is named [`LOCAL_NODE`].
    pub fn local(node: Arc<dyn LocalNode>, call_timeout: Duration, max_in_flight: usize) -> Nodes {
        let link = Link::local(LOCAL_NODE.to_owned(), node);
        Nodes::with_links(
            vec![(LOCAL_NODE.to_owned(), link)],
            call_timeout,
            max_in_flight,
        )
    }

    fn with_links(
        channels: Vec<(String, Link)>,
        call_timeout: Duration,
        max_in_flight: usize,
    ) -> Nodes {
        let max_in_flight = max_in_flight.max(1);
        Nodes {
            channels,
            preferred: AtomicUsize::new(0),
            call_timeout,
            in_flight: Semaphore::new(max_in_flight),
            max_in_flight,
        }
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Always false: [`Nodes::new`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The node to try first.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.channels.len()
    }

    /// Node `i` failed: prefer the next one. Only moves the preference if it
    /// still points at `i`, so many calls failing on the same node at once
    /// move it by one, not by as many as failed.
    pub fn failed(&self, i: usize) {
        let next = (i + 1) % self.channels.len();
        if self
            .preferred
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(node = %self.channels[i].0, next = %self.channels[next].0, "failing over");
        }
    }

    /// ChatService `Subscribe` on node `i`, as the caller `bearer`.
    pub async fn subscribe(
        &self,
        i: usize,
        bearer: &Bearer,
        since: String,
    ) -> Result<Subscription, Status> {
        self.channels[i]
            .1
            .subscribe(authorization(bearer)?, since)
            .await
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> &str {
        &self.channels[i].0
    }

    /// Calls ChatService `method` with `msg` as the caller `bearer`, on the
    /// preferred node and, when `retry` and the node is unreachable, on each
    /// other node in turn. A call that takes longer than the call timeout
    /// fails with DEADLINE_EXCEEDED and is not retried (its outcome is
    /// unknown), but the node stops being preferred.
    pub async fn call<M: Message, T: Message + Default>(
        &self,
        bearer: &Bearer,
        method: &str,
        msg: M,
        retry: bool,
    ) -> Result<T, Status> {
        let Ok(Ok(_turn)) = tokio::time::timeout(ADMIT_WAIT, self.in_flight.acquire()).await else {
            return Err(Status::unavailable(format!(
                "the gateway has {} calls in flight to its nodes; retry",
                self.max_in_flight
            )));
        };
        let authorization = authorization(bearer)?;
        let request = msg.encode_to_vec();
        let n = self.channels.len();
        let first = self.preferred();
        let mut last = Status::unavailable("no node answered");
        for attempt in 0..n {
            let i = (first + attempt) % n;
            let link = &self.channels[i].1;
            let call = link.call(authorization, method, request.clone());
            match tokio::time::timeout(self.call_timeout, call).await {
                Ok(Ok(reply)) => {
                    return T::decode(reply.as_slice()).map_err(|e| {
                        Status::internal(format!(
                            "{method}: the node's answer does not decode: {e}"
                        ))
                    });
                }
                Ok(Err(s)) if is_unreachable(&s) => {
                    self.failed(i);
                    last = s;
                    if !retry {
                        break;
                    }
                }
                Ok(Err(s)) => return Err(s),
                Err(_) => {
                    self.failed(i);
                    return Err(Status::deadline_exceeded(format!(
                        "no answer within {:?}",
                        self.call_timeout
                    )));
                }
            }
        }
        Err(last)
    }

    pub async fn any_answers(&self) -> bool {
        let request = pb::PresenceRequest { users: Vec::new() }.encode_to_vec();
        for (_, link) in &self.channels {
            let probe = link.call("", "Presence", request.clone());
            match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
                Ok(Ok(_)) => return true,
                Ok(Err(s)) if !is_unreachable(&s) => return true,
                _ => {}
            }
        }
        false
    }
}

/// The `authorization` a link request carries.
fn authorization(bearer: &Bearer) -> Result<&str, Status> {
    bearer
        .to_str()
        .map_err(|_| Status::unauthenticated("the token is not printable ASCII"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// With every turn taken by a call the node does not answer, the next
    /// call is refused at the gateway after `ADMIT_WAIT`, with the node
    /// still preferred: nothing was sent, nothing failed over.
    #[tokio::test]
    async fn a_call_beyond_the_calls_in_flight_is_refused_without_reaching_a_node() {
        // Two nodes that accept TCP connections and never speak HTTP/2.
        let silent: Vec<_> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let addrs = silent
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        let nodes = Arc::new(Nodes::new(addrs, Duration::from_secs(30), 1, None).expect("nodes"));
        let bearer: Bearer = "Bearer x".parse().expect("header value");
        // A read any node may answer; `retry` as `Nodes::call` takes it.
        async fn presence(
            nodes: &Nodes,
            bearer: &Bearer,
            retry: bool,
        ) -> Result<pb::PresenceResponse, Status> {
            nodes
                .call(
                    bearer,
                    "Presence",
                    pb::PresenceRequest { users: Vec::new() },
                    retry,
                )
                .await
        }
        let first = {
            let (nodes, bearer) = (nodes.clone(), bearer.clone());
            tokio::spawn(async move { presence(&nodes, &bearer, false).await })
        };
        // Let the first call take the only turn.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        let refused = presence(&nodes, &bearer, true)
            .await
            .expect_err("no turn is free");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("1 calls in flight"),
            "{refused:?}"
        );
        assert!(
            started.elapsed() >= ADMIT_WAIT,
            "it waited for a turn first"
        );
        assert_eq!(nodes.preferred(), 0, "a refusal here is not a node failure");
        first.abort();
        drop(silent);
    }
}
