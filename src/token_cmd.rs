//! `missive token`: mints an HS256 token for development and tests, signed
//! with `--jwt-secret`, `MISSIVE_JWT_SECRET`, or the loopback development
//! secret `missive serve` accepts by default.

use std::process::ExitCode;

use crate::jwt_arg;

/// Mints a token.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user (`sub`).
    #[arg(long)]
    user: String,
    /// The device (default: "default").
    #[arg(long)]
    device: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    ttl: u64,
    /// The HS256 secret to sign with.
    #[arg(long)]
    jwt_secret: Option<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let auth = jwt_arg::signer(args.jwt_secret)?;
    println!(
        "{}",
        auth.mint(&args.user, args.device.as_deref(), args.ttl)?
    );
    Ok(ExitCode::SUCCESS)
}
