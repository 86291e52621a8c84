//! What redb alone takes to write a set of projections: the limit no
//! replay into it can beat.
//!
//! The rows of rebuilt stores (one per partition) are read back into
//! memory first, outside the clock. Then each store's rows go, in key
//! order (a dump lists them table by table, each table in order), into a
//! fresh redb file in one write transaction, which commits durably. No log
//! is read, nothing is decoded and no projection logic runs: this is the
//! B-tree inserts and the write-out alone. A replay does all of that and
//! more, and commits in many transactions, not one.

use std::path::Path;

use anyhow::Result;
use missive_api::store::{Row, Store, TABLES};

use crate::stats::median_of;

/// One measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limit {
    /// Wall time of the writes and commits, all stores together.
    pub secs: f64,
    /// Rows written.
    pub rows: u64,
    /// The files' sizes after the commits.
    pub bytes: u64,
}

impl Limit {
    /// The median time of `limits` (measurements of the same rows).
    pub fn median(limits: &[Limit]) -> Limit {
        Limit {
            secs: median_of(limits, |l| l.secs),
            ..limits.first().copied().unwrap_or_default()
        }
    }
}

/// The limit for the stores `p0.redb`, `p1.redb`, … of `partitions`
/// partitions in `dir`: written one store at a time, then all at once, in
/// a scratch directory `scratch` (removed afterwards).
pub fn of_stores(dir: &Path, partitions: u32, scratch: &Path) -> Result<(Limit, Limit)> {
    let dumps = (0..partitions)
        .map(|p| Ok(Store::open(&dir.join(format!("p{p}.redb")))?.dump()?))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        measure(&dumps, scratch, false)?,
        measure(&dumps, scratch, true)?,
    ))
}

/// Writes each of `dumps` into a new redb file under `scratch`, one after
/// the other or each on its own thread, and times it.
fn measure(dumps: &[Vec<Row>], scratch: &Path, parallel: bool) -> Result<Limit> {
    std::fs::create_dir_all(scratch)?;
    let write = |i: usize| -> Result<(u64, u64)> {
        let path = scratch.join(format!("limit-{i}.redb"));
        let db = redb::Database::create(&path)?;
        let txn = db.begin_write()?;
        for group in dumps[i].chunk_by(|a, b| a.0 == b.0) {
            let mut t = txn.open_table(TABLES[group[0].0 as usize])?;
            for (_, k, v) in group {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        txn.commit()?;
        drop(db);
        Ok((dumps[i].len() as u64, std::fs::metadata(&path)?.len()))
    };
    let (secs, written) = crate::time_each(dumps.len(), parallel, write)?;
    std::fs::remove_dir_all(scratch)?;
    Ok(Limit {
        secs,
        rows: written.iter().map(|w| w.0).sum(),
        bytes: written.iter().map(|w| w.1).sum(),
    })
}

/// The least time any replay into redb could take on this machine's
/// cores, in seconds: it must at least read the log (`scan_secs`, the raw
/// scan of all `partitions` on one thread, here spread over the cores
/// without loss) and write the rebuilt rows (`parallel`, redb alone with
/// every store at once), each of which keeps every core busy, so their
/// times add. Generous: decoding, applying and reading state cost nothing
/// in it.
pub fn replay_floor_secs(scan_secs: f64, partitions: u32, parallel: &Limit) -> f64 {
    let spread = crate::cpu::cores().min(partitions as usize).max(1) as f64;
    scan_secs / spread + parallel.secs
}
