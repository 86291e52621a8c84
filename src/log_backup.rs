//! `missive log backup`: a backup of a node's data, offline (`--data`, a
//! stopped node's directory) or online (`--node`, asking a running node to
//! write one on its own file system through `ChatAdmin.Backup`).
//!
//! Both write the same layout (docs/backup-and-audit.md): a directory that
//! mirrors a data directory, with `manifest.json` written last. A target
//! that holds an earlier backup is updated incrementally.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use missive_proto::v1::BackupRequest;
use missive_proto::v1::chat_admin_client::ChatAdminClient;
use missive_raft::backup::{self, Manifest, hex};
use tonic::transport::Endpoint;

use crate::node_client::block_on;
use crate::secret_arg;

/// How long an online backup may take before the command gives up waiting
/// (the node finishes or abandons it on its own).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A stopped node's data directory (offline backup).
    #[arg(long, conflicts_with = "node", required_unless_present = "node")]
    data: Option<PathBuf>,
    /// A running node's ChatService address, host:port (online backup,
    /// written by the node into --to on its own file system).
    #[arg(long)]
    node: Option<String>,
    /// The backup directory (absolute for --node: a path on the node).
    #[arg(long)]
    to: PathBuf,
    /// The cluster secret for --node (or MISSIVE_CLUSTER_SECRET); optional
    /// on loopback.
    #[arg(long)]
    secret: Option<String>,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BackupArgs) -> Result<ExitCode> {
    let manifest = match (&args.data, &args.node) {
        (Some(data), None) => backup::backup_offline(data, &args.to)
            .with_context(|| format!("backing up {}", data.display()))?,
        (None, Some(node)) => online(node, &args)?,
        _ => bail!("give either --data or --node"),
    };
    if args.json {
        println!("{}", manifest.to_json());
    } else {
        print_summary(&manifest, &args.to);
    }
    Ok(ExitCode::SUCCESS)
}

fn online(node: &str, args: &BackupArgs) -> Result<Manifest> {
    let secret = secret_arg::resolve(args.secret.clone(), &[node])?;
    let to = args
        .to
        .to_str()
        .context("the backup path must be UTF-8")?
        .to_owned();
    if !args.to.is_absolute() {
        bail!("--to must be an absolute path on the node when --node is given");
    }
    block_on(async move {
        let channel = Endpoint::from_shared(format!("http://{node}"))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("connecting to {node}"))?;
        let mut client = ChatAdminClient::new(channel);
        let mut req = tonic::Request::new(BackupRequest { to: to.clone() });
        req.set_timeout(BACKUP_TIMEOUT);
        secret.attach(&mut req);
        let resp = client
            .backup(req)
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", node, s.message()))?
            .into_inner();
        Manifest::parse(&resp.manifest_json, std::path::Path::new(&to))
            .context("the node's answer is not a backup manifest")
    })
}

fn print_summary(m: &Manifest, to: &std::path::Path) {
    println!(
        "{} backup in {}: {} files, {} bytes copied, {} bytes skipped (unchanged)",
        m.kind,
        to.display(),
        m.files.len(),
        m.bytes_copied,
        m.bytes_skipped
    );
    for p in &m.partitions {
        let index = p
            .committed_index
            .map_or_else(|| "-".to_owned(), |i| i.to_string());
        let hash = p.head_hash.map_or_else(|| "-".to_owned(), |h| hex(&h));
        let snap = p
            .snapshot_index
            .map_or_else(|| "none".to_owned(), |i| i.to_string());
        println!(
            "partition {:>3}: committed index {index:>10}  head hash {hash}  snapshot {snap}",
            p.partition
        );
    }
}
