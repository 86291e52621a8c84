//! missive-api: the chat domain — commands, events, projections, queries,
//! live subscriptions, authentication and `ChatService` over gRPC.
//!
//! The chat state machine ([`ChatStateMachine`]) runs in every partition of
//! a missive-raft cluster: it applies `missive.v1.ChatCommand`s from the
//! replicated log to the partition's projections (a redb store) and hands
//! the resulting events to the node's [`Hub`]. [`Chat`] wires a node
//! together; [`service`] is the gRPC edge.
//!
//! # Layout
//!
//! - [`apply`]: the state machine; one file per group of commands.
//! - [`store`]: the projection store (redb), its tables, keys and snapshots.
//! - [`query`]: reads of the projections.
//! - [`hub`]: live subscriptions and the routing of events to them.
//! - [`service`]: `ChatService` (and `Subscribe`'s replay-then-live).
//! - [`chat`]: [`Chat`], a node running all of it.
//! - [`auth`]: JWT verification and development tokens.
//! - [`token`]: sync tokens.
//! - [`ids`]: conversation ids and partition routing.
//! - [`validate`], [`limits`]: input checks and every bound.
//! - [`ratelimit`]: per-user write rates.
//! - [`presence`]: ending sessions of crashed and restarted nodes.
//! - [`push`]: the push notifier (webhooks, retries, dead letters).
//! - [`offline`]: projections rebuilt from a stopped node's log (or a
//!   backup) up to a point, and two stores compared row by row.
//! - [`error`]: [`Rejected`] (deterministic refusals) and [`Error`].
//!
//! # Invariants
//!
//! - Applying is deterministic; a refused command changes nothing.
//! - Each conversation's events have gapless seqs from 1.
//! - The projections and the log index they reflect commit together.
//! - Sending to a group writes O(1) rows whatever its size.
//! - Every queue is bounded (see [`limits`]).
//!
//! This crate knows nothing of HTTP or WebSocket (the gateway's), nor of
//! how the log is stored (missive-raft's).

// Storage code: an I/O or decoding failure is an error, never a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod apply;
pub mod auth;
pub mod chat;
pub mod error;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod offline;
pub mod presence;
pub mod push;
pub mod query;
pub mod ratelimit;
pub mod retention;
pub mod service;
pub mod store;
pub mod token;
pub mod validate;

pub use apply::ChatStateMachine;
pub use auth::{Auth, Caller};
pub use chat::{Chat, ChatOptions};
pub use error::{Error, Rejected};
pub use hub::Hub;
