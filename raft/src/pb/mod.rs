//! Conversions between openraft's types and the `missive.v1` protobuf types.
//!
//! The protobuf types stay at this edge: the rest of the crate works with
//! openraft's types and calls these functions where bytes are read or
//! written. One small file per message family, as in openraft's gRPC
//! example. (Free functions rather than `From` impls: both sides are foreign
//! types, which Rust's orphan rule does not allow to connect.)
//!
//! # Invariants
//!
//! - `decode(encode(x)) == x` for every value the crate produces.
//! - Decoding refuses rather than guesses: an unknown envelope version, a
//!   missing leader or payload, or an invalid membership is an error.

mod impl_entry;
mod impl_leader_id;
mod impl_membership;
mod impl_raft;

pub(crate) use impl_entry::{decode_entry, encode_entry};
pub(crate) use impl_membership::{membership_from_pb, membership_to_pb};
pub(crate) use impl_raft::*;
