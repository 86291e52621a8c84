//! bench-replay: how fast `missive log replay` rebuilds the projections,
//! beside the physical limit — reading the same segment files.
//!
//! ```text
//! cargo run --release -p missive-benches --bin bench-replay -- [--quick]
//! ```
//!
//! A data directory of 4 partitions is written directly with missive-log
//! (the envelopes a node writes: a blank entry, then chat commands): per
//! partition 50 groups of 20 members are created, then messages of 100–300
//! bytes of text are sent round-robin over the groups, each by one of the
//! group's members. Then, each measurement repeated (3 runs, the median
//! reported):
//!
//! - **raw read**: `std::fs::read` of every segment file (from the page
//!   cache: the files were just written) — the limit;
//! - **scan**: `missive_log::verify::read_dir` with a visitor that does
//!   nothing (every CRC and the hash chain checked);
//! - **replay**: `missive_api::offline::rebuild_partition` — what `missive
//!   log replay` runs — at its default batch and at the node's apply batch,
//!   one partition at a time and all partitions in parallel;
//! - **the store's limit**: the rows of the stores the first replay built,
//!   read back and inserted in key order into a new redb file in one
//!   transaction, made durable — what writing those projections costs
//!   redb alone, with no log read and nothing applied
//!   (`missive_benches::store_limit`), one store at a time and all in
//!   parallel. No replay into redb can beat it;
//! - **the floor**: the scan spread over the cores plus the store's limit in
//!   parallel, the least any replay into redb must spend
//!   (`store_limit::replay_floor_secs`).
//!
//! An event is one applied command. The last line of output is JSON.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use missive_api::ids::new_group_id;
use missive_api::offline::{DEFAULT_BATCH, Progress, Source, StopAt, rebuild_partition};
use missive_benches::stats::median_of;
use missive_benches::store_limit::{self, Limit};
use missive_log::fs::StdFs;
use missive_log::verify::read_dir;
use missive_log::{Log, Options, Record};
use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use missive_proto::v1::log_entry::Payload;
use missive_raft::MAX_APPLY_BATCH;
use missive_raft::node::partition_dir;
use prost::Message;
use serde_json::json;

const PARTITIONS: u32 = 4;
const GROUPS_PER_PARTITION: usize = 50;
const MEMBERS: usize = 20;
const RUNS: usize = 3;
/// Records appended per `Log::append` while generating.
const GEN_BATCH: usize = 1000;

fn envelope(payload: Payload) -> Vec<u8> {
    pb::LogEntry {
        envelope_version: missive_proto::ENVELOPE_VERSION,
        leader: Some(pb::LeaderId {
            term: 1,
            node_id: 1,
        }),
        payload: Some(payload),
    }
    .encode_to_vec()
}

fn command(actor: &str, op: Op) -> Vec<u8> {
    let body = pb::ChatCommand {
        actor: actor.into(),
        device: "d1".into(),
        op: Some(op),
    }
    .encode_to_vec();
    envelope(Payload::Command(pb::Command {
        body,
        request_id: String::new(),
    }))
}

