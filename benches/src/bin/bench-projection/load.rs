//! The load, run in a child process: a new store, the conversations
//! created, then the timed mix, one write per apply batch.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use missive_benches::stats::quantile;
use serde_json::{Value, json};

use crate::apply::apply_batch;
use crate::footprint::rss;
use crate::store::{Store, Table};
use crate::workload::Workload;
use crate::{Engine, open_store};

/// Under `--progress`, a line `applied INDEX` goes to stdout after this
/// many batches, for the parent that kills this process mid-load.
const PROGRESS_EVERY: u64 = 16;

pub(crate) fn load(
    engine: Engine,
    dir: &Path,
    seed: u64,
    events: u64,
    progress: bool,
) -> Result<Value> {
    let mut store = open_store(engine, dir)?;
    let mut workload = Workload::new(seed, events);
    let memberships = workload.memberships();
    let mut setup_secs = 0.0;
    let mut mix_secs = 0.0;
    let mut mix_entries = 0u64;
    let mut batches = 0u64;
    let mut all_batches = 0u64;
    let mut batch_us = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(batch) = workload.next_batch() {
        // Only the write is timed: generating the batch is the log's work.
        let started = Instant::now();
        store.write(&mut |txn| apply_batch(txn, &batch))?;
        let took = started.elapsed().as_secs_f64();
        if batch.setup {
            setup_secs += took;
        } else {
            mix_secs += took;
            mix_entries += batch.entries.len() as u64;
            batches += 1;
            batch_us.push(took * 1e6);
        }
        all_batches += 1;
        if progress && all_batches.is_multiple_of(PROGRESS_EVERY) {
            writeln!(out, "applied {}", batch.last_index())?;
            out.flush()?;
        }
    }
    let durable_commits = store.durable_commits();
    // Before the scan below, which would pull every row through the cache.
    let after_load = rss()?;
    let (live_bytes, rows) = live_data(store.as_ref())?;
    let closing = Instant::now();
    store.close()?;
    let close_ms = closing.elapsed().as_secs_f64() * 1e3;
    Ok(json!({
        "setup_entries": crate::workload::CONVERSATIONS,
        "memberships": memberships,
        "setup_secs": setup_secs,
        "events": mix_entries,
        "batches": batches,
        "mix_secs": mix_secs,
        "events_per_s": mix_entries as f64 / mix_secs,
        "batch_p50_us": quantile(&mut batch_us, 0.5),
        "batch_p99_us": quantile(&mut batch_us, 0.99),
        "durable_commits": durable_commits,
        "live_bytes": live_bytes,
        "rows": rows,
        "close_ms": close_ms,
        "rss_after_load_bytes": after_load.now,
        "peak_rss_during_load_bytes": after_load.peak,
    }))
}

/// Bytes of keys and values in the store, and its rows: what any engine
/// must hold at least.
fn live_data(store: &dyn Store) -> Result<(u64, u64)> {
    let (mut bytes, mut rows) = (0u64, 0u64);
    for table in Table::ALL {
        store.scan(table, &mut |key, value| {
            bytes += (key.len() + value.len()) as u64;
            rows += 1;
            Ok(())
        })?;
    }
    Ok((bytes, rows))
}
