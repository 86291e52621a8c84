//! The internal transport: the `missive.v1.RaftInternal` gRPC service that
//! the nodes of a cluster speak to each other, client and server.
//!
//! # Layout
//!
//! - `secret`: [`ClusterSecret`], checked on every call the server receives
//!   and added to every call a client makes.
//! - `peers`: [`Peers`], one lazily connected tonic channel per peer shared
//!   by every partition (openraft-multi's `GroupRouter`), and
//!   [`PartitionNetwork`], the per-partition network factory openraft gets.
//! - `snapshot_stream`: a snapshot file as a stream of chunks, and back.
//! - `service`: the server side, dispatching each call to its partition.
//! - `writes`: the `Writes` call, many writes over one stream: the server's
//!   `Answers` and a client's [`WriteStream`].
//!
//! # Invariants
//!
//! - Every call carries its partition id and has a deadline.
//! - No call is served without the cluster secret; the comparison takes the
//!   same time whatever the secret offered.
//! - A snapshot is never whole in memory: it travels in chunks of at most
//!   [`SNAPSHOT_CHUNK_BYTES`], read from and written to files.
//!
//! This module knows partitions only by number; what they replicate is the
//! node's business.

mod peers;
mod secret;
pub(crate) mod service;
mod snapshot_stream;
mod writes;

pub use peers::{PartitionNetwork, Peers};
pub use secret::{ClusterSecret, SECRET_HEADER};
pub use service::MAX_MESSAGE_BYTES;
pub use snapshot_stream::SNAPSHOT_CHUNK_BYTES;
pub use writes::{BATCH_BYTES, MAX_BATCH, MAX_WRITES_IN_FLIGHT, UP_QUEUE, WriteStream};
