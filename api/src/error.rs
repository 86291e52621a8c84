//! The crate's errors.
//!
//! - [`Rejected`]: a command or request refused for what it says — bad
//!   input, not a member, not found. Deterministic: every replica refuses
//!   the same command the same way, and nothing changes. It travels in the
//!   reply (`missive.v1.Rejection`) and becomes a gRPC status at the edge.
//! - [`Error`]: everything else — the store, the cluster, a reply that does
//!   not decode. Retryable ones (no leader yet, outcome unknown) are told
//!   apart so clients know to retry.

use missive_proto::v1 as pb;
use missive_proto::v1::RejectionCode;

use crate::store::StoreError;

/// A refusal: a code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejected {
    pub code: RejectionCode,
    pub message: String,
}

impl Rejected {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejected {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::NotFound, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::PermissionDenied, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::FailedPrecondition, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::ResourceExhausted, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::AlreadyExists, message)
    }

    pub fn to_pb(&self) -> pb::Rejection {
        pb::Rejection {
            code: self.code as i32,
            message: self.message.clone(),
        }
    }

    pub fn from_pb(r: &pb::Rejection) -> Self {
        Rejected {
            code: RejectionCode::try_from(r.code).unwrap_or(RejectionCode::Unspecified),
            message: r.message.clone(),
        }
    }
}

impl From<Rejected> for tonic::Status {
    fn from(r: Rejected) -> Self {
        let code = match r.code {
            RejectionCode::InvalidArgument | RejectionCode::Unspecified => {
                tonic::Code::InvalidArgument
            }
            RejectionCode::NotFound => tonic::Code::NotFound,
            RejectionCode::PermissionDenied => tonic::Code::PermissionDenied,
            RejectionCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            RejectionCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            RejectionCode::AlreadyExists => tonic::Code::AlreadyExists,
        };
        tonic::Status::new(code, r.message)
    }
}

/// What can go wrong serving a call, besides a rejection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write may or may not have been applied (a leader change cut it
    /// off): retry it — sends with the same `client_msg_id` apply once.
    #[error("the outcome is unknown, retry: {0}")]
    OutcomeUnknown(String),
    /// No leader could take the write in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other cluster failure; built by [`Error::from_raft`], which sorts
    /// out the retryable ones first.
    #[error("cluster: {0}")]
    Cluster(missive_raft::Error),
    #[error("a reply does not decode: {0}")]
    BadReply(#[from] prost::DecodeError),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Rejected(r) => r.into(),
            Error::OutcomeUnknown(m) => tonic::Status::unavailable(format!(
                "the outcome is unknown; retry (a send with the same client_msg_id applies once): {m}"
            )),
            Error::Unavailable(m) => tonic::Status::unavailable(m),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

impl Error {
    /// Sorts a cluster error into retryable and fatal.
    pub fn from_raft(e: missive_raft::Error) -> Self {
        match e {
            missive_raft::Error::OutcomeUnknown { .. } => Error::OutcomeUnknown(e.to_string()),
            missive_raft::Error::Unavailable { .. } | missive_raft::Error::NotLeader { .. } => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Cluster(other),
        }
    }
}
