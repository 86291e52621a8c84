//! `missive serve`: the embedded default — a one-node cluster running the
//! chat state machine, serving `ChatService` (gRPC) and the WebSocket
//! gateway on loopback, with its data in a local directory. The first run
//! initializes the cluster; later runs reopen it.
//!
//! On loopback it accepts tokens signed with a public development secret
//! (mint them with `missive token`, or `POST /dev/login` on the gateway);
//! bound anywhere else it refuses to start unless a JWT key is configured.
//!
//! The gateway keeps media under `<data>/media`, signing its URLs with a
//! random key kept in `<data>/media/key` (made once, mode 0600), so URLs
//! handed out survive a restart.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use missive_api::{Auth, Chat};
use missive_gateway::devlogin::Minter;
use missive_gateway::link::{DownStream, LocalNode, UpStream};
use missive_gateway::{Gateway, Limits, MediaConfig};
use missive_raft::{DEFAULT_PARTITIONS, Node as Member, NodeConfig};
use tokio::net::TcpListener;

use crate::jwt_arg::{self, JwtArgs};
use crate::retention_arg::RetentionArgs;
use crate::secret_arg;
use crate::tls_arg::TlsArgs;

/// The partitions a new one-node directory gets: one per two cores, at
/// least one and at most [`DEFAULT_PARTITIONS`].
fn one_node_partitions() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores / 2)
        .unwrap_or(u32::MAX)
        .clamp(1, DEFAULT_PARTITIONS)
}

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
    /// Partitions of a new data directory (fixed at creation). By
    /// default one per two cores, from 1 to 4: on one machine each
    /// partition costs a commit pipeline of its own, and more of them than
    /// the cores can run only makes each one's batches smaller
    /// (docs/benchmarks-ws.md, "Partitions of one node").
    #[arg(long)]
    partitions: Option<u32>,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Open WebSocket connections at most; more are refused with HTTP 503.
    #[arg(long, default_value_t = missive_gateway::limits::MAX_CONNECTIONS)]
    max_connections: usize,
}

