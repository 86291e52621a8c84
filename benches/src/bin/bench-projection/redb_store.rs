//! The projection on redb: one redb table per projection table, one write
//! transaction per apply batch.
//!
//! # Durability
//!
//! A batch commits with `Durability::None`: redb writes the transaction's
//! pages but neither fsyncs nor moves the file's commit slot, so the commit
//! is visible to this process at once and lost by a crash unless a later
//! durable commit follows. Every `DURABLE_EVERY` (checked at batch
//! boundaries) a batch commits with `Durability::Immediate`, which fsyncs
//! and publishes the commit slot: after a crash the store reopens at that
//! commit and its applied index, and the log replays the rest. Durable
//! commits also set quick-repair, which saves the allocator state with the
//! commit (and turns on two-phase commit), so reopening after a crash does
//! not walk the whole file to rebuild it. redb also cannot reuse pages that
//! non-durable commits freed until the next durable commit, which is one
//! more reason to make one regularly.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::{APPLIED_INDEX_KEY, Changes, Store, Table, Txn, Visit, conversation_range};

/// How long non-durable commits may pile up before a durable one: the same
/// bound as sled's default `flush_every_ms`, so that both engines lose at
/// most about the same stretch of applies to a crash.
pub(crate) const DURABLE_EVERY: Duration = Duration::from_millis(500);

/// The file's name inside the engine's directory.
const FILE: &str = "projection.redb";

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn def(table: Table) -> Def {
    TableDefinition::new(table.name())
}

#[derive(Debug)]
pub(crate) struct RedbStore {
    db: Database,
    /// When the last durable commit finished: the next batch after
    /// `DURABLE_EVERY` from it commits durably.
    last_durable: Instant,
    durable_commits: u64,
}

impl RedbStore {
    /// Opens (repairing after a crash) or creates the store in `dir`, with
    /// redb's default cache size (1 GiB, an upper bound, not an allocation).
    pub(crate) fn open(dir: &Path) -> Result<RedbStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE);
        let new = !path.exists();
        let db = Database::builder()
            .create(&path)
            .context("opening the redb file")?;
        let mut store = RedbStore {
            db,
            last_durable: Instant::now(),
            durable_commits: 0,
        };
        if new {
            // Every table exists from the first commit on, so readers never
            // meet a missing one.
            store.commit_durably(&mut |_| Ok(()))?;
        }
        Ok(store)
    }

    fn commit_durably(&mut self, f: &mut Changes<'_>) -> Result<()> {
        self.commit(true, f)
    }

    fn commit(&mut self, durable: bool, f: &mut Changes<'_>) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        if durable {
            txn.set_durability(Durability::Immediate)?;
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(txn.open_table(def(table))?);
            }
            f(&mut RedbTxn {
                tables: &mut tables,
            })?;
        }
        txn.commit().context("redb commit")?;
        if durable {
            self.last_durable = Instant::now();
            self.durable_commits += 1;
        }
        Ok(())
    }
}

/// The open tables of one write transaction, indexed by `Table as usize`.
struct RedbTxn<'a, 't> {
    tables: &'a mut Vec<redb::Table<'t, &'static [u8], &'static [u8]>>,
}

impl Txn for RedbTxn<'_, '_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables[table as usize]
            .get(key)?
            .map(|value| value.value().to_vec()))
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables[table as usize].insert(key, value)?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn write(&mut self, f: &mut Changes<'_>) -> Result<()> {
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        self.commit(durable, f)
    }

    fn applied_index(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(def(Table::Meta))?;
        let Some(value) = meta.get(APPLIED_INDEX_KEY)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value
            .value()
            .try_into()
            .context("the applied index is not 8 bytes")?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    fn page(&self, conversation: &[u8; 16], limit: usize) -> Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let messages = txn.open_table(def(Table::Messages))?;
        let (lo, hi) = conversation_range(conversation);
        let mut page = Vec::with_capacity(limit);
        for row in messages.range(&lo[..]..=&hi[..])?.rev().take(limit) {
            page.push(row?.1.value().to_vec());
        }
        Ok(page)
    }

    fn scan(&self, table: Table, visit: &mut Visit<'_>) -> Result<()> {
        let txn = self.db.begin_read()?;
        let rows = txn.open_table(def(table))?;
        for row in rows.iter()? {
            let (key, value) = row?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        // An empty durable commit publishes every non-durable one before it.
        self.commit_durably(&mut |_| Ok(()))
    }

    fn durable_commits(&self) -> Option<u64> {
        Some(self.durable_commits)
    }
}
