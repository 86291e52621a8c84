//! missive-api: the chat domain.
//!
//! This crate is empty on purpose: it compiles so the workspace has its final
//! shape, and it offers nothing yet. It will hold chat commands and events,
//! their deterministic application to projections (conversations, history,
//! receipt watermarks, inboxes, presence, device keys, push targets), queries,
//! the subscription hub, the gRPC `ChatService` and authentication.
//!
//! It must not depend on axum or WebSocket code: the gateway talks to it over
//! gRPC.
