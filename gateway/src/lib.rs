//! missive-gateway: the stateless WebSocket gateway.
//!
//! Apps speak WebSocket protocol v1 (JSON frames, docs/protocol.md) to a
//! gateway; the gateway turns each request into one `missive.v1.ChatService`
//! call and forwards the caller's `Subscribe` stream as event frames. It
//! keeps no state that outlives a connection: the JWT is passed through as
//! `authorization: Bearer` (nodes check it), and a client resumes from the
//! sync token of the last event it saw, on this gateway or any other.
//!
//! ```no_run
//! # async fn run() -> Result<(), missive_gateway::Error> {
//! use missive_gateway::{Gateway, Limits};
//! let gw = Gateway::new(vec!["127.0.0.1:7070".into()], Limits::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gw.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! # Layout
//!
//! - [`gateway`]: [`Gateway`], its router (`/ws`, `/healthz`), accept loop,
//!   connection cap and graceful shutdown.
//! - [`session`]: one connection: authentication, requests, heartbeats,
//!   idle timeout.
//! - [`outbox`]: the bounded send queue and slow-consumer closes.
//! - [`subscription`]: `Subscribe` forwarded, re-subscribed from the last
//!   token on another node when one fails.
//! - [`dispatch`]: request frames to ChatService calls.
//! - [`media`]: attachments on local disk, content-addressed, moved over
//!   HTTP (`/media/{id}`) with signed, expiring URLs.
//! - [`devlogin`]: `POST /dev/login`, tokens for development only.
//! - [`nodes`]: shared gRPC channels and fail-over.
//! - [`protocol`], [`render`]: frames, codes, and the JSON of answers.
//! - [`ratelimit`], [`limits`]: every bound.
//! - [`webapp`]: the web app's static files at `/`.
//!
//! # Invariants
//!
//! - Every queue is bounded: a connection holds at most
//!   `Limits::send_queue` outgoing frames, `Limits::max_in_flight` calls and
//!   one message of `Limits::hard_message_bytes`; there are at most
//!   `Limits::max_connections` connections.
//! - A refused frame (too large, malformed, over the rate) reaches no node.
//! - A client that resumes from the token of the last event it received
//!   misses nothing and sees nothing twice, across gateway restarts, slow
//!   consumer closes and node fail-overs.
//!
//! This crate must not depend on `missive-log`, `missive-raft` or
//! `missive-api`: it talks to nodes over gRPC, or to a node in its own
//! process through [`link::LocalNode`], which the binary that holds both
//! implements (`missive serve`).

// Network code: a failure is an answer to the client, never a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod devlogin;
pub mod dispatch;
pub mod error;
pub mod gateway;
pub mod limits;
pub mod link;
pub mod media;
pub mod metrics;
pub mod nodes;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod render;
pub mod session;
pub mod subscription;
pub mod tls;
pub mod webapp;

pub use error::Error;
pub use gateway::Gateway;
pub use limits::Limits;
pub use media::MediaConfig;
pub use outbox::StatsSnapshot;
