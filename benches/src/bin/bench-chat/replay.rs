//! Rebuilding the projections from the log, offline, beside the raw scan
//! of the same log.
//!
//! The node is stopped. Each partition's log directory is read with
//! `missive_log::verify::read_dir` (every segment on disk, purged ones
//! included: purge is logical, so the log keeps the whole history), each
//! record's `missive.v1.LogEntry` is decoded, and its commands are applied
//! to a fresh `ChatStateMachine` in a temporary store, in batches, through
//! the `StateMachine` trait, exactly as the node applies them. An event
//! here is one applied command.
//!
//! Beside them, the store's limit (`missive_benches::store_limit`): the
//! rows of the stores the first pass rebuilt, written by redb alone in key
//! order into fresh files, one transaction and one durable commit each,
//! one store at a time and all in parallel. No replay into redb beats it.
//!
//! Time is split three ways: the scan (reading, CRC and hash chain: what
//! the raw scan measures alone), decoding the envelopes, and `apply`
//! (decoding the chat commands, the redb transaction and its commit).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use missive_api::ChatStateMachine;
use missive_benches::stats::median_of;
use missive_benches::store_limit::{self, Limit};
use missive_log::format::parse_segment_file_name;
use missive_log::fs::StdFs;
use missive_log::verify::{Problem, read_dir};
use missive_proto::v1 as pb;
use missive_proto::v1::log_entry::Payload;
use missive_raft::node::partition_dir;
use missive_raft::state_machine::StateMachine;
use missive_raft::types::{LeaderId, LogId, StoredMembership};
use missive_raft::{AppliedState, Command, CommandEntry, LOG_DIR, MAX_APPLY_BATCH};
use prost::Message;

/// A larger batch than the node's, to see what batching alone buys: the
/// offline rebuild's (`missive log replay`).
const LARGE_BATCH: usize = missive_api::offline::DEFAULT_BATCH;

/// One pass over every partition's log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pass {
    /// Wall time.
    pub(crate) secs: f64,
    /// Records (entries) read, and among them commands applied.
    pub(crate) records: u64,
    pub(crate) commands: u64,
    /// Time in the scan, in envelope decoding, in `apply` (summed over the
    /// threads of a parallel pass).
    pub(crate) scan_secs: f64,
    pub(crate) decode_secs: f64,
    pub(crate) apply_secs: f64,
    /// Opening the fresh stores, and closing them (redb's last durable
    /// commit), which the other parts leave out.
    pub(crate) open_close_secs: f64,
    /// `apply` calls.
    pub(crate) batches: u64,
}

impl Pass {
    pub(crate) fn events_per_s(&self) -> f64 {
        self.commands as f64 / self.secs
    }

    fn add(&mut self, o: &Pass) {
        self.records += o.records;
        self.commands += o.commands;
        self.scan_secs += o.scan_secs;
        self.decode_secs += o.decode_secs;
        self.apply_secs += o.apply_secs;
        self.open_close_secs += o.open_close_secs;
        self.batches += o.batches;
    }
}

/// A way of replaying and its passes' medians.
#[derive(Clone, Debug)]
pub(crate) struct Variant {
    pub(crate) name: String,
    pub(crate) threads: usize,
    pub(crate) batch: usize,
    pub(crate) pass: Pass,
}

/// Everything the replay measured.
#[derive(Clone, Debug)]
pub(crate) struct Replay {
    pub(crate) partitions: u32,
    pub(crate) log_bytes: u64,
    pub(crate) segments: usize,
    /// Plain reads of the segment files (from the page cache).
    pub(crate) file_read_secs: f64,
    /// `read_dir` with a visitor that does nothing.
    pub(crate) scan: Pass,
    pub(crate) variants: Vec<Variant>,
    /// Bytes of the rebuilt stores (the node's batch, one thread).
    pub(crate) store_bytes: u64,
    /// redb alone writing the rebuilt rows: one store at a time, and all
    /// in parallel (medians).
    pub(crate) limit_serial: Limit,
    pub(crate) limit_parallel: Limit,
}

impl Replay {
    /// Commands each pass applies.
    pub(crate) fn commands(&self) -> u64 {
        self.variants.first().map_or(0, |v| v.pass.commands)
    }

    /// The least time any replay into redb could take here
    /// ([`store_limit::replay_floor_secs`]).
    pub(crate) fn floor_secs(&self) -> f64 {
        store_limit::replay_floor_secs(self.scan.secs, self.partitions, &self.limit_parallel)
    }