/// Writes partition `p`'s log: a blank, the groups, then `sends` messages.
fn generate(data: &Path, p: u32, sends: usize) -> Result<()> {
    let dir = partition_dir(data, p).join(missive_raft::LOG_DIR);
    let log = Log::open(&dir, Options::default())?;
    let mut payloads = vec![envelope(Payload::Blank(pb::Blank {}))];
    let groups: Vec<(String, Vec<String>)> = (0..GROUPS_PER_PARTITION)
        .map(|g| {
            let mut seed = [0u8; 16];
            seed[0] = p as u8;
            seed[1..9].copy_from_slice(&(g as u64).to_le_bytes());
            let members = (0..MEMBERS).map(|m| format!("u{p}-{g}-{m}")).collect();
            (new_group_id(seed), members)
        })
        .collect();
    for (id, members) in &groups {
        payloads.push(command(
            &members[0],
            Op::CreateConversation(pb::CreateConversation {
                conversation_id: id.clone(),
                kind: pb::ConversationKind::Group as i32,
                name: "bench".into(),
                members: members[1..].to_vec(),
            }),
        ));
    }
    // A simple deterministic spread of text lengths (100..=300 bytes).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(p);
    let mut ts = 1_795_000_000_000u64;
    let flush = |log: &Log, payloads: &mut Vec<Vec<u8>>, ts: &mut u64| -> Result<()> {
        let records: Vec<Record<'_>> = payloads
            .iter()
            .map(|payload| {
                *ts += 1;
                Record {
                    timestamp: *ts,
                    payload,
                }
            })
            .collect();
        log.append(&records)?;
        payloads.clear();
        Ok(())
    };
    for i in 0..sends {
        let (id, members) = &groups[i % groups.len()];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 100 + (x % 201) as usize;
        let sender = &members[(x >> 32) as usize % members.len()];
        payloads.push(command(
            sender,
            Op::Send(pb::SendMessage {
                conversation_id: id.clone(),
                client_msg_id: format!("c{i}"),
                content: Some(pb::Content {
                    text: "x".repeat(len),
                    ..Default::default()
                }),
                reply_to: 0,
            }),
        ));
        if payloads.len() >= GEN_BATCH {
            flush(&log, &mut payloads, &mut ts)?;
        }
    }
    flush(&log, &mut payloads, &mut ts)?;
    drop(log);
    Ok(())
}

/// One replay of every partition: its wall time and the commands applied.
#[derive(Clone, Copy, Debug, Default)]
struct Pass {
    secs: f64,
    commands: u64,
}

