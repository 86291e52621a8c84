//! The state machine's apply, as the chat projection will do it: checks
//! that read the projection, then the rows each event changes, and the
//! applied index, all in the batch's one write. Deterministic: the same
//! log gives byte-identical rows on any engine (the checker relies on it).
//!
//! Rows are fixed-width big-endian fields:
//!
//! ```text
//! messages    (conv 16, seq 8)   → sender 16, sent_at 8, index 8, edits 2,
//!                                  body_len 2, body, reactions 1,
//!                                  (user 16, emoji 4) × reactions
//! events      (conv 16, seq 8)   → kind 1, index 8, at 8, actor 16, payload
//! heads       conv 16            → last_seq 8, last_message_seq 8, last_activity 8
//! watermarks  (conv 16, user 16) → delivered_up_to 8, read_up_to 8
//! idempotency (sender 16, cmid 16) → conv 16, seq 8
//! members     (conv 16, user 16) → role 1, joined_at 8
//! member_of   (user 16, conv 16) → joined_at 8
//! meta        "applied_index"    → index 8
//! ```

use anyhow::{Context, Result, bail};

use crate::store::{APPLIED_INDEX_KEY, Table, Txn};
use crate::workload::{Batch, Command, Entry, Id};

/// Reactions kept per message; a new one past the bound replaces the
/// oldest, so a row's size is bounded.
const MAX_REACTIONS: usize = 32;

/// Event kinds, the first byte of an event row.
const MESSAGE_SENT: u8 = 1;
const MESSAGE_EDITED: u8 = 2;
const REACTION_SET: u8 = 3;
const DELIVERED_UP_TO: u8 = 4;
const READ_UP_TO: u8 = 5;
const CONVERSATION_CREATED: u8 = 6;

const ROLE_OWNER: u8 = 1;
const ROLE_MEMBER: u8 = 0;

/// Applies every entry of `batch`, then records its last index.
pub(crate) fn apply_batch(txn: &mut dyn Txn, batch: &Batch) -> Result<()> {
    for entry in &batch.entries {
        apply_entry(txn, entry)?;
    }
    txn.put(
        Table::Meta,
        APPLIED_INDEX_KEY,
        &batch.last_index().to_be_bytes(),
    )
}

