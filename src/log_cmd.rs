//! `missive log …`: offline tools over one partition's log directory.
//!
//! They read segments directly (missive_log::verify), take no lock and change
//! nothing, so they are safe to run beside a live node. `replay`, `restore`
//! and `diff` work on whole data (or backup) directories; each lives in its
//! own file (`log_replay.rs`, `log_restore.rs`, `log_diff.rs`).

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use missive_log::fs::StdFs;
use missive_log::verify::{self, Problem, VerifyReport};
use missive_proto::v1::{LogEntry, log_entry::Payload};
use prost::Message;
use serde_json::json;

use crate::time_fmt::rfc3339_ms;

/// Payload bound the tools accept; the same default the log itself uses.
const MAX_RECORD_BYTES: u32 = 16 << 20;

/// Bytes of an undecodable payload shown in text output.
const PREVIEW_BYTES: usize = 24;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check every record's CRC, index continuity and hash chain; print a
    /// summary per segment. Exits 1 on corruption, naming segment and byte.
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Print records, decoding missive.v1.LogEntry envelopes.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First index to print.
        #[arg(long)]
        from: Option<u64>,
        /// Last index to print (inclusive).
        #[arg(long)]
        to: Option<u64>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild every partition's projections offline from a stopped node's
    /// data directory or a backup, up to an index or a time; report
    /// events/s and MB/s.
    Replay(crate::log_replay::ReplayArgs),
    /// Build a new data directory from a backup, its projections replayed
    /// up to an index or a time, with a new history epoch, ready for
    /// `missive serve`.
    Restore(crate::log_restore::RestoreArgs),
    /// Compare the projections of two stopped data directories (or replay
    /// outputs) row by row; exits 1 if they differ.
    Diff(crate::log_diff::DiffArgs),
    /// Back up a node's data: offline from a stopped node's directory
    /// (--data), or online by a running node into a directory on its own
    /// file system (--node); incremental into an earlier backup.
    Backup(crate::log_backup::BackupArgs),
    /// Verify every partition's hash chain (of a data directory or a
    /// backup), print each head, and check or write checkpoints; exits 1
    /// on any finding.
    Audit(crate::log_audit::AuditArgs),
    /// Export a conversation's history, or what concerns one user, as JSON
    /// lines, as the chat state machine sees it (deleted bodies absent).
    Export(crate::log_export::ExportArgs),
}

pub fn run(cmd: LogCommand) -> Result<ExitCode> {
    match cmd {
        LogCommand::Verify { dir } => verify_cmd(dir),
        LogCommand::Dump {
            dir,
            from,
            to,
            json,
        } => dump_cmd(dir, from, to, json),
        LogCommand::Replay(args) => crate::log_replay::run(args),
        LogCommand::Restore(args) => crate::log_restore::run(args),
        LogCommand::Diff(args) => crate::log_diff::run(args),
        LogCommand::Backup(args) => crate::log_backup::run(args),
        LogCommand::Audit(args) => crate::log_audit::run(args),
        LogCommand::Export(args) => crate::log_export::run(args),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn verify_cmd(dir: PathBuf) -> Result<ExitCode> {
    let report = verify::verify_dir(&StdFs, &dir, MAX_RECORD_BYTES)
        .with_context(|| format!("cannot verify {}", dir.display()))?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:>20} {:>10} {:>12}  head hash",
        "segment", "first index", "records", "bytes"
    )?;
    for s in &report.segments {
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<28} {:>20} {:>10} {:>12}  {}",
            name,
            s.first_index,
            s.records,
            s.bytes,
            hex(&s.head_hash)
        )?;
    }
    match report.purge_point {
        Some(p) => writeln!(
            out,
            "purge point: records below {p} are purged (still on disk)"
        )?,
        None => writeln!(out, "purge point: none")?,
    }
    Ok(conclude(&mut out, &report)?)
}

