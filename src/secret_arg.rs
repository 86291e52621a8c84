//! The cluster secret of a command: `--secret`, else the
//! `MISSIVE_CLUSTER_SECRET` environment variable, else — only when every
//! address involved is on loopback — a well-known development secret.
//! Anywhere else a missing secret is an error: a node reachable from other
//! machines must not accept the public development value.

use std::net::ToSocketAddrs;

use anyhow::{Context, bail};
use missive_raft::ClusterSecret;

/// The secret loopback-only clusters use when none is given.
pub const DEV_SECRET: &str = "missive-dev-secret-loopback-only";

/// The environment variable read when `--secret` is absent.
pub const SECRET_ENV: &str = "MISSIVE_CLUSTER_SECRET";

/// The secret to use with `addrs` (`host:port`).
pub fn resolve(flag: Option<String>, addrs: &[&str]) -> anyhow::Result<ClusterSecret> {
    let given = flag.or_else(|| std::env::var(SECRET_ENV).ok());
    if let Some(s) = given {
        return ClusterSecret::new(&s).context("--secret");
    }
    for addr in addrs {
        if !is_loopback(addr)? {
            bail!(
                "{addr} is not a loopback address: a cluster secret is required \
                 (--secret or {SECRET_ENV}); the development default is only for 127.0.0.1"
            );
        }
    }
    Ok(ClusterSecret::new(DEV_SECRET)?)
}

fn is_loopback(addr: &str) -> anyhow::Result<bool> {
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    Ok(!resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_gets_the_default_elsewhere_a_secret_is_required() {
        // SAFETY-free: the test only reads the variable's absence.
        if std::env::var(SECRET_ENV).is_ok() {
            return;
        }
        assert!(resolve(None, &["127.0.0.1:7001"]).is_ok());
        assert!(resolve(None, &["0.0.0.0:7001"]).is_err());
        assert!(resolve(Some("a-real-secret".into()), &["0.0.0.0:7001"]).is_ok());
    }
}
