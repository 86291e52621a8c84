//! `missive log restore`: builds a new data directory from a backup (or a
//! stopped node's data directory) whose projections equal a replay of the
//! log up to a point, ready for `missive serve --data NEW_DIR`.
//!
//! Per partition: the projections are rebuilt up to the point, a new
//! history epoch is stored (clients holding an older sync token resync
//! fully), and the partition is seeded with that state as its snapshot —
//! whose membership is a one-node cluster of node 1, the node `missive
//! serve` runs — and an empty log continuing the old log's hash chain.
//! docs/operations.md says why.
//!
//! `--to-time` is one point across the cluster. `--to-index` applies to
//! every partition alike; each partition's indexes are its own, so it is
//! meant for a one-partition cluster or for a partition-by-partition
//! investigation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use missive_api::offline::{Source, Target, epoch_of, new_epoch, restored_state, seed_restored};
use missive_raft::node::partition_dir;
use missive_raft::offline::create_node_meta;

use crate::log_replay::{describe, rebuild_all, stop_at};

/// The id of the restored cluster's one node: the one `missive serve` runs.
const NODE_ID: u64 = 1;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup (or stopped node's data directory) to restore from.
    backup: PathBuf,
    /// Restore each partition to this index (or its end, if shorter).
    #[arg(long, conflicts_with = "to_time", required_unless_present = "to_time")]
    to_index: Option<u64>,
    /// Restore every partition to the last entry at or before this time
    /// (RFC 3339, or ms since the Unix epoch).
    #[arg(long)]
    to_time: Option<String>,
    /// The new data directory (must not exist, or be empty).
    #[arg(long)]
    data: PathBuf,
    /// The internal address the new node will listen on (`missive serve
    /// --internal`), recorded in the new cluster's membership.
    #[arg(long, default_value = "127.0.0.1:7001")]
    advertise: String,
    /// Partitions rebuilt at once.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: RestoreArgs) -> Result<ExitCode> {
    let stop = stop_at(args.to_index, args.to_time.as_deref())?;
    let source =
        Source::open(&args.backup).with_context(|| format!("reading {}", args.backup.display()))?;
    if args.data.exists() && std::fs::read_dir(&args.data)?.next().is_some() {
        bail!(
            "{} exists and is not empty: restore builds a new data directory",
            args.data.display()
        );
    }
    match restore(&args, &source, stop) {
        Ok(code) => Ok(code),
        Err(e) => {
            // Half a data directory must not look like a node's.
            let _ = std::fs::remove_dir_all(&args.data);
            Err(e)
        }
    }
}

fn restore(
    args: &RestoreArgs,
    source: &Source,
    stop: missive_api::offline::StopAt,
) -> Result<ExitCode> {
    let rebuilds = rebuild_all(
        source,
        stop,
        &args.data,
        missive_api::offline::DEFAULT_BATCH,
        args.threads,
        "restore",
    )?;
    let mut parts = rebuilds.parts;
    for (_, r) in &parts {
        if r.target == Target::Nothing || r.last_applied.is_none() {
            bail!(
                "partition {} has no entry at or before the restore point: nothing to restore",
                r.partition
            );
        }
    }
    let mut old = Vec::new();
    for (sm, _) in &parts {
        old.push(epoch_of(sm.store()?.as_ref())?);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let epoch = new_epoch(old, now_ms);
    for (sm, r) in &mut parts {
        let index = r
            .last_applied
            .map(|id| id.index)
            .context("invariant: checked above")?;
        let state = restored_state(index, NODE_ID, &args.advertise)?;
        seed_restored(
            sm,
            r,
            &partition_dir(&args.data, r.partition),
            &state,
            epoch,
        )
        .with_context(|| format!("partition {}", r.partition))?;
        println!("{}", describe(r));
    }
    drop(parts);
    create_node_meta(&args.data, NODE_ID, source.partitions())?;
    println!(
        "restored {} partitions into {} with history epoch {epoch}",
        source.partitions(),
        args.data.display()
    );
    println!(
        "start it with: missive serve --data {} --internal {}",
        args.data.display(),
        args.advertise
    );
    Ok(ExitCode::SUCCESS)
}