    /// [`Replay::floor_secs`] as events per second.
    pub(crate) fn floor_events_per_s(&self) -> f64 {
        self.commands() as f64 / self.floor_secs()
    }
}

fn log_dir(data: &Path, p: u32) -> PathBuf {
    partition_dir(data, p).join(LOG_DIR)
}

pub(crate) fn run(data: &Path, scratch: &Path, partitions: u32, replays: usize) -> Result<Replay> {
    let mut files = Vec::new();
    for p in 0..partitions {
        let dir = log_dir(data, p);
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            if e.file_name()
                .to_str()
                .and_then(parse_segment_file_name)
                .is_some()
            {
                files.push(e.path());
            }
        }
    }
    let mut file_reads = Vec::new();
    let mut scans = Vec::new();
    let mut runs: Vec<(String, usize, usize, Vec<Pass>)> = vec![
        ("1 thread".into(), 1, MAX_APPLY_BATCH, Vec::new()),
        ("1 thread".into(), 1, LARGE_BATCH, Vec::new()),
        (
            format!("{partitions} threads"),
            partitions as usize,
            MAX_APPLY_BATCH,
            Vec::new(),
        ),
        (
            format!("{partitions} threads"),
            partitions as usize,
            LARGE_BATCH,
            Vec::new(),
        ),
    ];
    let mut log_bytes = 0;
    let mut store_bytes = 0;
    let mut limits: (Vec<Limit>, Vec<Limit>) = (Vec::new(), Vec::new());
    for rep in 0..replays {
        let t = Instant::now();
        log_bytes = 0;
        for f in &files {
            log_bytes += std::fs::read(f)
                .with_context(|| format!("reading {}", f.display()))?
                .len() as u64;
        }
        file_reads.push(t.elapsed().as_secs_f64());
        scans.push(scan(data, partitions)?);
        for (k, (name, threads, batch, passes)) in runs.iter_mut().enumerate() {
            let dir = scratch.join(format!("replay-{rep}-{k}"));
            let pass = replay(data, &dir, partitions, *threads > 1, *batch)?;
            eprintln!(
                "  replay {}/{replays}, {name}, batch {batch}: {:.0} events/s",
                rep + 1,
                pass.events_per_s()
            );
            if k == 0 {
                store_bytes = dir_bytes(&dir)?;
                let (serial, parallel) = store_limit::of_stores(
                    &dir,
                    partitions,
                    &scratch.join(format!("limit-{rep}")),
                )?;
                limits.0.push(serial);
                limits.1.push(parallel);
            }
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            passes.push(pass);
        }
    }
    let median = |passes: &[Pass]| Pass {
        secs: median_of(passes, |p| p.secs),
        scan_secs: median_of(passes, |p| p.scan_secs),
        decode_secs: median_of(passes, |p| p.decode_secs),
        apply_secs: median_of(passes, |p| p.apply_secs),
        open_close_secs: median_of(passes, |p| p.open_close_secs),
        ..passes[0]
    };
    Ok(Replay {
        partitions,
        log_bytes,
        segments: files.len(),
        file_read_secs: median_of(&file_reads, |s| *s),
        scan: median(&scans),
        variants: runs
            .into_iter()
            .map(|(name, threads, batch, passes)| Variant {
                name,
                threads,
                batch,
                pass: median(&passes),
            })
            .collect(),
        store_bytes,
        limit_serial: Limit::median(&limits.0),
        limit_parallel: Limit::median(&limits.1),
    })
}

/// Reads every partition's log and does nothing with the records.
fn scan(data: &Path, partitions: u32) -> Result<Pass> {
    let t = Instant::now();
    let mut pass = Pass::default();
    for p in 0..partitions {
        let dir = log_dir(data, p);
        let report = read_dir(&StdFs, &dir, max_record_bytes(), |_, _| {
            pass.records += 1;
            ControlFlow::Continue(())
        })?;
        check(&dir, report.problem)?;
    }
    pass.secs = t.elapsed().as_secs_f64();
    pass.scan_secs = pass.secs;
    Ok(pass)
}

fn max_record_bytes() -> u32 {
    missive_log::Options::default().max_record_bytes
}

