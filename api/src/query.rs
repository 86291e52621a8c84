//! Reads of one partition's projections: what the service answers from and
//! what subscriptions replay. Each function takes a consistent view (one
//! read transaction) of one store.

use missive_proto::v1 as pb;
use missive_raft::AppliedState;
use std::iter::Peekable;

use redb::{Range, ReadOnlyTable, ReadTransaction, ReadableTableMetadata as _};

use crate::limits::MAX_UNREAD_COUNT;
use crate::store::{self, Store, StoreError, keys};

type T = ReadOnlyTable<&'static [u8], &'static [u8]>;

fn table(txn: &ReadTransaction, t: store::Table) -> Result<T, StoreError> {
    Ok(txn.open_table(t)?)
}

/// The log index the store has applied up to (0 before anything).
pub fn applied_index(txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = table(txn, store::META)?;
    let Some(bytes) = meta.get(store::APPLIED_KEY)? else {
        return Ok(0);
    };
    let state = AppliedState::decode(bytes.value())
        .map_err(|e| StoreError::BadSnapshot(format!("stored applied state: {e}")))?;
    Ok(state.last_applied.map_or(0, |id| id.index))
}

/// The history epoch (see `crate::token`): 0 unless a restore set one.
pub fn epoch(txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = table(txn, store::META)?;
    Ok(meta
        .get(store::EPOCH_KEY)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The highest log index whose conversation events retention removed (0:
/// none).
pub fn history_floor(txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = table(txn, store::META)?;
    Ok(meta
        .get(store::HISTORY_FLOOR_KEY)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The conversations of `user` in this store, with the seq that removed the
/// user from each (0 while a member).
pub fn user_conversations(s: &Store, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
    user_conversations_in(&s.read()?, user)
}

/// [`user_conversations`] in a given view.
pub fn user_conversations_in(
    txn: &ReadTransaction,
    user: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let t = table(txn, store::USER_CONVERSATIONS)?;
    let prefix = keys::prefix(user);
    let end = keys::prefix_end(&prefix);
    let mut out = Vec::new();
    for row in t.range(prefix.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        let conv = String::from_utf8_lossy(keys::last_part(k.value())).into_owned();
        let left = v.value().try_into().map(u64::from_be_bytes).unwrap_or(0);
        out.push((conv, left));
    }
    Ok(out)
}

pub fn conversation_record(
    txn: &ReadTransaction,
    conv: &str,
) -> Result<Option<pb::ConversationRecord>, StoreError> {
    store::get(
        &table(txn, store::CONVERSATIONS)?,
        "conversations",
        conv.as_bytes(),
    )
}

pub fn member(
    txn: &ReadTransaction,
    conv: &str,
    user: &str,
) -> Result<Option<pb::MemberRecord>, StoreError> {
    store::get(
        &table(txn, store::MEMBERS)?,
        "members",
        &keys::pair(conv, user),
    )
}

/// Every member now in `conv`, with its record, in user order.
pub fn members(
    txn: &ReadTransaction,
    conv: &str,
) -> Result<Vec<(String, pb::MemberRecord)>, StoreError> {
    let t = table(txn, store::MEMBERS)?;
    let prefix = keys::prefix(conv);
    let end = keys::prefix_end(&prefix);
    let mut out = Vec::new();
    for row in t.range(prefix.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        let m: pb::MemberRecord = store::decode("members", k.value(), v.value())?;
        if m.left_seq == 0 {
            out.push((
                String::from_utf8_lossy(keys::last_part(k.value())).into_owned(),
                m,
            ));
        }
    }
    Ok(out)
}

/// The conversation as clients see it.
pub fn conversation(
    txn: &ReadTransaction,
    conv: &str,
) -> Result<Option<pb::Conversation>, StoreError> {
    let Some(head) = conversation_record(txn, conv)? else {
        return Ok(None);
    };
    Ok(Some(pb::Conversation {
        conversation_id: conv.to_owned(),
        kind: head.kind,
        name: head.name,
        members: members(txn, conv)?
            .into_iter()
            .map(|(user, m)| pb::Member { user, role: m.role })
            .collect(),
        created_ms: head.created_ms,
        last_seq: head.last_seq,
    }))
}

pub fn message(
    txn: &ReadTransaction,
    conv: &str,
    seq: u64,
) -> Result<Option<pb::Message>, StoreError> {
    let r: Option<pb::MessageRecord> = store::get(
        &table(txn, store::MESSAGES)?,
        "messages",
        &keys::seq(conv, seq),
    )?;
    Ok(r.and_then(|r| r.message))
}

/// A page of history: messages with seq < `before` newest first, or, when
/// `after` is set, seq > `after` oldest first; and whether more lie beyond.
pub fn history(
    txn: &ReadTransaction,
    conv: &str,
    before: u64,
    after: u64,
    limit: usize,
) -> Result<(Vec<pb::Message>, bool), StoreError> {
    let t = table(txn, store::MESSAGES)?;
    let prefix = keys::prefix(conv);
    let (from, to) = if after > 0 {
        (
            keys::seq(conv, after.saturating_add(1)),
            keys::prefix_end(&prefix),
        )
    } else if before == 0 {
        (prefix.clone(), keys::prefix_end(&prefix))
    } else {
        (prefix.clone(), keys::seq(conv, before))
    };
    let range = t.range(from.as_slice()..to.as_slice())?;
    // Oldest first after a seq, newest first otherwise; one past the page
    // tells whether there is more.
    let rows: Box<dyn Iterator<Item = _>> = if after > 0 {
        Box::new(range)
    } else {
        Box::new(range.rev())
    };
    let mut out = Vec::with_capacity(limit);
    let mut more = false;
    for row in rows {
        let (k, v) = row?;
        if out.len() == limit {
            more = true;
            break;
        }
        let r: pb::MessageRecord = store::decode("messages", k.value(), v.value())?;
        out.extend(r.message);
    }
    Ok((out, more))
}

/// Messages after `read_up_to` not sent by `user`, up to [`MAX_UNREAD_COUNT`].
pub fn unread(
    txn: &ReadTransaction,
    conv: &str,
    user: &str,
    read_up_to: u64,
) -> Result<u64, StoreError> {
    let t = table(txn, store::MESSAGES)?;
    let from = keys::seq(conv, read_up_to.saturating_add(1));
    let end = keys::prefix_end(&keys::prefix(conv));
    let mut n = 0;
    for row in t.range(from.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        let r: pb::MessageRecord = store::decode("messages", k.value(), v.value())?;
        if r.message.is_some_and(|m| !m.deleted && m.sender != user) {
            n += 1;
            if n >= MAX_UNREAD_COUNT {
                break;
            }
        }
    }
    Ok(n)
}

/// `user`'s inbox entries from this store (unsorted).
pub fn inbox(s: &Store, user: &str) -> Result<Vec<pb::InboxEntry>, StoreError> {
    let txn = s.read()?;
    let mut out = Vec::new();
    for (conv, left) in user_conversations_in(&txn, user)? {
        if left != 0 {
            continue;
        }
        let (Some(head), Some(me)) = (
            conversation_record(&txn, &conv)?,
            member(&txn, &conv, user)?,
        ) else {
            continue;
        };
        let last_message = match head.last_message_seq {
            0 => None,
            seq => message(&txn, &conv, seq)?,
        };
        out.push(pb::InboxEntry {
            conversation: conversation(&txn, &conv)?,
            last_message,
            unread: unread(&txn, &conv, user, me.read_up_to)?,
            delivered_up_to: me.delivered_up_to,
            read_up_to: me.read_up_to,
            last_activity_ms: head.last_activity_ms,
        });
    }
    Ok(out)
}

/// Each member's delivered and read state of message `seq`.
pub fn message_status(
    txn: &ReadTransaction,
    conv: &str,
    seq: u64,
    sender: &str,
) -> Result<pb::MessageStatusResponse, StoreError> {
    let mut resp = pb::MessageStatusResponse {
        delivered_to_all: true,
        read_by_all: true,
        ..Default::default()
    };
    for (user, m) in members(txn, conv)? {
        if user == sender {
            continue;
        }
        let delivered = m.delivered_up_to >= seq;
        let read = m.read_up_to >= seq;
        resp.delivered_to_all &= delivered;
        resp.read_by_all &= read;
        resp.members.push(pb::MemberStatus {
            user,
            delivered,
            read,
            delivered_up_to: m.delivered_up_to,
            read_up_to: m.read_up_to,
        });
    }
    Ok(resp)
}

pub fn presence(s: &Store, user: &str) -> Result<pb::PresenceChanged, StoreError> {
    presence_in(&s.read()?, user)
}

/// [`presence`] in a given view.
pub fn presence_in(txn: &ReadTransaction, user: &str) -> Result<pb::PresenceChanged, StoreError> {
    let r: Option<pb::PresenceRecord> =
        store::get(&table(txn, store::PRESENCE)?, "presence", user.as_bytes())?;
    let r = r.unwrap_or_default();
    Ok(pb::PresenceChanged {
        user: user.to_owned(),
        online: r.online,
        last_seen_ms: r.last_seen_ms,
    })
}

/// The first seq of `conv` (1..=last_seq) whose event was committed after
/// `index`; `last_seq + 1` if none. Seqs and indexes grow together in a
/// conversation, so a binary search over point reads finds it.
pub fn first_seq_after(
    txn: &ReadTransaction,
    conv: &str,
    last_seq: u64,
    index: u64,
) -> Result<u64, StoreError> {
    let events = table(txn, store::EVENTS)?;
    let messages = table(txn, store::MESSAGES)?;
    let (mut lo, mut hi) = (1u64, last_seq + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let key = keys::seq(conv, mid);
        let e: Option<pb::StoredEvent> = store::get(&events, "events", &key)?;
        let at = match e {
            Some(e) => Some(e.index),
            None => store::get::<pb::MessageRecord>(&messages, "messages", &key)?
                .and_then(|m| (m.index > 0).then_some(m.index)),
        };
        if at.is_some_and(|at| at > index) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// The `MessageSent` event of a send, built from its message row: the
/// message as it was sent. `None` for a row written when sends still had an
/// event row of their own (its `index` is 0).
fn sent_event(conv: &str, record: pb::MessageRecord) -> Option<pb::StoredEvent> {
    if record.index == 0 {
        return None;
    }
    let mut message = record.message?;
    if let Some(original) = record.original_content {
        message.content = Some(original);
    }
    message.edited_ms = 0;
    message.reactions.clear();
    Some(pb::StoredEvent {
        index: record.index,
        event: Some(pb::ChatEvent {
            conversation_id: conv.to_owned(),
            seq: message.seq,
            timestamp_ms: message.sent_ms,
            actor: message.sender.clone(),
            kind: Some(pb::chat_event::Kind::MessageSent(message)),
        }),
    })
}

/// The seq of the next row of a range of `seq` keys, leaving it there.
fn peek_seq(
    rows: &mut Peekable<Range<'_, &'static [u8], &'static [u8]>>,
) -> Result<Option<u64>, StoreError> {
    match rows.peek() {
        None => Ok(None),
        Some(Ok((k, _))) => Ok(Some(keys::seq_of(k.value()))),
        Some(Err(_)) => match rows.next() {
            Some(Err(e)) => Err(e.into()),
            _ => unreachable!("the peeked row was an error"),
        },
    }
}

/// The stored events of `conv` with seq in `from..=to`, at most `limit`, in
/// seq order: the events table's rows merged with the sends' events built
/// from the messages table.
pub fn events(
    txn: &ReadTransaction,
    conv: &str,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<pb::StoredEvent>, StoreError> {
    let mut out = Vec::new();
    if from > to {
        return Ok(out);
    }
    let a = keys::seq(conv, from);
    let b = keys::seq(conv, to);
    let events = table(txn, store::EVENTS)?;
    let messages = table(txn, store::MESSAGES)?;
    let mut ev = events.range(a.as_slice()..=b.as_slice())?.peekable();
    let mut ms = messages.range(a.as_slice()..=b.as_slice())?.peekable();
    while out.len() < limit {
        match (peek_seq(&mut ev)?, peek_seq(&mut ms)?) {
            (None, None) => break,
            (Some(e), m) if m.is_none_or(|m| e <= m) => {
                let (k, v) = ev.next().expect("peeked")?;
                if m == Some(e) {
                    // A send from before sends kept no event row: its own
                    // row is the event.
                    ms.next();
                }
                out.push(store::decode("events", k.value(), v.value())?);
            }
            _ => {
                let (k, v) = ms.next().expect("peeked")?;
                let record: pb::MessageRecord = store::decode("messages", k.value(), v.value())?;
                out.extend(sent_event(conv, record));
            }
        }
    }
    Ok(out)
}

/// `user`'s devices with a push target, in device order.
pub fn push_targets(
    s: &Store,
    user: &str,
) -> Result<Vec<(String, pb::PushTargetRecord)>, StoreError> {
    push_targets_in(&s.read()?, user)
}

/// [`push_targets`] in a given view.
pub fn push_targets_in(
    txn: &ReadTransaction,
    user: &str,
) -> Result<Vec<(String, pb::PushTargetRecord)>, StoreError> {
    let t = table(txn, store::PUSH_TARGETS)?;
    let prefix = keys::prefix(user);
    let end = keys::prefix_end(&prefix);
    let mut out = Vec::new();
    for row in t.range(prefix.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        let device = String::from_utf8_lossy(keys::last_part(k.value())).into_owned();
        out.push((device, store::decode("push_targets", k.value(), v.value())?));
    }
    Ok(out)
}

/// Every dead letter in this store, oldest first, at most `limit`.
pub fn dead_letters(s: &Store, limit: usize) -> Result<Vec<pb::DeadLetter>, StoreError> {
    let txn = s.read()?;
    let t = table(&txn, store::DEAD_LETTERS)?;
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)?.take(limit) {
        let (k, v) = row?;
        out.push(store::decode("dead_letters", k.value(), v.value())?);
    }
    Ok(out)
}

/// How many push targets the view holds (redb keeps the count: no scan).
pub fn push_target_count(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(table(txn, store::PUSH_TARGETS)?.len()?)
}

/// Every push target of the view: (user, device, target), in key order.
pub fn all_push_targets(
    txn: &ReadTransaction,
) -> Result<Vec<(String, String, pb::PushTargetRecord)>, StoreError> {
    let t = table(txn, store::PUSH_TARGETS)?;
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)? {
        let (k, v) = row?;
        let key = k.value();
        let device = keys::last_part(key);
        let user = &key[..key.len() - device.len() - 1];
        out.push((
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(device).into_owned(),
            store::decode("push_targets", key, v.value())?,
        ));
    }
    Ok(out)
}
