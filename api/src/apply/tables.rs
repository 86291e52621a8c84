//! [`Tables`]: the projection tables of one write transaction, with
//! typed reads and writes of their records ([`Tab`]).
//!
//! A table is opened on its first use, not with the others: opening one in
//! redb looks it up in the transaction's table tree and, at commit, writes
//! its root back, and a send touches six of the fourteen tables. Opening
//! all of them for every applied batch was an eighth of the apply path's
//! instructions at the node's batch sizes (docs/projection-store.md).
//!
//! The rows every send rewrites are held back: the conversation's head and
//! the sender's member row (and the applied position in `meta`, rewritten
//! by every batch). Their [`Tab`]s keep what an applied batch writes in
//! memory, reads see it there first, and [`Tables::within`] hands it to
//! redb once, in key order, when the batch ends: each such row reaches
//! redb's B-tree once per batch rather than once per command. The other
//! tables take each row as it comes; their rows are written once anyway.
//! A batch is bounded (the node's apply batch, or a rebuild's), and so is
//! what it holds. A batch of a few commands rarely writes a row twice, and
//! holding costs a map insert per row: below [`HOLD_FROM_COMMANDS`] nothing
//! is held (docs/projection-store.md, "Holding a batch's rewritten rows").

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use missive_proto::v1 as pb;
use prost::Message;
use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::store::{self, StoreError, keys};

/// The fewest commands in a batch for which [`Tables::within`] holds rows
/// back.
pub const HOLD_FROM_COMMANDS: usize = 16;

