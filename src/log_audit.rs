//! `missive log audit`: proves a node's (or a backup's) history is intact.
//!
//! Every partition's log is verified record by record (CRC, index
//! continuity, hash chain: `missive_log::verify`), and its head — the last
//! committed index and the chain hash at it — is printed. A checkpoint file
//! written by an earlier audit (`--write-checkpoint`) records, per
//! partition, an index and the chain hash at it; a later audit given it
//! (`--checkpoint`) checks that the chain hash at that index is still the
//! same. Since each chain hash covers every record before it, a match
//! proves the whole history up to the checkpoint unchanged, and a mismatch
//! proves it was changed.
//!
//! For a backup (`--backup`), every file is also checked against the size
//! and BLAKE3 its manifest lists, and each partition's head against the
//! manifest's.
//!
//! Any finding is printed with its partition (and for damage, the segment
//! file and byte position) and makes the command exit 1. Read-only; safe
//! beside a running node (its uncommitted tail is not checkpointed).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use missive_log::ChainHash;
use missive_log::format::SegmentHeader;
use missive_log::fs::StdFs;
use missive_log::verify::{self, Problem};
use missive_raft::LOG_DIR;
use missive_raft::backup::{self, Manifest, hex, parse_hash};
use missive_raft::node::partition_dir;
use serde_json::{Value, json};

/// Payload bound the audit accepts; the log's default.
const MAX_RECORD_BYTES: u32 = 16 << 20;

/// The value of a checkpoint file's `format` field.
const CHECKPOINT_FORMAT: &str = "missive-audit-checkpoint";

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A node's data directory (running or stopped).
    #[arg(long, conflicts_with = "backup", required_unless_present = "backup")]
    data: Option<PathBuf>,
    /// A backup directory (`missive log backup`).
    #[arg(long)]
    backup: Option<PathBuf>,
    /// A checkpoint from an earlier audit: the history up to it must be
    /// unchanged.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Write this audit's heads as a checkpoint for later audits.
    #[arg(long)]
    write_checkpoint: Option<PathBuf>,
}

/// One partition's entry in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    index: u64,
    hash: ChainHash,
}

/// What the audit found in one partition.
struct PartitionAudit {
    /// The committed head (index, hash), if any record is committed.
    head: Option<Mark>,
    /// Records on disk.
    records: u64,
    /// Segments on disk.
    segments: usize,
}

pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let (dir, manifest) = match (&args.data, &args.backup) {
        (Some(d), None) => (d.clone(), None),
        (None, Some(b)) => {
            let m = Manifest::read(b)
                .with_context(|| format!("reading the manifest of {}", b.display()))?
                .with_context(|| {
                    format!(
                        "{} has no manifest.json: not a finished backup",
                        b.display()
                    )
                })?;
            (b.clone(), Some(m))
        }
        _ => bail!("give either --data or --backup"),
    };
    let checkpoint = match &args.checkpoint {
        Some(path) => Some(read_checkpoint(path)?),
        None => None,
    };
    let mut failures = 0u32;
    let mut out = std::io::stdout().lock();
    if let Some(m) = &manifest {
        failures += check_files(&dir, m, &mut out)?;
    }
    let mut heads = BTreeMap::new();
    for p in backup::partition_numbers(&dir)? {
        // The committed head: a backup's manifest, a node's raft metadata.
        let committed = match &manifest {
            Some(m) => m
                .partitions
                .iter()
                .find(|e| e.partition == p)
                .and_then(|e| e.committed_index),
            None => backup::committed_index(&partition_dir(&dir, p))?,
        };
        let wanted = checkpoint.as_ref().and_then(|c| c.get(&p)).map(|m| m.index);
        let (audit, problem, at_checkpoint) = audit_partition(&dir, p, committed, wanted)?;
        match &audit.head {
            Some(h) => writeln!(
                out,
                "partition {p:>3}: {} records in {} segments; head index {} hash {}",
                audit.records,
                audit.segments,
                h.index,
                hex(&h.hash)
            )?,
            None => writeln!(
                out,
                "partition {p:>3}: {} records in {} segments; no committed record",
                audit.records, audit.segments
            )?,
        }
        if let Some(problem) = problem {
            failures += 1;
            writeln!(out, "partition {p:>3}: {problem}")?;
        }
        if let Some(m) = &manifest
            && let Some(e) = m.partitions.iter().find(|e| e.partition == p)
            && e.head_hash != audit.head.map(|h| h.hash)
        {
            failures += 1;
            writeln!(
                out,
                "partition {p:>3}: MISMATCH: the head hash differs from the manifest's ({})",
                e.head_hash.map_or_else(|| "none".into(), |h| hex(&h))
            )?;
        }
        if let Some(mark) = checkpoint.as_ref().and_then(|c| c.get(&p)) {
            match at_checkpoint {
                Some(hash) if hash == mark.hash => writeln!(
                    out,
                    "partition {p:>3}: checkpoint at index {} holds: history up to it is unchanged",
                    mark.index
                )?,
                Some(hash) => {
                    failures += 1;
                    writeln!(
                        out,
                        "partition {p:>3}: CHECKPOINT MISMATCH at index {}: chain hash is {}, \
                         the checkpoint says {}: history up to it was changed",
                        mark.index,
                        hex(&hash),
                        hex(&mark.hash)
                    )?;
                }
                None => {
                    failures += 1;
                    writeln!(
                        out,
                        "partition {p:>3}: CHECKPOINT UNVERIFIABLE: index {} is not on disk \
                         (beyond the committed head, or deleted by retention)",
                        mark.index
                    )?;
                }
            }
        }
        if let Some(h) = audit.head {
            heads.insert(p, h);
        }
    }
    if let Some(c) = &checkpoint {
        for p in c.keys().filter(|p| !heads.contains_key(p)) {
            if !backup::partition_numbers(&dir)?.contains(p) {
                failures += 1;
                writeln!(
                    out,
                    "partition {p:>3}: CHECKPOINT UNVERIFIABLE: the partition is missing"
                )?;
            }
        }
    }
    if let Some(path) = &args.write_checkpoint {
        write_checkpoint(path, &heads)?;
        writeln!(out, "checkpoint written to {}", path.display())?;
    }
    if failures > 0 {
        writeln!(out, "AUDIT FAILED: {failures} finding(s)")?;
        Ok(ExitCode::from(1))
    } else {
        writeln!(out, "AUDIT OK")?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Verifies partition `p`'s log in `dir`. Returns what it found, the
/// first problem (described), and the chain hash at `wanted` if on disk.
fn audit_partition(
    dir: &Path,
    p: u32,
    committed: Option<u64>,
    wanted: Option<u64>,
) -> Result<(PartitionAudit, Option<String>, Option<ChainHash>)> {
    let log_dir = partition_dir(dir, p).join(LOG_DIR);
    let mut at_committed = None;
    let mut at_wanted = None;
    let mut last = None;
    let report = verify::read_dir(&StdFs, &log_dir, MAX_RECORD_BYTES, |h, _| {
        if Some(h.index) == committed {
            at_committed = Some(h.chain_hash);
        }
        if Some(h.index) == wanted {
            at_wanted = Some(h.chain_hash);
        }
        last = Some(Mark {
            index: h.index,
            hash: h.chain_hash,
        });
        ControlFlow::Continue(())
    })
    .with_context(|| format!("verifying {}", log_dir.display()))?;
    let problem = match &report.problem {
        Some(Problem::Corruption {
            segment,
            position,
            kind,
        }) => Some(format!(
            "CORRUPTION in segment {} at byte {position}: {kind}",
            segment.display()
        )),
        // What a crash or a writer mid-batch leaves after the committed
        // head: not a finding.
        Some(Problem::TornTail { .. }) | None => None,
    };
    // Without a recorded committed index (a log outside a node), the last
    // valid record is the head.
    let head = match committed {
        Some(index) => at_committed
            .or_else(|| hash_before_first_segment(&report, index))
            .map(|hash| Mark { index, hash }),
        None => last,
    };
    let problem = problem.or_else(|| {
        (committed.is_some() && head.is_none() && report.segments.iter().any(|s| s.records > 0))
            .then(|| {
                format!(
                    "MISSING: committed index {} is not in the log",
                    committed.unwrap_or_default()
                )
            })
    });
    Ok((
        PartitionAudit {
            head,
            records: report.records(),
            segments: report.segments.len(),
        },
        problem,
        at_wanted,
    ))
}

/// The chain hash of record `index` when it is the record just before the
/// first segment on disk (a replica that caught up by snapshot, or one
/// whose older segments retention deleted): that segment's header holds it.
fn hash_before_first_segment(report: &verify::VerifyReport, index: u64) -> Option<ChainHash> {
    let first = report.segments.first()?;
    if first.first_index != index.checked_add(1)? {
        return None;
    }
    let mut header = [0u8; missive_log::format::SEGMENT_HEADER_LEN];
    std::io::Read::read_exact(&mut std::fs::File::open(&first.path).ok()?, &mut header).ok()?;
    SegmentHeader::decode(&header).ok().map(|h| h.prev_hash)
}

/// Checks every file a backup's manifest lists; returns the findings.
fn check_files(dir: &Path, m: &Manifest, out: &mut impl std::io::Write) -> Result<u32> {
    let problems = m.check_files(dir);
    for p in &problems {
        writeln!(out, "MISMATCH: {p}")?;
    }
    Ok(problems.len() as u32)
}

fn read_checkpoint(path: &Path) -> Result<BTreeMap<u32, Mark>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a checkpoint", path.display()))?;
    if v["format"] != CHECKPOINT_FORMAT || v["version"] != 1 {
        bail!("{} is not a missive audit checkpoint", path.display());
    }
    let mut marks = BTreeMap::new();
    for e in v["partitions"]
        .as_array()
        .context("checkpoint: partitions")?
    {
        let p = e["partition"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .context("checkpoint: partition")?;
        let index = e["index"].as_u64().context("checkpoint: index")?;
        let hash = e["chain_hash"]
            .as_str()
            .and_then(parse_hash)
            .context("checkpoint: chain_hash")?;
        marks.insert(p, Mark { index, hash });
    }
    Ok(marks)
}

fn write_checkpoint(path: &Path, heads: &BTreeMap<u32, Mark>) -> Result<()> {
    let partitions: Vec<Value> = heads
        .iter()
        .map(|(p, m)| json!({ "partition": p, "index": m.index, "chain_hash": hex(&m.hash) }))
        .collect();
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let v = json!({
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "created_ms": created_ms,
        "partitions": partitions,
    });
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{}", serde_json::to_string_pretty(&v)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
