//! missive-raft: replication of partitions.
//!
//! This crate is empty on purpose: it compiles so the workspace has its final
//! shape, and it offers nothing yet. It will hold the openraft type
//! configuration, a `RaftLogStorage` over `missive-log` (one log per partition,
//! Raft index = partition offset), the internal gRPC transport, multi-raft
//! partitions keyed by jump consistent hash, streamed snapshots and cluster
//! administration.
//!
//! It must stay generic over the state machine it replicates: no chat
//! vocabulary belongs here.
