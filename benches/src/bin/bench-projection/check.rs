//! The consistency check: replay the log into the in-memory model up to
//! the store's applied index and compare every row. Consistent means the
//! store holds exactly the effects of the log prefix its applied index
//! names: no row from a later entry, none missing, none different.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::apply::apply_batch;
use crate::model::Model;
use crate::store::{Store, Table};
use crate::workload::Workload;

/// Replays `workload` into `model` through the batch ending at `index`
/// (nothing for `None`). Fails if `index` falls inside a batch: a store
/// can only have committed whole batches.
pub(crate) fn replay_to(
    workload: &mut Workload,
    model: &mut Model,
    index: Option<u64>,
) -> Result<()> {
    let Some(index) = index else {
        return Ok(());
    };
    loop {
        let Some(batch) = workload.next_batch() else {
            bail!("the log ends before applied index {index}");
        };
        let last = batch.last_index();
        if last > index {
            bail!(
                "applied index {index} falls inside the batch {}..={last}: a partial batch",
                batch.entries.first().map_or(0, |e| e.index)
            );
        }
        model.write(&mut |txn| apply_batch(txn, &batch))?;
        if last == index {
            return Ok(());
        }
    }
}

/// Rows compared, and the first difference if any.
#[derive(Debug)]
pub(crate) struct Comparison {
    pub(crate) rows: u64,
    pub(crate) first_difference: Option<String>,
}

pub(crate) fn compare(store: &dyn Store, model: &Model) -> Result<Comparison> {
    let empty = BTreeMap::new();
    let mut rows = 0;
    let mut first_difference = None;
    for table in Table::ALL {
        let mut expected = model.rows(table).unwrap_or(&empty).iter();
        let mut note = |what: String| {
            if first_difference.is_none() {
                first_difference = Some(format!("{}: {what}", table.name()));
            }
        };
        store.scan(table, &mut |key, value| {
            rows += 1;
            match expected.next() {
                Some((k, v)) if k == key && v == value => {}
                Some((k, _)) if k == key => note(format!("value of {} differs", hex(key))),
                Some((k, _)) => note(format!("found {}, expected {}", hex(key), hex(k))),
                None => note(format!("extra row {}", hex(key))),
            }
            Ok(())
        })?;
        if let Some((k, _)) = expected.next() {
            note(format!("missing row {}", hex(k)));
        }
    }
    Ok(Comparison {
        rows,
        first_difference,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
