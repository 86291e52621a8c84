//! [`ClusterSecret`]: the shared secret that lets a caller speak the internal
//! protocol.
//!
//! Clients put it in the [`SECRET_HEADER`] metadata of every call; the
//! server's interceptor refuses a call without the right one with
//! `UNAUTHENTICATED` before any handler runs. The comparison is of BLAKE3
//! digests, whose equality is constant-time, so neither the secret's bytes
//! nor its length leak through timing.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// The metadata key that carries the cluster secret.
pub const SECRET_HEADER: &str = "x-missive-cluster-secret";

/// The cluster's shared secret.
#[derive(Clone)]
pub struct ClusterSecret {
    /// The value clients send.
    value: MetadataValue<Ascii>,
    /// Its digest, which received values are compared against.
    digest: blake3::Hash,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself.
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret: at least 8 characters of visible ASCII (it travels as a
    /// gRPC metadata value).
    pub fn new(secret: &str) -> Result<ClusterSecret> {
        if secret.len() < 8 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the cluster secret must be at least 8 visible ASCII characters".into(),
            ));
        }
        let value = MetadataValue::try_from(secret)
            .map_err(|e| Error::Config(format!("cluster secret: {e}")))?;
        Ok(ClusterSecret {
            value,
            digest: blake3::hash(secret.as_bytes()),
        })
    }

    /// Adds the secret to an outgoing call.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request
            .metadata_mut()
            .insert(SECRET_HEADER, self.value.clone());
    }

    /// The server's interceptor: lets a call through only with the secret.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let offered = request
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| blake3::hash(v.as_bytes()));
        // `blake3::Hash` equality is constant-time.
        match offered {
            Some(d) if d == self.digest => Ok(request),
            _ => Err(Status::unauthenticated("missing or wrong cluster secret")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_passes() {
        let secret = ClusterSecret::new("correct-horse").expect("valid");
        let mut ok = Request::new(());
        secret.attach(&mut ok);
        assert!(secret.check(ok).is_ok());
        let mut wrong = Request::new(());
        ClusterSecret::new("battery-staple")
            .expect("valid")
            .attach(&mut wrong);
        assert_eq!(
            secret.check(wrong).expect_err("refused").code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            secret.check(Request::new(())).expect_err("refused").code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn short_or_invisible_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("has a space").is_err());
    }
}
