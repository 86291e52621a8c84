//! [`Tables`]: the projection tables of one write transaction, with
//! typed reads and writes of their records ([`Tab`]).
//!
//! A table is opened on its first use, not with the others: opening one in
//! redb looks it up in the transaction's table tree and, at commit, writes
//! its root back, and a send touches six of the fourteen tables. Opening
//! all of them for every applied batch was an eighth of the apply path's
//! instructions at the node's batch sizes (docs/projection-store.md).

use std::cell::OnceCell;
use std::ops::{Bound, ControlFlow};

use missive_proto::v1 as pb;
use prost::Message;
use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::store::{self, StoreError, keys};

/// One table of a write transaction, opened on first use.
pub struct Tab<'t> {
    txn: &'t WriteTransaction,
    def: &'static store::Table,
    table: OnceCell<store::WriteTable<'t>>,
}

impl<'t> Tab<'t> {
    fn new(txn: &'t WriteTransaction, def: &'static store::Table) -> Self {
        Tab {
            txn,
            def,
            table: OnceCell::new(),
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

    /// The record at `key`.
    pub fn get<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, StoreError> {
        store::get(self.table()?, self.name(), key)
    }

    /// The 8-byte big-endian number at `key`, if there is one.
    pub fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .table()?
            .get(key)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Writes `value` at `key`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.table_mut()?.insert(key, value)?;
        Ok(())
    }

    /// Writes the record `r` at `key`.
    pub fn put(&mut self, key: &[u8], r: &impl Message) -> Result<(), StoreError> {
        self.insert(key, &r.encode_to_vec())
    }

    /// Removes the row at `key`, if any.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.table_mut()?.remove(key)?;
        Ok(())
    }

    /// Calls `f` with the rows whose keys are in `(from, to)`, in key order,
    /// until it breaks.
    pub fn scan(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
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
        &self,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let end = keys::prefix_end(prefix);
        self.scan(Bound::Included(prefix), Bound::Excluded(&end), f)
    }

    /// How many keys start with `prefix`.
    pub fn count_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut n = 0;
        self.scan_prefix(prefix, |_, _| {
            n += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(n)
    }
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
    /// The tables of `txn`, each opened when first used.
    pub fn open(txn: &'t WriteTransaction) -> Self {
        let tab = |def: &'static store::Table| Tab::new(txn, def);
        Tables {
            meta: tab(&store::META),
            conversations: tab(&store::CONVERSATIONS),
            members: tab(&store::MEMBERS),
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
