//! missive-gateway: the WebSocket gateway.
//!
//! This crate is empty on purpose: it compiles so the workspace has its final
//! shape, and it offers nothing yet. It will hold the WebSocket JSON protocol,
//! the HTTP surface (web app, media, health, metrics) and the gRPC client that
//! carries every request to missive nodes.
//!
//! It must not depend on `missive-log` or `missive-raft`: it is stateless and
//! talks to nodes only over gRPC.