/// One entry. A command that fails its checks is a deterministic
/// rejection: it changes nothing (a retried send is one).
fn apply_entry(txn: &mut dyn Txn, entry: &Entry) -> Result<()> {
    let at = entry.timestamp_ms;
    match &entry.command {
        Command::CreateConversation {
            conversation,
            members,
        } => {
            if txn.get(Table::Heads, conversation)?.is_some() {
                return Ok(());
            }
            let creator = members.first().context("a conversation without members")?;
            for (n, user) in members.iter().enumerate() {
                let role = if n == 0 { ROLE_OWNER } else { ROLE_MEMBER };
                let mut row = vec![role];
                row.extend_from_slice(&at.to_be_bytes());
                txn.put(Table::Members, &pair(conversation, user), &row)?;
                txn.put(
                    Table::MemberOf,
                    &pair(user, conversation),
                    &at.to_be_bytes(),
                )?;
            }
            let mut payload = (members.len() as u16).to_be_bytes().to_vec();
            for user in members {
                payload.extend_from_slice(user);
            }
            let event = event(CONVERSATION_CREATED, entry, creator, &payload);
            txn.put(Table::Events, &at_seq(conversation, 1), &event)?;
            put_head(txn, conversation, Head::new(1, 0, at))
        }
        Command::Send {
            conversation,
            sender,
            client_msg_id,
            body,
        } => {
            if !is_member(txn, conversation, sender)? {
                return Ok(());
            }
            let idempotency_key = pair(sender, client_msg_id);
            if txn.get(Table::Idempotency, &idempotency_key)?.is_some() {
                return Ok(());
            }
            let Some(head) = head(txn, conversation)? else {
                return Ok(());
            };
            let seq = head.last_seq + 1;
            let message = Message {
                sender: *sender,
                sent_at: at,
                index: entry.index,
                edits: 0,
                body: body.clone(),
                reactions: Vec::new(),
            };
            txn.put(
                Table::Messages,
                &at_seq(conversation, seq),
                &message.encode()?,
            )?;
            let mut payload = client_msg_id.to_vec();
            payload.extend_from_slice(body);
            let event = event(MESSAGE_SENT, entry, sender, &payload);
            txn.put(Table::Events, &at_seq(conversation, seq), &event)?;
            put_head(txn, conversation, Head::new(seq, seq, at))?;
            let mut target = conversation.to_vec();
            target.extend_from_slice(&seq.to_be_bytes());
            txn.put(Table::Idempotency, &idempotency_key, &target)
        }
        Command::Receipt {
            conversation,
            user,
            read,
            up_to,
        } => {
            if !is_member(txn, conversation, user)? {
                return Ok(());
            }
            let Some(head) = head(txn, conversation)? else {
                return Ok(());
            };
            let key = pair(conversation, user);
            let (delivered, read_up_to) = match txn.get(Table::Watermarks, &key)? {
                Some(row) => (u64_at(&row, 0)?, u64_at(&row, 8)?),
                None => (0, 0),
            };
            let up_to = (*up_to).min(head.last_seq);
            // Watermarks only move forward, and delivered >= read.
            let next = if *read {
                (delivered.max(up_to), read_up_to.max(up_to))
            } else {
                (delivered.max(up_to), read_up_to)
            };
            if next == (delivered, read_up_to) {
                return Ok(());
            }
            let mut row = next.0.to_be_bytes().to_vec();
            row.extend_from_slice(&next.1.to_be_bytes());
            txn.put(Table::Watermarks, &key, &row)?;
            let kind = if *read { READ_UP_TO } else { DELIVERED_UP_TO };
            let seq = head.last_seq + 1;
            let event = event(kind, entry, user, &up_to.to_be_bytes());
            txn.put(Table::Events, &at_seq(conversation, seq), &event)?;
            put_head(txn, conversation, Head::new(seq, head.last_message_seq, at))
        }
        Command::Edit {
            conversation,
            editor,
            target,
            body,
        } => {
            let key = at_seq(conversation, *target);
            let Some(row) = txn.get(Table::Messages, &key)? else {
                return Ok(());
            };
            let mut message = Message::decode(&row)?;
            if message.sender != *editor || !is_member(txn, conversation, editor)? {
                return Ok(());
            }
            let Some(head) = head(txn, conversation)? else {
                return Ok(());
            };
            message.body.clone_from(body);
            message.edits = message.edits.saturating_add(1);
            txn.put(Table::Messages, &key, &message.encode()?)?;
            let seq = head.last_seq + 1;
            let mut payload = target.to_be_bytes().to_vec();
            payload.extend_from_slice(body);
            let event = event(MESSAGE_EDITED, entry, editor, &payload);
            txn.put(Table::Events, &at_seq(conversation, seq), &event)?;
            put_head(txn, conversation, Head::new(seq, head.last_message_seq, at))
        }
        Command::React {
            conversation,
            user,
            target,
            emoji,
        } => {
            if !is_member(txn, conversation, user)? {
                return Ok(());
            }
            let key = at_seq(conversation, *target);
            let Some(row) = txn.get(Table::Messages, &key)? else {
                return Ok(());
            };
            let Some(head) = head(txn, conversation)? else {
                return Ok(());
            };
            let mut message = Message::decode(&row)?;
            match message.reactions.iter_mut().find(|(u, _)| u == user) {
                Some(reaction) => reaction.1 = *emoji,
                None => {
                    if message.reactions.len() == MAX_REACTIONS {
                        message.reactions.remove(0);
                    }
                    message.reactions.push((*user, *emoji));
                }
            }
            txn.put(Table::Messages, &key, &message.encode()?)?;
            let seq = head.last_seq + 1;
            let mut payload = target.to_be_bytes().to_vec();
            payload.extend_from_slice(&emoji.to_be_bytes());
            let event = event(REACTION_SET, entry, user, &payload);
            txn.put(Table::Events, &at_seq(conversation, seq), &event)?;
            put_head(txn, conversation, Head::new(seq, head.last_message_seq, at))
        }
    }
}

fn is_member(txn: &mut dyn Txn, conversation: &Id, user: &Id) -> Result<bool> {
    Ok(txn
        .get(Table::Members, &pair(conversation, user))?
        .is_some())
}