/// The node id of the one-node cluster.
const NODE_ID: u64 = 1;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Each WebSocket is a descriptor, as in `missive gateway`.
    let files = crate::gateway_cmd::raise_open_files();
    crate::gateway_cmd::warn_if_files_short(
        args.max_connections,
        files,
        "for more, put `missive gateway`, which starts worker processes as the cap needs, in front of this node",
    );
    // The process holds a node and a gateway, each with tasks that a
    // `missive node` or `missive gateway` would run on a runtime of its
    // own, on cores it shares with the node's Raft, log and apply threads.
    // With one worker per core they held each other up under load; two
    // per core, one queue for both, did not (docs/gateway-link.md, "In one
    // process").
    let workers = std::thread::available_parallelism().map_or(2, |n| 2 * n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
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
    // What was bound, so that a port 0 prints the port it got.
    let grpc_addr = grpc.local_addr().context("the ChatService listener")?;
    let http_addr = http.local_addr().context("the gateway's listener")?;
    let mut config = NodeConfig::new(NODE_ID, &args.data, secret)?;
    config.partitions = args.partitions;
    config.new_partitions = one_node_partitions();
    config.log.retention = args.retention.policy();
    let chat = Chat::start_with(config, auth, internal, args.retention.chat_options())
        .await
        .with_context(|| format!("starting missive in {}", args.data.display()))?;
    let node = chat.node();
    if !node
        .is_initialized()
        .await
        .context("reading whether the cluster is initialized")?
    {
        let members = BTreeMap::from([(NODE_ID, Member::new(node.addr()))]);
        node.initialize(members)
            .await
            .context("initializing the one-node cluster")?;
    }
    let grpc_tls = args.tls.grpc()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (web, ws) = if grpc_tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    say!(
        "missive serving ChatService on {}{} and the WebSocket gateway on {ws}://{}/ws \
         ({} partition{}, data in {})",
        grpc_addr,
        if grpc_tls.is_some() { " (TLS)" } else { "" },
        http_addr,
        node.partitions(),
        if node.partitions() == 1 { "" } else { "s" },
        args.data.display()
    );
    say!("  the web app: {web}://{http_addr}/");
    say!("  a development token: missive token --user alice");
    // The embedded gateway reaches the node in this process directly, not
    // through ChatService's listener: no HTTP/2 between them, and nothing
    // to configure when that listener speaks only TLS.
    let node_side = Arc::new(LocalChat(missive_api::service::Link::new(&chat)));
    let limits = Limits {
        max_connections: args.max_connections,
        ..Limits::default()
    };
    let mut gateway = Gateway::local(node_side, limits)
        .with_media(media_config(&args.data)?)
        .context("opening the media store")?;
    if let Some(minter) = dev_login(chat.auth(), &[args.grpc.as_str(), args.http.as_str()]) {
        gateway = gateway
            .with_dev_login(minter)
            .context("enabling the development login")?;
        say!("  development login: POST {web}://{http_addr}/dev/login {{\"user\":\"alice\"}}");
    }
    if let Some(tls) = args.tls.gateway()? {
        gateway = gateway
            .with_tls(tls)
            .context("enabling TLS on the gateway")?;
    }
    // One `/metrics` on the gateway's listener: the node's series and the
    // gateway's.
    let mut registry = missive_api::metrics::registry();
    gateway.register_metrics(&mut registry);
    gateway.set_metrics(crate::metrics_http::source(chat.clone(), registry));
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
    chat.serve_tls(grpc, grpc_tls, async move {
        stopped(stop_rx).await;
        // Give the gateway its grace to close WebSockets before ChatService
        // stops under it.
        let _ = gateway_task.await;
    })
    .await
    .context("serving ChatService")?;
    chat.shutdown().await?;
    say!("missive stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long a development login's token lasts (as `missive token`'s).
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// The media store of `data`: `<data>/media`, signed with the key kept in
/// `<data>/media/key`.
fn media_config(data: &Path) -> anyhow::Result<MediaConfig> {
    let dir = data.join("media");
    let key_path = dir.join("key");
    let key = missive_gateway::media::load_or_create_key(&key_path)
        .with_context(|| format!("reading or creating {}", key_path.display()))?;
    Ok(MediaConfig::new(dir, key))
}

/// A minter for `POST /dev/login`, only when anyone may mint tokens anyway:
/// the node accepts tokens signed with the public development secret and
/// every client-facing address is on loopback.
fn dev_login(auth: &Auth, addrs: &[&str]) -> Option<Minter> {
    let dev = Auth::hs256(jwt_arg::DEV_JWT_SECRET.as_bytes()).ok()?;
    let probe = dev.mint("dev-login-probe", None, 60).ok()?;
    if auth.verify(&probe).is_err() || !addrs.iter().all(|a| is_loopback(a)) {
        return None;
    }
    Some(Arc::new(move |user: &str| {
        dev.mint(user, None, DEV_TOKEN_TTL_SECS)
            .map_err(|e| e.to_string())
    }))
}

fn is_loopback(addr: &str) -> bool {
    addr.to_socket_addrs()
        .map(|a| {
            let a: Vec<_> = a.collect();
            !a.is_empty() && a.iter().all(|a| a.ip().is_loopback())
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_login_is_on_only_with_the_development_secret_on_loopback() {
        let dev = Auth::hs256(jwt_arg::DEV_JWT_SECRET.as_bytes()).expect("the dev secret");
        let minter = dev_login(&dev, &["127.0.0.1:7070", "localhost:8080"]).expect("on");
        let token = minter("alice").expect("a token");
        assert_eq!(dev.verify(&token).expect("valid").user, "alice");

        assert!(dev_login(&dev, &["127.0.0.1:7070", "0.0.0.0:8080"]).is_none());
        let real = Auth::hs256(b"a real secret of at least 32 bytes, kept").expect("a secret");
        assert!(dev_login(&real, &["127.0.0.1:7070", "127.0.0.1:8080"]).is_none());
    }

    #[test]
    fn the_media_key_survives_a_restart() {
        let data = tempfile::tempdir().expect("tempdir");
        let a = media_config(data.path()).expect("first start");
        let b = media_config(data.path()).expect("second start");
        assert_eq!(a.key, b.key);
        assert_eq!(a.dir, data.path().join("media"));
    }
}

/// The node's end of the embedded gateway's link: the same `GatewayLink`
/// code a gateway in another process reaches over gRPC.
#[derive(Debug)]
struct LocalChat(missive_api::service::Link);

impl LocalNode for LocalChat {
    fn open(&self, up: UpStream) -> DownStream {
        self.0.open(up)
    }
}
