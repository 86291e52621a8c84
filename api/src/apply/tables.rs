//! [`Tables`]: the projection tables open in one write transaction, with
//! typed reads and writes of their records.

use missive_proto::v1 as pb;
use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use crate::store::{self, StoreError, keys};

type T<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Every table, open in one transaction.
pub struct Tables<'t> {
    pub conversations: T<'t>,
    pub members: T<'t>,
    pub user_conversations: T<'t>,
    pub messages: T<'t>,
    pub events: T<'t>,
    pub sent: T<'t>,
    pub presence: T<'t>,
    pub device_keys: T<'t>,
    pub one_time_keys: T<'t>,
    pub push_targets: T<'t>,
    pub push_queue: T<'t>,
    pub dead_letters: T<'t>,
    pub meta: T<'t>,
    pub presence_sessions: T<'t>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            conversations: txn.open_table(store::CONVERSATIONS)?,
            members: txn.open_table(store::MEMBERS)?,
            user_conversations: txn.open_table(store::USER_CONVERSATIONS)?,
            messages: txn.open_table(store::MESSAGES)?,
            events: txn.open_table(store::EVENTS)?,
            sent: txn.open_table(store::SENT)?,
            presence: txn.open_table(store::PRESENCE)?,
            device_keys: txn.open_table(store::DEVICE_KEYS)?,
            one_time_keys: txn.open_table(store::ONE_TIME_KEYS)?,
            push_targets: txn.open_table(store::PUSH_TARGETS)?,
            push_queue: txn.open_table(store::PUSH_QUEUE)?,
            dead_letters: txn.open_table(store::DEAD_LETTERS)?,
            meta: txn.open_table(store::META)?,
            presence_sessions: txn.open_table(store::PRESENCE_SESSIONS)?,
        })
    }

    pub fn conversation(&self, id: &str) -> Result<Option<pb::ConversationRecord>, StoreError> {
        store::get(&self.conversations, "conversations", id.as_bytes())
    }

    pub fn put_conversation(
        &mut self,
        id: &str,
        r: &pb::ConversationRecord,
    ) -> Result<(), StoreError> {
        put(&mut self.conversations, id.as_bytes(), r)
    }

    pub fn member(&self, conv: &str, user: &str) -> Result<Option<pb::MemberRecord>, StoreError> {
        store::get(&self.members, "members", &keys::pair(conv, user))
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
        put(&mut self.members, &keys::pair(conv, user), r)?;
        // The reverse index: the seq that removed the user, or 0.
        self.user_conversations.insert(
            keys::pair(user, conv).as_slice(),
            r.left_seq.to_be_bytes().as_slice(),
        )?;
        Ok(())
    }

    pub fn message(&self, conv: &str, seq: u64) -> Result<Option<pb::MessageRecord>, StoreError> {
        store::get(&self.messages, "messages", &keys::seq(conv, seq))
    }

    pub fn put_message(
        &mut self,
        conv: &str,
        seq: u64,
        r: &pb::MessageRecord,
    ) -> Result<(), StoreError> {
        put(&mut self.messages, &keys::seq(conv, seq), r)
    }

    pub fn event(&self, conv: &str, seq: u64) -> Result<Option<pb::StoredEvent>, StoreError> {
        store::get(&self.events, "events", &keys::seq(conv, seq))
    }

    pub fn put_event(
        &mut self,
        conv: &str,
        seq: u64,
        r: &pb::StoredEvent,
    ) -> Result<(), StoreError> {
        put(&mut self.events, &keys::seq(conv, seq), r)
    }
}

/// Writes `r` at `key` of `t`.
pub fn put(t: &mut T<'_>, key: &[u8], r: &impl Message) -> Result<(), StoreError> {
    t.insert(key, r.encode_to_vec().as_slice())?;
    Ok(())
}

/// Reads the record at `key` of `t` (named `name` in errors).
pub fn get<M: Message + Default>(
    t: &T<'_>,
    name: &'static str,
    key: &[u8],
) -> Result<Option<M>, StoreError> {
    store::get(t, name, key)
}

/// How many keys of `t` start with `prefix`.
pub fn count_prefix(t: &T<'_>, prefix: &[u8]) -> Result<u64, StoreError> {
    let end = keys::prefix_end(prefix);
    let mut n = 0;
    for row in t.range(prefix..end.as_slice())? {
        row?;
        n += 1;
    }
    Ok(n)
}