/// Refuses a log with damage; a torn tail (an unfinished last batch) is
/// what a stopped node may leave and is not replayed.
fn check(dir: &Path, problem: Option<Problem>) -> Result<()> {
    match problem {
        Some(Problem::Corruption {
            segment,
            position,
            kind,
        }) => bail!(
            "{}: corruption in {} at {position}: {kind:?}",
            dir.display(),
            segment.display()
        ),
        Some(Problem::TornTail { .. }) | None => Ok(()),
    }
}

/// Rebuilds every partition's projections into stores under `dir`, the
/// partitions one after the other or each on its own thread.
fn replay(data: &Path, dir: &Path, partitions: u32, parallel: bool, batch: usize) -> Result<Pass> {
    std::fs::create_dir_all(dir)?;
    let (secs, passes) = missive_benches::time_each(partitions as usize, parallel, |p| {
        replay_partition(data, dir, p as u32, batch)
    })?;
    let mut total = Pass::default();
    for p in &passes {
        total.add(p);
    }
    total.secs = secs;
    Ok(total)
}

/// A batch of commands read and not applied yet.
struct Batch {
    entries: Vec<(LogId, u64, Command)>,
    /// The last entry read (commands or not): the state after the batch.
    last: Option<LogId>,
    /// The last entry applied.
    applied: Option<LogId>,
}

fn replay_partition(data: &Path, dir: &Path, p: u32, batch: usize) -> Result<Pass> {
    let opened = Instant::now();
    let mut sm = ChatStateMachine::offline(p, dir.join(format!("p{p}.redb")));
    sm.store()?;
    let mut pass = Pass {
        open_close_secs: opened.elapsed().as_secs_f64(),
        ..Pass::default()
    };
    let mut pending = Batch {
        entries: Vec::with_capacity(batch),
        last: None,
        applied: None,
    };
    let mut failed = None;
    let log = log_dir(data, p);
    let t = Instant::now();
    let report = read_dir(&StdFs, &log, max_record_bytes(), |header, payload| {
        let d = Instant::now();
        let entry = match pb::LogEntry::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                failed = Some(anyhow!("record {}: {e}", header.index));
                return ControlFlow::Break(());
            }
        };
        let leader = entry.leader.unwrap_or_default();
        let log_id = LogId {
            leader_id: LeaderId {
                term: leader.term,
                node_id: leader.node_id,
            },
            index: header.index,
        };
        pass.records += 1;
        pending.last = Some(log_id);
        if let Some(Payload::Command(c)) = entry.payload {
            pending.entries.push((
                log_id,
                header.timestamp,
                Command {
                    body: c.body,
                    request_id: c.request_id,
                },
            ));
        }
        pass.decode_secs += d.elapsed().as_secs_f64();
        if pending.entries.len() >= batch
            && let Err(e) = flush(&mut sm, &mut pending, &mut pass)
        {
            failed = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e.context(format!("replaying {}", log.display())));
    }
    check(&log, report.problem)?;
    if pending.last != pending.applied {
        flush(&mut sm, &mut pending, &mut pass)?;
    }
    pass.scan_secs = t.elapsed().as_secs_f64() - pass.decode_secs - pass.apply_secs;
    let closed = Instant::now();
    drop(sm);
    pass.open_close_secs += closed.elapsed().as_secs_f64();
    Ok(pass)
}

/// Applies the pending commands with the state after the last entry read.
fn flush(sm: &mut ChatStateMachine, pending: &mut Batch, pass: &mut Pass) -> Result<()> {
    let t = Instant::now();
    let commands: Vec<CommandEntry<'_>> = pending
        .entries
        .iter()
        .map(|(log_id, timestamp_ms, command)| CommandEntry {
            log_id: *log_id,
            timestamp_ms: *timestamp_ms,
            command,
        })
        .collect();
    // The membership is the raft layer's business; the chat tables do not
    // depend on it, so the default one is stored with the position.
    let after = AppliedState {
        last_applied: pending.last,
        membership: StoredMembership::default(),
    };
    let replies = sm
        .apply(&commands, &after)
        .and_then(|replies| sm.flush().map(|()| replies))
        .map_err(|e| anyhow!("apply: {e}"))?;
    if replies.len() != commands.len() {
        bail!("{} replies to {} commands", replies.len(), commands.len());
    }
    pass.commands += commands.len() as u64;
    pass.batches += 1;
    pending.applied = pending.last;
    pending.entries.clear();
    pass.apply_secs += t.elapsed().as_secs_f64();
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        n += e?.metadata()?.len();
    }
    Ok(n)
}
