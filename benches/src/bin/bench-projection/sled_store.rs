//! The projection on sled 0.34: every table in one sled `Tree`, the table's
//! id as the key's first byte, one `Batch` per apply batch.
//!
//! One tree because a sled `Batch` is atomic only within one tree; the
//! other way to change several trees atomically, sled's transactions, runs
//! a retrying closure built for concurrent writers, which the projection
//! (one applier per partition) does not have. Reads inside a write go to
//! a per-batch overlay first, then to the tree, so they see the batch's own
//! earlier changes as a transaction would.
//!
//! # Durability
//!
//! `apply_batch` writes into sled's in-memory I/O buffers and returns; the
//! batch is atomic (recovery keeps all of it or none) but not durable.
//! sled's background thread writes the buffers out and calls `fsync` (its
//! `flush_every_ms`, default 500 ms, kept here), so after a crash the store
//! reopens at the last flushed batch and the log replays the rest. `close`
//! calls `flush`, which writes and fsyncs what is buffered.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::store::{APPLIED_INDEX_KEY, Changes, Store, Table, Txn, Visit, conversation_range};

#[derive(Debug)]
pub(crate) struct SledStore {
    db: sled::Db,
    /// The projection's one keyspace.
    tree: sled::Tree,
}

impl SledStore {
    /// Opens (recovering after a crash) or creates the store in `dir`, with
    /// sled's defaults: a 1 GiB cache bound and a flush every 500 ms.
    pub(crate) fn open(dir: &Path) -> Result<SledStore> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .context("opening the sled directory")?;
        let tree = db.open_tree("projection")?;
        Ok(SledStore { db, tree })
    }
}

fn prefixed(table: Table, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + key.len());
    full.push(table.id());
    full.extend_from_slice(key);
    full
}

/// One apply batch's changes, not yet in the tree.
struct SledTxn<'a> {
    tree: &'a sled::Tree,
    /// Prefixed key → value, written by this batch.
    overlay: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Txn for SledTxn<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = prefixed(table, key);
        if let Some(value) = self.overlay.get(&key) {
            return Ok(Some(value.clone()));
        }
        Ok(self.tree.get(&key)?.map(|value| value.to_vec()))
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay.insert(prefixed(table, key), value.to_vec());
        Ok(())
    }
}

impl Store for SledStore {
    fn write(&mut self, f: &mut Changes<'_>) -> Result<()> {
        let mut txn = SledTxn {
            tree: &self.tree,
            overlay: BTreeMap::new(),
        };
        f(&mut txn)?;
        let mut batch = sled::Batch::default();
        for (key, value) in txn.overlay {
            batch.insert(key, value);
        }
        // No flush: the log is durable, and sled's flusher bounds what a
        // crash can take (see the module header).
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn applied_index(&self) -> Result<Option<u64>> {
        let Some(value) = self.tree.get(prefixed(Table::Meta, APPLIED_INDEX_KEY))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value
            .as_ref()
            .try_into()
            .context("the applied index is not 8 bytes")?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    fn page(&self, conversation: &[u8; 16], limit: usize) -> Result<Vec<Vec<u8>>> {
        let (lo, hi) = conversation_range(conversation);
        let (lo, hi) = (
            prefixed(Table::Messages, &lo),
            prefixed(Table::Messages, &hi),
        );
        let mut page = Vec::with_capacity(limit);
        for row in self.tree.range(lo..=hi).rev().take(limit) {
            page.push(row?.1.to_vec());
        }
        Ok(page)
    }

    fn scan(&self, table: Table, visit: &mut Visit<'_>) -> Result<()> {
        for row in self.tree.scan_prefix([table.id()]) {
            let (key, value) = row?;
            visit(&key[1..], &value)?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.flush().context("sled flush")?;
        Ok(())
    }

    fn durable_commits(&self) -> Option<u64> {
        None
    }
}
