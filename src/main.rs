//! `missive`: the one binary.
//!
//! - `log`: offline tools for a partition's log directory.
//! - `node`: runs a cluster node (internal gRPC service, P partitions).
//! - `cluster`: init, add-node, remove-node, status against a running node.
//! - `kv`: writes through any node, and a stopped node's committed writes.
//! - `serve`: the embedded default, a one-node chat cluster on loopback.
//! - `gateway`: a standalone WebSocket gateway in front of ChatService nodes.
//! - `token`: mints development JWTs.
//! - `admin`: `status`, one screen about a running node and its cluster.

/// `println!` for the servers' lines on stdout: a stdout nobody reads any
/// more (`missive serve | head -1`) must not stop a server, as `println!`
/// would by panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod admin_cmd;
mod allocator;
mod cluster_cmd;
mod gateway_cmd;
mod gateway_workers;
mod jwt_arg;
mod kv_cmd;
mod log_audit;
mod log_backup;
mod log_cmd;
mod log_diff;
mod log_export;
mod log_replay;
mod log_restore;
mod logging;
mod metrics_http;
mod node_client;
mod node_cmd;
mod progress_bar;
mod retention_arg;
mod secret_arg;
mod serve_cmd;
mod time_arg;
mod time_fmt;
mod tls_arg;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// missive: a chat backend built as an event-sourced, log-structured store.
#[derive(Debug, Parser)]
#[command(name = "missive", version, about)]
struct Cli {
    /// How log lines on stderr are written (levels: MISSIVE_LOG).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline tools for a log directory (one partition's segments).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Runs a cluster node until SIGTERM or Ctrl-C.
    Node(node_cmd::NodeArgs),
    /// Cluster operations, sent to a running node.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// The key-value state machine: put through a node, dump a stopped one.
    #[command(subcommand)]
    Kv(kv_cmd::KvCommand),
    /// Runs missive on this machine: a one-node cluster serving ChatService
    /// on loopback.
    Serve(serve_cmd::ServeArgs),
    /// Runs a WebSocket gateway in front of ChatService nodes until
    /// SIGTERM or Ctrl-C.
    Gateway(gateway_cmd::GatewayArgs),
    /// Mints a development token (JWT).
    Token(token_cmd::TokenArgs),
    /// Operators' views of a running node.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Node(_) | Command::Serve(_) | Command::Gateway(_)
    ) {
        allocator::size_thread_cache();
    }
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Log(cmd) => log_cmd::run(cmd),
        Command::Node(args) => node_cmd::run(args),
        Command::Cluster(cmd) => cluster_cmd::run(cmd),
        Command::Kv(cmd) => kv_cmd::run(cmd),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Gateway(args) => gateway_cmd::run(args),
        Command::Token(args) => token_cmd::run(args),
        Command::Admin(cmd) => admin_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
