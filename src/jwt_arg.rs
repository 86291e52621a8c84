//! The JWT key of a command: `--jwt-secret` (HS256), `--jwt-ed25519-pem` or
//! `--jwt-rs256-pem` (public keys), else the `MISSIVE_JWT_SECRET`
//! environment variable, else — only when every client-facing address is on
//! loopback — a public development secret, which `missive token` also uses.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use missive_api::Auth;

/// The secret loopback-only deployments sign and verify tokens with when
/// none is configured. Public: anyone can mint tokens with it.
pub const DEV_JWT_SECRET: &str = "missive-development-jwt-secret-loopback-only";

/// The environment variable read when no flag names a key.
pub const JWT_SECRET_ENV: &str = "MISSIVE_JWT_SECRET";

/// How tokens are verified.
#[derive(Debug, Default, clap::Args)]
pub struct JwtArgs {
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Ed25519 public key (PEM file): tokens signed with EdDSA.
    #[arg(long, conflicts_with = "jwt_secret")]
    jwt_ed25519_pem: Option<PathBuf>,
    /// RSA public key (PEM file): tokens signed with RS256.
    #[arg(long, conflicts_with_all = ["jwt_secret", "jwt_ed25519_pem"])]
    jwt_rs256_pem: Option<PathBuf>,
}

/// The verifier for clients reaching `addrs`.
pub fn resolve(args: &JwtArgs, addrs: &[&str]) -> anyhow::Result<Auth> {
    if let Some(path) = &args.jwt_ed25519_pem {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Auth::ed25519_pem(&pem)?);
    }
    if let Some(path) = &args.jwt_rs256_pem {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Auth::rs256_pem(&pem)?);
    }
    if let Some(s) = args
        .jwt_secret
        .clone()
        .or_else(|| std::env::var(JWT_SECRET_ENV).ok())
    {
        return Ok(Auth::hs256(s.as_bytes())?);
    }
    for addr in addrs {
        let resolved: Vec<_> = addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr}"))?
            .collect();
        if resolved.is_empty() || !resolved.iter().all(|a| a.ip().is_loopback()) {
            bail!(
                "{addr} is not a loopback address: a JWT key is required \
                 (--jwt-secret, --jwt-ed25519-pem, --jwt-rs256-pem or {JWT_SECRET_ENV})"
            );
        }
    }
    Ok(Auth::hs256(DEV_JWT_SECRET.as_bytes())?)
}

/// The development signer (or the configured secret's).
pub fn signer(secret: Option<String>) -> anyhow::Result<Auth> {
    let s = secret
        .or_else(|| std::env::var(JWT_SECRET_ENV).ok())
        .unwrap_or_else(|| DEV_JWT_SECRET.to_owned());
    Ok(Auth::hs256(s.as_bytes())?)
}
