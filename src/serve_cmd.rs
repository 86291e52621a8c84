//! `missive serve`: the embedded default — a one-node cluster running the
//! chat state machine, serving `ChatService` (gRPC) and the WebSocket
//! gateway on loopback, with its data in a local directory. The first run
//! initializes the cluster; later runs reopen it.
//!
//! On loopback it accepts tokens signed with a public development secret
//! (mint them with `missive token`); bound anywhere else it refuses to start
//! unless a JWT key is configured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use missive_api::Chat;
use missive_gateway::{Gateway, Limits};
use missive_raft::{Node as Member, NodeConfig};
use tokio::net::TcpListener;

use crate::jwt_arg::{self, JwtArgs};
use crate::secret_arg;

/// Runs missive on one machine.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The data directory (created on first run).
    #[arg(long, default_value = "missive-data")]
    data: PathBuf,
    /// Where ChatService (gRPC) listens.
    #[arg(long, default_value = "127.0.0.1:7070")]
    grpc: String,
    /// Where the WebSocket gateway (HTTP: `/ws`, `/healthz`) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Where the node's internal replication service listens.
    #[arg(long, default_value = "127.0.0.1:7001")]
    internal: String,
    /// Partitions of a new data directory (fixed at creation).
    #[arg(long)]
    partitions: Option<u32>,
    #[command(flatten)]
    jwt: JwtArgs,
}

/// The node id of the one-node cluster.
const NODE_ID: u64 = 1;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let auth = jwt_arg::resolve(&args.jwt, &[args.grpc.as_str(), args.http.as_str()])?;
    let secret = secret_arg::resolve(None, &[args.internal.as_str()])?;
    let internal = TcpListener::bind(&args.internal)
        .await
        .with_context(|| format!("listening on {}", args.internal))?;
    let grpc = TcpListener::bind(&args.grpc)
        .await
        .with_context(|| format!("listening on {}", args.grpc))?;
    let http = TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("listening on {}", args.http))?;
    let mut config = NodeConfig::new(NODE_ID, &args.data, secret)?;
    config.partitions = args.partitions;
    let chat = Chat::start(config, auth, internal)
        .await
        .with_context(|| format!("starting missive in {}", args.data.display()))?;
    let node = chat.node();
    if node
        .metrics(0)?
        .membership_config
        .membership()
        .voter_ids()
        .next()
        .is_none()
    {
        let members = BTreeMap::from([(NODE_ID, Member::new(node.addr()))]);
        node.initialize(members)
            .await
            .context("initializing the one-node cluster")?;
    }
    println!(
        "missive serving ChatService on {} and the WebSocket gateway on ws://{}/ws \
         ({} partitions, data in {})",
        args.grpc,
        args.http,
        node.partitions(),
        args.data.display()
    );
    println!("  a development token: missive token --user alice");
    let gateway =
        Gateway::new(vec![args.grpc.clone()], Limits::default()).context("starting the gateway")?;
    // One `/metrics` on the gateway's listener: the node's series and the
    // gateway's.
    let mut registry = missive_api::metrics::registry();
    gateway.register_metrics(&mut registry);
    gateway.set_metrics(crate::metrics_http::source(chat.clone(), registry));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let gateway_task = tokio::spawn({
        let gateway = gateway.clone();
        let stop = stopped(stop_rx.clone());
        async move { gateway.serve(http, stop).await }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    // The gateway first: its clients are told to reconnect while ChatService
    // still answers; then ChatService and the node.
    chat.serve(grpc, async move {
        stopped(stop_rx).await;
        // Give the gateway its grace to close WebSockets before ChatService
        // stops under it.
        let _ = gateway_task.await;
    })
    .await
    .context("serving ChatService")?;
    chat.shutdown().await?;
    println!("missive stopped");
    Ok(ExitCode::SUCCESS)
}
