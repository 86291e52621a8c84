//! `missive gateway`: a standalone WebSocket gateway in front of ChatService
//! nodes, until SIGTERM or Ctrl-C.
//!
//! The gateway is stateless and holds no key: the nodes check every JWT (it
//! passes tokens through), so it takes only the nodes' ChatService
//! addresses. Any number of gateways may front the same nodes; a client
//! resumes on any of them from its last token.
//!
//! Each WebSocket is one file descriptor, so the process raises its soft
//! limit of open files to the hard limit before it listens: the connection
//! cap (`--max-connections`) is only reachable if the descriptors are there.
//! Past what one process may open, `--workers N` makes the gateway N
//! processes sharing its port (`gateway_workers`).

use std::process::ExitCode;

use anyhow::Context;
use missive_gateway::{Gateway, Limits};
use rustix::process::{Resource, getrlimit, setrlimit};
use tokio::net::TcpListener;

use crate::gateway_workers::Workers;

/// Runs a gateway.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// A ChatService node (`host:port`); repeat for several. Calls go to the
    /// first that answers and fail over to the others.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Where the gateway (HTTP: `/ws`, `/healthz`) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// CA certificates (PEM) that nodes' ChatService certificates chain to:
    /// the nodes are then reached over TLS (`https://`).
    #[arg(long)]
    node_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: crate::tls_arg::TlsArgs,
    /// Open WebSocket connections at most; more are refused with HTTP 503.
    #[arg(long, default_value_t = missive_gateway::limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Worker processes sharing the listening port, each holding up to its
    /// share of `--max-connections`: one process can open no more files
    /// than its hard limit (`ulimit -Hn`), and every WebSocket is one.
    /// `auto`: as many as `--max-connections` needs under that limit (one
    /// unless the cap exceeds it). With more than one, SIGHUP replaces the
    /// workers one at a time, the port open throughout (an upgrade of the
    /// binary on disk).
    #[arg(long, default_value_t = Workers::Auto)]
    workers: Workers,
    #[command(flatten)]
    worker: crate::gateway_workers::WorkerArgs,
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let workers = args
        .workers
        .resolve(args.max_connections, getrlimit(Resource::Nofile).maximum);
    if workers > 1 && args.worker.worker().is_none() {
        return crate::gateway_workers::supervise(&crate::gateway_workers::Plan {
            listen: &args.listen,
            workers,
            nodes: &args.nodes,
            max_connections: args.max_connections,
            // A worker's own graceful stop, and time to exit after it.
            stop_grace: Limits::default().shutdown_grace + std::time::Duration::from_secs(5),
        });
    }
    let files = raise_open_files();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(args, files))
}

/// Says so on stderr when `max_connections` WebSockets cannot all be open
/// in one process of `files` open files (`None`: no limit), with `hint`
/// on what to do instead.
pub(crate) fn warn_if_files_short(max_connections: usize, files: Option<u64>, hint: &str) {
    let Some(files) = files else { return };
    let fit = crate::gateway_workers::connections_per_process(files);
    if max_connections as u64 > fit {
        eprintln!(
            "warning: at most about {fit} of the {max_connections} connections allowed fit in this process's {files} open files; {hint}"
        );
    }
}

/// Raises the soft limit of open files to the hard limit; the soft limit
/// now. A failure leaves the limit as it was: the gateway still runs, with
/// fewer connections possible (it says how many below).
pub(crate) fn raise_open_files() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("warning: raising the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

async fn serve(args: GatewayArgs, files: Option<u64>) -> anyhow::Result<ExitCode> {
    let worker = args.worker.worker();
    if let Some(w) = &worker {
        w.follow_supervisor()?;
    }
    let max_connections = worker
        .as_ref()
        .map_or(args.max_connections, |w| w.share_of(args.max_connections));
    if worker.is_none() {
        warn_if_files_short(
            max_connections,
            files,
            "`--workers auto` starts as many processes as the cap needs",
        );
    }
    let limits = Limits {
        max_connections,
        ..Limits::default()
    };
    let node_tls = args
        .node_ca
        .as_deref()
        .map(missive_gateway::tls::node_client_config)
        .transpose()?;
    let mut gateway = Gateway::with_node_tls(args.nodes.clone(), limits, node_tls)
        .context("starting the gateway")?;
    let tls = args.tls.gateway()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    if let Some(tls) = tls {
        gateway = gateway.with_tls(tls).context("enabling TLS")?;
    }
    let files = files.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    let listener = match &worker {
        Some(w) => {
            let listener = w.listen()?;
            gateway.set_metrics(w.metrics_source(gateway.clone()));
            w.answer_siblings(gateway.clone())?;
            say!(
                "missive gateway worker {} (pid {}) on {scheme}://{}/ws (at most {} connections; {files} open files)",
                w.index(),
                std::process::id(),
                listener.local_addr()?,
                max_connections,
            );
            listener
        }
        None => {
            let listener = TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            say!(
                "missive gateway on {scheme}://{}/ws in front of {} (at most {} connections; {files} open files)",
                args.listen,
                args.nodes.join(", "),
                args.max_connections,
            );
            listener
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    gateway
        .serve(listener, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .context("serving the gateway")?;
    match &worker {
        Some(w) => say!("missive gateway worker {} stopped", w.index()),
        None => say!("missive gateway stopped"),
    }
    Ok(ExitCode::SUCCESS)
}
