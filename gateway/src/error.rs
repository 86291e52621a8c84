//! The gateway's error type: what can stop it from starting or serving.
//! Per-request failures are not errors of the gateway: they are answered
//! with `error` frames (see [`crate::protocol`]).

/// Why the gateway could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Gateway::new` was given no ChatService endpoint.
    #[error("no ChatService node address given")]
    NoNodes,
    /// A node address is not a valid URI.
    #[error("bad node address {addr:?}: {reason}")]
    BadNode { addr: String, reason: String },
    /// The media store could not be opened (`Gateway::with_media`).
    #[error("opening the media store in {dir}: {source}")]
    Media {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A TLS certificate, key or CA file could not be used.
    #[error("TLS: {path}: {reason}")]
    Tls {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A builder method was called twice on one gateway.
    #[error("{0} is configured already")]
    Configured(&'static str),
    /// Accepting connections failed.
    #[error("accepting connections: {0}")]
    Io(#[from] std::io::Error),
}