/// One table of a write transaction, opened on first use, with the rows
/// it holds back.
pub struct Tab<'t> {
    txn: &'t WriteTransaction,
    def: &'static store::Table,
    table: OnceCell<store::WriteTable<'t>>,
    /// Whether writes are held back (see the module docs).
    holds: bool,
    /// Rows written and not yet in `table`: the new value, or `None` for a
    /// removal.
    held: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t> Tab<'t> {
    fn new(txn: &'t WriteTransaction, def: &'static store::Table, holds: bool) -> Self {
        Tab {
            txn,
            def,
            table: OnceCell::new(),
            holds,
            held: BTreeMap::new(),
        }
    }

    /// The table's name, for errors.
    fn name(&self) -> &'static str {
        self.def.name()
    }

    fn table(&self) -> Result<&store::WriteTable<'t>, StoreError> {
        if let Some(t) = self.table.get() {
            return Ok(t);
        }
        let opened = self.txn.open_table(*self.def)?;
        Ok(self.table.get_or_init(|| opened))
    }

    fn table_mut(&mut self) -> Result<&mut store::WriteTable<'t>, StoreError> {
        self.table()?;
        Ok(self.table.get_mut().expect("opened just above"))
    }

    /// Calls `f` with the value at `key`, the held one if there is one.
    fn with_value<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if let Some(held) = self.held.get(key) {
            return f(held.as_deref());
        }
        match self.table()?.get(key)? {
            Some(v) => f(Some(v.value())),
            None => f(None),
        }
    }

    /// The record at `key`.
    pub fn get<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, StoreError> {
        self.with_value(key, |v| {
            v.map(|v| store::decode(self.name(), key, v)).transpose()
        })
    }

    /// The 8-byte big-endian number at `key`, if there is one.
    pub fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.with_value(key, |v| {
            Ok(v.and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
        })
    }

    /// Writes `value` at `key`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(key, Some(value))
    }

    /// Writes the record `r` at `key`.
    pub fn put(&mut self, key: &[u8], r: &impl Message) -> Result<(), StoreError> {
        self.write(key, Some(r.encode_to_vec()))
    }

    /// Removes the row at `key`, if any.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.write::<&[u8]>(key, None)
    }

    /// Writes `value` at `key` (removes the row if `None`), or holds it back;
    /// a borrowed value is copied only to be held.
    fn write<V: AsRef<[u8]> + Into<Vec<u8>>>(
        &mut self,
        key: &[u8],
        value: Option<V>,
    ) -> Result<(), StoreError> {
        if self.holds {
            self.held.insert(key.to_vec(), value.map(Into::into));
            Ok(())
        } else {
            write_row(self.table_mut()?, key, value.as_ref().map(AsRef::as_ref))
        }
    }

    /// Removes every row whose key is in `(from, to)`: one walk along the
    /// leaves, each rewritten once, rather than a descent and a leaf rebuilt
    /// per row.
    pub fn remove_range(&mut self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<(), StoreError> {
        self.write_out()?;
        self.table_mut()?
            .retain_in::<&[u8], _>((from, to), |_, _| false)?;
        Ok(())
    }

    /// Hands the rows held back to redb, in key order.
    fn write_out(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let table = self.table_mut()?;
        for (k, v) in held {
            write_row(table, &k, v.as_deref())?;
        }
        Ok(())
    }

    /// Calls `f` with the rows whose keys are in `(from, to)`, in key order,
    /// until it breaks. The rows held back are written out first, so the
    /// scan sees them.
    pub fn scan(
        &mut self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        self.write_out()?;
        for row in self.table()?.range::<&[u8]>((from, to))? {
            let (k, v) = row?;
            if f(k.value(), v.value())?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The rows whose keys start with `prefix`.
    pub fn scan_prefix(
        &mut self,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let end = keys::prefix_end(prefix);
        self.scan(Bound::Included(prefix), Bound::Excluded(&end), f)
    }

    /// How many keys start with `prefix`.
    pub fn count_prefix(&mut self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut n = 0;
        self.scan_prefix(prefix, |_, _| {
            n += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(n)
    }
}

/// Writes `value` at `key` in `table`, or removes the row if `None`.
fn write_row(
    table: &mut store::WriteTable<'_>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    match value {
        Some(v) => table.insert(key, v).map(drop)?,
        None => table.remove(key).map(drop)?,
    }
    Ok(())
}

/// Every table, open in one transaction.
pub struct Tables<'t> {
    pub meta: Tab<'t>,
    pub conversations: Tab<'t>,
    pub members: Tab<'t>,
    pub user_conversations: Tab<'t>,
    pub messages: Tab<'t>,
    pub events: Tab<'t>,
    pub sent: Tab<'t>,
    pub presence: Tab<'t>,
    pub device_keys: Tab<'t>,
    pub one_time_keys: Tab<'t>,
    pub push_targets: Tab<'t>,
    pub push_queue: Tab<'t>,
    pub dead_letters: Tab<'t>,
    pub presence_sessions: Tab<'t>,
}

impl<'t> Tables<'t> {
    /// Runs `f`, which applies `commands` commands, on the tables of `txn`,
    /// then writes out what it wrote.
    pub fn within<R>(
        txn: &'t WriteTransaction,
        commands: usize,
        f: impl FnOnce(&mut Tables<'t>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut t = Tables::open(txn, commands >= HOLD_FROM_COMMANDS);
        let r = f(&mut t)?;
        t.write_out()?;
        Ok(r)
    }

    /// The tables of `txn`, each opened when first used. What is written
    /// through them reaches `txn` at [`Tables::write_out`].
    fn open(txn: &'t WriteTransaction, hold: bool) -> Self {
        let tab = |def: &'static store::Table| Tab::new(txn, def, false);
        let held = |def: &'static store::Table| Tab::new(txn, def, hold);
        Tables {
            meta: held(&store::META),
            conversations: held(&store::CONVERSATIONS),
            members: held(&store::MEMBERS),
            user_conversations: tab(&store::USER_CONVERSATIONS),
            messages: tab(&store::MESSAGES),
            events: tab(&store::EVENTS),
            sent: tab(&store::SENT),
            presence: tab(&store::PRESENCE),
            device_keys: tab(&store::DEVICE_KEYS),
            one_time_keys: tab(&store::ONE_TIME_KEYS),
            push_targets: tab(&store::PUSH_TARGETS),
            push_queue: tab(&store::PUSH_QUEUE),
            dead_letters: tab(&store::DEAD_LETTERS),
            presence_sessions: tab(&store::PRESENCE_SESSIONS),
        }
    }

    /// Hands the held-back rows to redb: only the tables [`Tables::open`]
    /// lets hold can have any.
    fn write_out(&mut self) -> Result<(), StoreError> {
        for tab in [&mut self.meta, &mut self.conversations, &mut self.members] {
            tab.write_out()?;
        }
        Ok(())
    }

    /// Every conversation's id, in order.
    pub fn conversation_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        self.conversations
            .scan(Bound::Unbounded, Bound::Unbounded, |k, _| {
                ids.push(String::from_utf8_lossy(k).into_owned());
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(ids)
    }

    pub fn conversation(&self, id: &str) -> Result<Option<pb::ConversationRecord>, StoreError> {
        self.conversations.get(id.as_bytes())
    }

    pub fn put_conversation(
        &mut self,
        id: &str,
        r: &pb::ConversationRecord,
    ) -> Result<(), StoreError> {
        self.conversations.put(id.as_bytes(), r)
    }

    pub fn member(&self, conv: &str, user: &str) -> Result<Option<pb::MemberRecord>, StoreError> {
        self.members.get(&keys::pair(conv, user))
    }

    /// The user's membership if it is a member now.
    pub fn active_member(
        &self,
        conv: &str,
        user: &str,
    ) -> Result<Option<pb::MemberRecord>, StoreError> {
        Ok(self.member(conv, user)?.filter(|m| m.left_seq == 0))
    }

    pub fn put_member(
        &mut self,
        conv: &str,
        user: &str,
        r: &pb::MemberRecord,
    ) -> Result<(), StoreError> {
        self.update_member(conv, user, r)?;
        // The reverse index: the seq that removed the user, or 0.
        self.user_conversations
            .insert(&keys::pair(user, conv), &r.left_seq.to_be_bytes())
    }

    /// Rewrites a member whose membership (`left_seq`) did not change: its
    /// watermarks or role. The reverse index holds only `left_seq`, so it
    /// is left alone — one table fewer written by every send and receipt.
    pub fn update_member(
        &mut self,
        conv: &str,
        user: &str,
        r: &pb::MemberRecord,
    ) -> Result<(), StoreError> {
        self.members.put(&keys::pair(conv, user), r)
    }

    pub fn message(&self, conv: &str, seq: u64) -> Result<Option<pb::MessageRecord>, StoreError> {
        self.messages.get(&keys::seq(conv, seq))
    }

    pub fn put_message(
        &mut self,
        conv: &str,
        seq: u64,
        r: &pb::MessageRecord,
    ) -> Result<(), StoreError> {
        self.messages.put(&keys::seq(conv, seq), r)
    }

    pub fn event(&self, conv: &str, seq: u64) -> Result<Option<pb::StoredEvent>, StoreError> {
        self.events.get(&keys::seq(conv, seq))
    }

    pub fn put_event(
        &mut self,
        conv: &str,
        seq: u64,
        r: &pb::StoredEvent,
    ) -> Result<(), StoreError> {
        self.events.put(&keys::seq(conv, seq), r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn record(last_seq: u64) -> pb::ConversationRecord {
        pb::ConversationRecord {
            last_seq,
            ..Default::default()
        }
    }

    /// Writes, reads and scans through `Tables` for a batch of `commands`;
    /// what the scan saw and the conversations table afterwards.
    fn a_batch(commands: usize) -> (Vec<String>, Vec<(String, u64)>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.redb")).unwrap();
        let txn = store.write().unwrap();
        let seen = Tables::within(&txn, commands, |t| {
            // A row rewritten three times, one removed after its write and
            // one never there: reads see the latest of each.
            for seq in 1..=3 {
                t.put_conversation("c1", &record(seq))?;
            }
            t.put_conversation("c2", &record(7))?;
            t.conversations.remove(b"c2")?;
            t.conversations.remove(b"c3")?;
            assert_eq!(t.conversation("c1")?.map(|r| r.last_seq), Some(3));
            assert_eq!(t.conversation("c2")?, None);
            t.meta.insert(b"n", &9u64.to_be_bytes())?;
            assert_eq!(t.meta.get_u64(b"n")?, Some(9));
            // A scan sees what is held, and what is held stays readable.
            t.put_conversation("c0", &record(1))?;
            let keys = t.conversation_ids()?;
            t.put_conversation("c1", &record(4))?;
            Ok(keys)
        })
        .unwrap();
        store.commit(txn, 1).unwrap();

        // Everything reached redb when `within` returned.
        let read = store.read().unwrap();
        let meta = read.open_table(store::META).unwrap();
        assert_eq!(
            meta.get(b"n".as_slice()).unwrap().unwrap().value(),
            9u64.to_be_bytes()
        );
        let table = read.open_table(store::CONVERSATIONS).unwrap();
        let rows = table
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                let r = pb::ConversationRecord::decode(v.value()).unwrap();
                (String::from_utf8_lossy(k.value()).into_owned(), r.last_seq)
            })
            .collect();
        (seen, rows)
    }

    #[test]
    fn held_rows_are_read_back_scanned_and_written_out_as_unheld_ones_are() {
        for commands in [1, HOLD_FROM_COMMANDS, 1000] {
            let (seen, rows) = a_batch(commands);
            assert_eq!(seen, ["c0", "c1"], "{commands} commands");
            assert_eq!(
                rows,
                [("c0".to_owned(), 1), ("c1".to_owned(), 4)],
                "{commands} commands"
            );
        }
    }

    #[test]
    fn a_range_removal_takes_the_rows_in_range_held_or_not_and_no_other() {
        for commands in [1, HOLD_FROM_COMMANDS] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("p.redb")).unwrap();
            let txn = store.write().unwrap();
            Tables::within(&txn, 1, |t| {
                for c in ["a", "b", "c"] {
                    t.put_conversation(c, &record(1))?;
                }
                Ok(())
            })
            .unwrap();
            let left = Tables::within(&txn, commands, |t| {
                // "d" is held back when the batch holds rows.
                t.put_conversation("d", &record(2))?;
                t.put_conversation("e", &record(2))?;
                t.conversations
                    .remove_range(Bound::Excluded(b"a"), Bound::Included(b"d"))?;
                let mut left = Vec::new();
                for c in ["a", "b", "c", "d", "e"] {
                    if t.conversation(c)?.is_some() {
                        left.push(c);
                    }
                }
                Ok(left)
            })
            .unwrap();
            assert_eq!(left, ["a", "e"], "{commands} commands");
            let table = txn.open_table(store::CONVERSATIONS).unwrap();
            assert_eq!(table.iter().unwrap().count(), 2, "{commands} commands");
        }
    }

    #[test]
    fn a_failed_batch_writes_nothing_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.redb")).unwrap();
        let txn = store.write().unwrap();
        let failed: Result<(), StoreError> = Tables::within(&txn, HOLD_FROM_COMMANDS, |t| {
            t.put_conversation("c1", &record(1))?;
            Err(StoreError::BadSnapshot("stop".into()))
        });
        assert!(failed.is_err());
        let table = txn.open_table(store::CONVERSATIONS).unwrap();
        assert!(table.get(b"c1".as_slice()).unwrap().is_none());
    }
}