fn replay(source: &Source, scratch: &Path, parallel: bool, batch: usize) -> Result<Pass> {
    let _ = std::fs::remove_dir_all(scratch);
    let run = |p: u32| -> Result<u64> {
        let out = scratch.join(format!("p{p}.redb"));
        let none = |_: Progress| {};
        let (sm, r) = rebuild_partition(source, p, StopAt::End, &out, batch, &none)?;
        drop(sm);
        Ok(r.commands)
    };
    let (secs, commands) =
        missive_benches::time_each(source.partitions() as usize, parallel, |p| run(p as u32))?;
    Ok(Pass {
        secs,
        commands: commands.iter().sum(),
    })
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let sends_per_partition = if quick { 10_000 } else { 100_000 };
    let dir = tempfile::tempdir().context("a scratch directory")?;
    let data = dir.path().join("data");
    eprintln!("bench-replay: writing {PARTITIONS} partitions × {sends_per_partition} messages…");
    missive_benches::run_each(PARTITIONS as usize, true, |p| {
        generate(&data, p as u32, sends_per_partition)
    })?;
    let source = Source::open(&data)?;
    let mut files = Vec::new();
    for p in 0..PARTITIONS {
        for e in std::fs::read_dir(source.log_dir(p))? {
            let e = e?;
            if e.path().extension().is_some_and(|x| x == "seg") {
                files.push(e.path());
            }
        }
    }
    let filesystem = missive_benches::filesystem::filesystem_of(dir.path());

    let mut raw = Vec::new();
    let mut scans = Vec::new();
    let variants: [(&str, bool, usize); 3] = [
        (
            "replay, 1 partition at a time, default batch",
            false,
            DEFAULT_BATCH,
        ),
        (
            "replay, 1 partition at a time, node's batch",
            false,
            MAX_APPLY_BATCH,
        ),
        (
            "replay, partitions in parallel, default batch",
            true,
            DEFAULT_BATCH,
        ),
    ];
    let mut passes: Vec<Vec<Pass>> = vec![Vec::new(); variants.len()];
    let mut limits: Vec<Limit> = Vec::new();
    let mut parallel_limits: Vec<Limit> = Vec::new();
    let mut log_bytes = 0u64;
    for run in 0..RUNS {
        let t = Instant::now();
        log_bytes = 0;
        for f in &files {
            log_bytes += std::fs::read(f)?.len() as u64;
        }
        raw.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut records = 0u64;
        for p in 0..PARTITIONS {
            read_dir(&StdFs, &source.log_dir(p), 16 << 20, |_, _| {
                records += 1;
                ControlFlow::Continue(())
            })?;
        }
        scans.push((t.elapsed().as_secs_f64(), records));
        for (k, (name, parallel, batch)) in variants.iter().enumerate() {
            let out = dir.path().join("out");
            let pass = replay(&source, &out, *parallel, *batch)?;
            if k == 0 {
                let (serial, parallel) =
                    store_limit::of_stores(&out, PARTITIONS, &dir.path().join("limit"))?;
                limits.push(serial);
                parallel_limits.push(parallel);
            }
            std::fs::remove_dir_all(&out).ok();
            eprintln!(
                "  run {}/{RUNS}: {name}: {:.0} events/s",
                run + 1,
                pass.commands as f64 / pass.secs
            );
            passes[k].push(pass);
        }
    }
    let raw_secs = median_of(&raw, |s| *s);
    let scan_secs = median_of(&scans, |s| s.0);
    let mb = log_bytes as f64 / 1e6;
    let records = scans.first().map_or(0, |s| s.1);
    println!(
        "bench-replay{}: {PARTITIONS} partitions, {records} records, {:.1} MB of log in {} segments; {filesystem}",
        if quick { " (--quick)" } else { "" },
        mb,
        files.len()
    );
    println!("median of {RUNS} runs\n");
    println!(
        "{:<50} {:>10} {:>12} {:>10}",
        "", "seconds", "events/s", "MB/s"
    );
    println!(
        "{:<50} {:>10.3} {:>12} {:>10.0}",
        "raw read of the segment files (the limit)",
        raw_secs,
        "-",
        mb / raw_secs
    );
    println!(
        "{:<50} {:>10.3} {:>12.0} {:>10.0}",
        "scan: read_dir, CRC and chain, nothing applied",
        scan_secs,
        records as f64 / scan_secs,
        mb / scan_secs
    );
    let limit = Limit::median(&limits);
    let parallel_limit = Limit::median(&parallel_limits);
    let rows = limit.rows;
    let events = passes[0].first().map_or(0, |p| p.commands);
    for (what, secs) in [
        (
            format!("the store's limit: {rows} rows into redb"),
            limit.secs,
        ),
        (
            "the store's limit, partitions in parallel".to_owned(),
            parallel_limit.secs,
        ),
    ] {
        println!(
            "{:<50} {:>10.3} {:>12.0} {:>10}",
            what,
            secs,
            events as f64 / secs,
            "-"
        );
    }
    let floor_secs = store_limit::replay_floor_secs(scan_secs, PARTITIONS, &parallel_limit);
    println!(
        "{:<50} {:>10.3} {:>12.0} {:>10}",
        "floor: the scan over the cores + redb in parallel",
        floor_secs,
        events as f64 / floor_secs,
        "-"
    );
    let mut json_variants = Vec::new();
    for ((name, parallel, batch), ps) in variants.iter().zip(&passes) {
        let secs = median_of(ps, |p| p.secs);
        let commands = ps.first().map_or(0, |p| p.commands);
        let eps = commands as f64 / secs;
        println!(
            "{:<50} {:>10.3} {:>12.0} {:>10.1}",
            name,
            secs,
            eps,
            mb / secs
        );
        json_variants.push(json!({
            "name": name, "parallel": parallel, "batch": batch,
            "secs": secs, "events": commands, "events_per_s": eps, "mb_per_s": mb / secs,
        }));
    }
    println!(
        "{}",
        json!({
            "bench": "replay",
            "quick": quick,
            "partitions": PARTITIONS,
            "records": records,
            "log_bytes": log_bytes,
            "filesystem": filesystem,
            "raw_read": { "secs": raw_secs, "mb_per_s": mb / raw_secs },
            "scan": { "secs": scan_secs, "records_per_s": records as f64 / scan_secs, "mb_per_s": mb / scan_secs },
            "store_limit": { "secs": limit.secs, "rows": rows, "events_per_s": events as f64 / limit.secs },
            "store_limit_parallel": { "secs": parallel_limit.secs, "rows": rows, "events_per_s": events as f64 / parallel_limit.secs },
            "floor": { "secs": floor_secs, "events_per_s": events as f64 / floor_secs },
            "replay": json_variants,
        })
    );
    Ok(())
}