/// Prints the verdict and picks the exit code: corruption fails; a torn
/// tail is what a crash (or a writer mid-batch) leaves and is only reported.
fn conclude(out: &mut impl Write, report: &VerifyReport) -> io::Result<ExitCode> {
    let head = report
        .head_hash()
        .map(|h| hex(&h))
        .unwrap_or_else(|| "-".into());
    match &report.problem {
        Some(Problem::Corruption {
            segment,
            position,
            kind,
        }) => {
            writeln!(
                out,
                "CORRUPTION in {} at byte {position}: {kind}",
                segment.display()
            )?;
            Ok(ExitCode::from(1))
        }
        Some(Problem::TornTail {
            segment,
            position,
            kind,
        }) => {
            writeln!(
                out,
                "torn tail in {} at byte {position} ({kind}): an unacknowledged last batch, \
                 cut off by the next open",
                segment.display()
            )?;
            writeln!(
                out,
                "OK: {} records in {} segments; head hash {head}",
                report.records(),
                report.segments.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            writeln!(
                out,
                "OK: {} records in {} segments; head hash {head}",
                report.records(),
                report.segments.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dump_cmd(dir: PathBuf, from: Option<u64>, to: Option<u64>, as_json: bool) -> Result<ExitCode> {
    let from = from.unwrap_or(0);
    let to = to.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_err = None;
    let report = verify::read_dir(&StdFs, &dir, MAX_RECORD_BYTES, |h, payload| {
        if h.index > to {
            return ControlFlow::Break(());
        }
        if h.index < from {
            return ControlFlow::Continue(());
        }
        let line = if as_json {
            json_line(h.index, h.timestamp, &h.chain_hash, payload)
        } else {
            text_line(h.index, h.timestamp, &h.chain_hash, payload)
        };
        match writeln!(out, "{line}") {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                // A closed pipe (`| head`) ends the dump quietly.
                write_err = Some(e);
                ControlFlow::Break(())
            }
        }
    })
    .with_context(|| format!("cannot read {}", dir.display()))?;
    if let Some(e) = write_err {
        return if e.kind() == io::ErrorKind::BrokenPipe {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(e.into())
        };
    }
    out.flush()?;
    match &report.problem {
        Some(Problem::Corruption {
            segment,
            position,
            kind,
        }) => {
            eprintln!(
                "CORRUPTION in {} at byte {position}: {kind}; dump stops there",
                segment.display()
            );
            Ok(ExitCode::from(1))
        }
        Some(Problem::TornTail {
            segment, position, ..
        }) => {
            eprintln!(
                "note: torn tail in {} at byte {position} not shown",
                segment.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What a payload is, as far as the envelope says.
fn describe(payload: &[u8]) -> Option<(LogEntry, &'static str)> {
    let entry = LogEntry::decode(payload).ok()?;
    let kind = match &entry.payload {
        Some(Payload::Blank(_)) => "blank",
        Some(Payload::Membership(_)) => "membership",
        Some(Payload::Command(_)) => "command",
        None => return None,
    };
    Some((entry, kind))
}

fn text_line(index: u64, timestamp: u64, hash: &[u8; 32], payload: &[u8]) -> String {
    let mut line = format!(
        "{index:>10}  {}  {}  {:>7} B  ",
        rfc3339_ms(timestamp),
        &hex(hash)[..16],
        payload.len()
    );
    match describe(payload) {
        Some((entry, kind)) => {
            let leader = entry
                .leader
                .map(|l| format!("term {} node {}", l.term, l.node_id))
                .unwrap_or_default();
            let _ = write!(line, "{kind} ({leader})");
            match entry.payload {
                Some(Payload::Command(c)) => {
                    let _ = write!(line, " request {:?}, {} B body", c.request_id, c.body.len());
                }
                Some(Payload::Membership(m)) => {
                    let voters: Vec<Vec<u64>> = m
                        .voter_sets
                        .iter()
                        .map(|s| s.voters.iter().map(|n| n.id).collect())
                        .collect();
                    let learners: Vec<u64> = m.learners.iter().map(|n| n.id).collect();
                    let _ = write!(line, " voters {voters:?} learners {learners:?}");
                }
                _ => {}
            }
        }
        None => {
            let shown = &payload[..payload.len().min(PREVIEW_BYTES)];
            let ellipsis = if payload.len() > PREVIEW_BYTES {
                "…"
            } else {
                ""
            };
            let _ = write!(line, "raw {}{ellipsis}", hex(shown));
        }
    }
    line
}

fn json_line(index: u64, timestamp: u64, hash: &[u8; 32], payload: &[u8]) -> String {
    let described = describe(payload);
    let payload_hex = described.is_none().then(|| hex(payload));
    let entry = described.map(|(entry, kind)| {
        let leader = entry
            .leader
            .map(|l| json!({ "term": l.term, "node_id": l.node_id }));
        let mut v =
            json!({ "kind": kind, "envelope_version": entry.envelope_version, "leader": leader });
        match entry.payload {
            Some(Payload::Command(c)) => {
                v["request_id"] = json!(c.request_id);
                v["body_hex"] = json!(hex(&c.body));
            }
            Some(Payload::Membership(m)) => {
                let node = |n: &missive_proto::v1::Node| json!({ "id": n.id, "addr": n.addr });
                v["voter_sets"] = m
                    .voter_sets
                    .iter()
                    .map(|s| s.voters.iter().map(node).collect::<Vec<_>>())
                    .collect();
                v["learners"] = m.learners.iter().map(node).collect();
            }
            _ => {}
        }
        v
    });
    json!({
        "index": index,
        "timestamp_ms": timestamp,
        "time": rfc3339_ms(timestamp),
        "chain_hash": hex(hash),
        "len": payload.len(),
        "entry": entry,
        "payload_hex": payload_hex,
    })
    .to_string()
}
