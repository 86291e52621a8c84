//! `missive log diff`: compares the projections of two directories laid
//! out like data directories (a stopped node's, a restored one, or a
//! `missive log replay --out` directory), partition by partition, table by
//! table, key by key, and names every row that differs with both values
//! decoded. Exits 0 when they hold the same history, 1 when they differ.
//!
//! The stores are opened read-only; redb refuses a store a running node
//! holds open, so compare a stopped node (or a copy of its directory).
//! Where each store stands (its last applied index) and its history epoch
//! are printed; the epoch is not a difference (a restore changes it on
//! purpose).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use missive_api::offline::{Side, Source, compare_stores};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The first directory (replayed, restored, or a node's).
    #[arg(long)]
    data: PathBuf,
    /// The directory to compare it with (a stopped node's).
    #[arg(long)]
    against: PathBuf,
    /// Differences shown per partition (all are counted).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON object per difference, then a summary object, instead of
    /// text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DiffArgs) -> Result<ExitCode> {
    let a = Source::open(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let b = Source::open(&args.against)
        .with_context(|| format!("reading {}", args.against.display()))?;
    if a.partitions() != b.partitions() {
        bail!(
            "{} has {} partitions, {} has {}: not the same cluster",
            args.data.display(),
            a.partitions(),
            args.against.display(),
            b.partitions()
        );
    }
    let mut total = 0u64;
    for p in 0..a.partitions() {
        let c = compare_stores(&a.projections_path(p), &b.projections_path(p), args.limit)
            .with_context(|| format!("partition {p}"))?;
        total += c.count;
        let rows: u64 = c.rows.iter().map(|(_, l, _)| l).sum();
        if args.json {
            for d in &c.differences {
                println!(
                    "{}",
                    json!({
                        "partition": p,
                        "table": d.table,
                        "key": d.key,
                        "side": match d.side { Side::Left => "data", Side::Right => "against", Side::Both => "both" },
                        "data": d.left,
                        "against": d.right,
                    })
                );
            }
        } else {
            println!(
                "partition {p}: {rows} rows; applied index {} vs {}; epoch {} vs {}; {} differences",
                opt(c.applied.0),
                opt(c.applied.1),
                c.epoch.0,
                c.epoch.1,
                c.count
            );
            for d in &c.differences {
                match d.side {
                    Side::Left => println!(
                        "  {} [{}]: only in --data: {}",
                        d.table,
                        d.key,
                        d.left.as_deref().unwrap_or("")
                    ),
                    Side::Right => println!(
                        "  {} [{}]: only in --against: {}",
                        d.table,
                        d.key,
                        d.right.as_deref().unwrap_or("")
                    ),
                    Side::Both => {
                        println!("  {} [{}]: values differ", d.table, d.key);
                        println!("    --data:    {}", d.left.as_deref().unwrap_or(""));
                        println!("    --against: {}", d.right.as_deref().unwrap_or(""));
                    }
                }
            }
            if c.count > c.differences.len() as u64 {
                println!(
                    "  … and {} more (--limit)",
                    c.count - c.differences.len() as u64
                );
            }
        }
    }
    if args.json {
        println!("{}", json!({ "differences": total, "same": total == 0 }));
    } else if total == 0 {
        println!("same history: no difference");
    } else {
        println!("{total} differences");
    }
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn opt(i: Option<u64>) -> String {
    i.map_or_else(|| "-".into(), |i| i.to_string())
}
