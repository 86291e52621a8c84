//! `missive serve`: the embedded default — a one-node cluster running the
//! chat state machine, serving `ChatService` on loopback, with its data in a
//! local directory. The first run initializes the cluster; later runs
//! reopen it.
//!
//! On loopback it accepts tokens signed with a public development secret
//! (mint them with `missive token`); bound anywhere else it refuses to start
//! unless a JWT key is configured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use missive_api::Chat;
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
    let auth = jwt_arg::resolve(&args.jwt, &[args.grpc.as_str()])?;
    let secret = secret_arg::resolve(None, &[args.internal.as_str()])?;
    let internal = TcpListener::bind(&args.internal)
        .await
        .with_context(|| format!("listening on {}", args.internal))?;
    let grpc = TcpListener::bind(&args.grpc)
        .await
        .with_context(|| format!("listening on {}", args.grpc))?;
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
        "missive serving ChatService on {} ({} partitions, data in {})",
        args.grpc,
        node.partitions(),
        args.data.display()
    );
    println!("  a development token: missive token --user alice");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    chat.serve(grpc, stop)
        .await
        .context("serving ChatService")?;
    chat.shutdown().await?;
    println!("missive stopped");
    Ok(ExitCode::SUCCESS)
}
