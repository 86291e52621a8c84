//! `missive node`: runs one cluster node with the key-value state machine
//! (`missive_raft::kv`; the chat state machine replaces it in a later
//! step) until SIGTERM or Ctrl-C.
//!
//! The node serves one gRPC listener, the internal `RaftInternal` service:
//! peers replicate through it and the `missive cluster` and `missive kv`
//! commands call it, all with the cluster secret.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use missive_raft::kv::Kv;
use missive_raft::{ClusterNode, NodeConfig};
use tokio::net::TcpListener;

use crate::secret_arg;

/// Runs a node.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's id in the cluster (never reused).
    #[arg(long)]
    id: u64,
    /// Where the internal service listens (`host:port`).
    #[arg(long)]
    listen: String,
    /// The data directory.
    #[arg(long)]
    data: PathBuf,
    /// Partitions of a new cluster (fixed at creation; default 4).
    #[arg(long)]
    partitions: Option<u32>,
    /// The cluster secret (or MISSIVE_CLUSTER_SECRET); optional on loopback.
    #[arg(long)]
    secret: Option<String>,
    /// The address peers reach this node at, if not `--listen`.
    #[arg(long)]
    advertise: Option<String>,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let secret = secret_arg::resolve(args.secret, &[args.listen.as_str()])?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    if args.advertise.is_none() && listener.local_addr()?.ip().is_unspecified() {
        bail!(
            "--listen {} is a wildcard address: give --advertise",
            args.listen
        );
    }
    let mut config = NodeConfig::new(args.id, &args.data, secret)?;
    config.partitions = args.partitions;
    config.advertise = args.advertise;
    let node = ClusterNode::start(config, listener, |_| Kv::default())
        .await
        .with_context(|| format!("starting node {} in {}", args.id, args.data.display()))?;
    println!(
        "node {} serving {} partitions at {}",
        node.id(),
        node.partitions(),
        node.addr()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.shutdown().await?;
    println!("node {} stopped", node.id());
    Ok(ExitCode::SUCCESS)
}
