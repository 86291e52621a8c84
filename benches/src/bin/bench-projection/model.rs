//! The expected projection: the same apply code run over ordered maps in
//! memory. The checker replays the log into it up to a store's applied
//! index and compares the two row by row.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::store::{Changes, Table, Txn};

/// Table → key → value.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Model {
    /// Applies `f` directly: the model never crashes, so it needs no
    /// atomicity of its own.
    pub(crate) fn write(&mut self, f: &mut Changes<'_>) -> Result<()> {
        f(self)
    }

    pub(crate) fn rows(&self, table: Table) -> Option<&BTreeMap<Vec<u8>, Vec<u8>>> {
        self.tables.get(&table)
    }
}

impl Txn for Model {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tables
            .get(&table)
            .and_then(|rows| rows.get(key))
            .cloned())
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}
