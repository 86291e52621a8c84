//! Recovery after kill -9, run in a fresh child process: reopen the store
//! the killed loader left, check it against the log prefix its applied
//! index names, then apply more of the log and check again (a store that
//! reopens but cannot take writes has not recovered).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::apply::apply_batch;
use crate::check::{compare, replay_to};
use crate::model::Model;
use crate::workload::Workload;
use crate::{Engine, open_store};

/// Entries applied after the reopen, before the second check.
const RESUME_ENTRIES: u64 = 2_000;

pub(crate) fn recover(engine: Engine, dir: &Path, seed: u64, events: u64) -> Result<Value> {
    let opening = Instant::now();
    let mut store = open_store(engine, dir)?;
    let open_ms = opening.elapsed().as_secs_f64() * 1e3;
    let applied_index = store.applied_index()?;

    let checking = Instant::now();
    let mut workload = Workload::new(seed, events);
    let mut model = Model::default();
    let replayed = replay_to(&mut workload, &mut model, applied_index);
    let first = match &replayed {
        Ok(()) => compare(store.as_ref(), &model)?,
        Err(e) => crate::check::Comparison {
            rows: 0,
            first_difference: Some(format!("{e:#}")),
        },
    };
    let check_secs = checking.elapsed().as_secs_f64();

    // Go on from where the store is, as the node would after a restart.
    let mut resumed_to = applied_index.unwrap_or(0);
    let mut after_resume = None;
    if first.first_difference.is_none() {
        let target = resumed_to + RESUME_ENTRIES;
        while resumed_to < target {
            let Some(batch) = workload.next_batch() else {
                break;
            };
            store.write(&mut |txn| apply_batch(txn, &batch))?;
            model.write(&mut |txn| apply_batch(txn, &batch))?;
            resumed_to = batch.last_index();
        }
        after_resume = Some(compare(store.as_ref(), &model)?);
    }
    store.close()?;
    let consistent = first.first_difference.is_none();
    let resumed_ok = after_resume
        .as_ref()
        .is_some_and(|c| c.first_difference.is_none());
    Ok(json!({
        "open_ms": open_ms,
        "applied_index": applied_index,
        "consistent": consistent,
        "rows_checked": first.rows,
        "difference": first.first_difference,
        "check_secs": check_secs,
        "resumed_to": resumed_to,
        "consistent_after_resume": resumed_ok,
        "difference_after_resume": after_resume.and_then(|c| c.first_difference),
    }))
}