#[derive(Clone, Copy, Debug)]
struct Head {
    last_seq: u64,
    last_message_seq: u64,
    last_activity: u64,
}

impl Head {
    fn new(last_seq: u64, last_message_seq: u64, last_activity: u64) -> Head {
        Head {
            last_seq,
            last_message_seq,
            last_activity,
        }
    }
}

fn head(txn: &mut dyn Txn, conversation: &Id) -> Result<Option<Head>> {
    let Some(row) = txn.get(Table::Heads, conversation)? else {
        return Ok(None);
    };
    Ok(Some(Head::new(
        u64_at(&row, 0)?,
        u64_at(&row, 8)?,
        u64_at(&row, 16)?,
    )))
}

fn put_head(txn: &mut dyn Txn, conversation: &Id, head: Head) -> Result<()> {
    let mut row = [0u8; 24];
    row[..8].copy_from_slice(&head.last_seq.to_be_bytes());
    row[8..16].copy_from_slice(&head.last_message_seq.to_be_bytes());
    row[16..].copy_from_slice(&head.last_activity.to_be_bytes());
    txn.put(Table::Heads, conversation, &row)
}

/// A message row.
#[derive(Clone, Debug)]
struct Message {
    sender: Id,
    sent_at: u64,
    /// The log index that created it.
    index: u64,
    edits: u16,
    body: Vec<u8>,
    /// (user, emoji), at most `MAX_REACTIONS`.
    reactions: Vec<(Id, u32)>,
}

impl Message {
    fn encode(&self) -> Result<Vec<u8>> {
        let body_len = u16::try_from(self.body.len()).context("a body over 64 KiB")?;
        let mut row = Vec::with_capacity(37 + self.body.len() + 20 * self.reactions.len());
        row.extend_from_slice(&self.sender);
        row.extend_from_slice(&self.sent_at.to_be_bytes());
        row.extend_from_slice(&self.index.to_be_bytes());
        row.extend_from_slice(&self.edits.to_be_bytes());
        row.extend_from_slice(&body_len.to_be_bytes());
        row.extend_from_slice(&self.body);
        row.push(self.reactions.len() as u8);
        for (user, emoji) in &self.reactions {
            row.extend_from_slice(user);
            row.extend_from_slice(&emoji.to_be_bytes());
        }
        Ok(row)
    }

    fn decode(row: &[u8]) -> Result<Message> {
        let body_len = usize::from(u16::from_be_bytes(bytes_at(row, 34)?));
        let body = row
            .get(36..36 + body_len)
            .context("a message row cut inside its body")?
            .to_vec();
        let mut rest = row
            .get(36 + body_len..)
            .context("a message row without its reaction count")?;
        let (&count, mut reactions_bytes) = rest.split_first().context("no reaction count")?;
        if usize::from(count) > MAX_REACTIONS {
            bail!("a message row with {count} reactions");
        }
        let mut reactions = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let user: Id = bytes_at(reactions_bytes, 0)?;
            let emoji = u32::from_be_bytes(bytes_at(reactions_bytes, 16)?);
            reactions.push((user, emoji));
            reactions_bytes = &reactions_bytes[20..];
        }
        rest = reactions_bytes;
        if !rest.is_empty() {
            bail!("{} trailing bytes after a message row", rest.len());
        }
        Ok(Message {
            sender: bytes_at(row, 0)?,
            sent_at: u64_at(row, 16)?,
            index: u64_at(row, 24)?,
            edits: u16::from_be_bytes(bytes_at(row, 32)?),
            body,
            reactions,
        })
    }
}

fn event(kind: u8, entry: &Entry, actor: &Id, payload: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(33 + payload.len());
    row.push(kind);
    row.extend_from_slice(&entry.index.to_be_bytes());
    row.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
    row.extend_from_slice(actor);
    row.extend_from_slice(payload);
    row
}

fn pair(a: &Id, b: &Id) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(a);
    key[16..].copy_from_slice(b);
    key
}

fn at_seq(conversation: &Id, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(conversation);
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn bytes_at<const N: usize>(row: &[u8], at: usize) -> Result<[u8; N]> {
    row.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "a row of {} bytes has no field at {at}..{}",
                row.len(),
                at + N
            )
        })
}

fn u64_at(row: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_be_bytes(bytes_at(row, at)?))
}
