//! `missive node`: runs one cluster node until SIGTERM or Ctrl-C.
//!
//! The node serves the internal `RaftInternal` service on `--listen`: peers
//! replicate through it and the `missive cluster` commands call it, all with
//! the cluster secret. It runs the chat state machine and, with `--grpc`,
//! serves `ChatService` to clients there (reads from its own projections,
//! writes forwarded to leaders).
//!
//! `--kv` runs the key-value state machine instead (`missive_raft::kv`,
//! written with `missive kv put`): replication tests and benchmarks use it
//! to measure the cluster without the chat domain.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use missive_api::Chat;
use missive_raft::kv::Kv;
use missive_raft::{ClusterNode, NodeConfig};
use tokio::net::TcpListener;

use crate::jwt_arg::{self, JwtArgs};
use crate::retention_arg::RetentionArgs;
use crate::secret_arg;
use crate::tls_arg::TlsArgs;

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
    /// Where ChatService (gRPC) listens; none if absent.
    #[arg(long, conflicts_with = "kv")]
    grpc: Option<String>,
    /// Where `GET /metrics` (Prometheus) is served; none if absent.
    #[arg(long, conflicts_with = "kv")]
    metrics: Option<String>,
    /// Runs the key-value state machine instead of chat.
    #[arg(long)]
    kv: bool,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    retention: RetentionArgs,
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
    config.log.retention = args.retention.policy();
    config.advertise = args.advertise;
    if args.kv {
        let node = ClusterNode::start(config, listener, |_| Kv::default())
            .await
            .with_context(|| format!("starting node {} in {}", args.id, args.data.display()))?;
        say!(
            "node {} serving {} partitions at {} (key-value)",
            node.id(),
            node.partitions(),
            node.addr()
        );
        stopped().await?;
        node.shutdown().await?;
        say!("node {} stopped", node.id());
        return Ok(ExitCode::SUCCESS);
    }
    let grpc_addrs: Vec<&str> = args.grpc.as_deref().into_iter().collect();
    let auth = jwt_arg::resolve(&args.jwt, &grpc_addrs)?;
    let grpc = match &args.grpc {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
        None => None,
    };
    let chat = Chat::start_with(config, auth, listener, args.retention.chat_options())
        .await
        .with_context(|| format!("starting node {} in {}", args.id, args.data.display()))?;
    if let Some(addr) = &args.metrics {
        let source = crate::metrics_http::source(chat.clone(), missive_api::metrics::registry());
        crate::metrics_http::serve(addr, source).await?;
    }
    let node = chat.node();
    say!(
        "node {} serving {} partitions at {}{}",
        node.id(),
        node.partitions(),
        node.addr(),
        args.grpc
            .as_deref()
            .map(|a| format!(", ChatService on {a}"))
            .unwrap_or_default()
    );
    match grpc {
        Some(l) => chat
            .serve_tls(l, args.tls.grpc()?, async {
                let _ = stopped().await;
            })
            .await
            .context("serving ChatService")?,
        None => stopped().await?,
    }
    chat.shutdown().await?;
    say!("node {} stopped", node.id());
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
