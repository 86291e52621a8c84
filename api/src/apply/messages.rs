//! Messages: send (idempotent by `client_msg_id`), edit, delete for
//! everyone, react.

use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use missive_proto::v1::{ConversationKind, Role};

use super::tables::Tables;
use super::{Applied, Ctx, Outcome, append_event, event_reply, next_event, unchanged};
use crate::error::Rejected;
use crate::limits::{MAX_CLIENT_MSG_ID_BYTES, MAX_EMOJI_BYTES};
use crate::store::{StoreError, keys};
use crate::validate;

/// The conversation's head and the actor's membership, if the actor is a
/// member of it now.
fn member_head(
    t: &Tables<'_>,
    ctx: &Ctx<'_>,
    conv: &str,
) -> Result<Result<(pb::ConversationRecord, pb::MemberRecord), Rejected>, StoreError> {
    let Some(head) = t.conversation(conv)? else {
        return Ok(Err(Rejected::not_found("no such conversation")));
    };
    let Some(me) = t.active_member(conv, ctx.actor)? else {
        return Ok(Err(Rejected::denied("not a member of the conversation")));
    };
    Ok(Ok((head, me)))
}

pub(super) fn send(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::SendMessage,
) -> Result<Outcome, StoreError> {
    if c.client_msg_id.is_empty() || c.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
        return Ok(Err(Rejected::invalid(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_BYTES} bytes"
        ))));
    }
    if let Err(r) = validate::content(c.content.as_ref()) {
        return Ok(Err(r));
    }
    let conv = c.conversation_id.as_str();
    let (mut head, mut me) = match member_head(t, ctx, conv)? {
        Ok(found) => found,
        Err(r) => return Ok(Err(r)),
    };
    let sent_key = keys::triple(conv, ctx.actor, &c.client_msg_id);
    if let Some(earlier) = t.sent.get::<pb::SentRecord>(&sent_key)? {
        // A retry: the original seq, and nothing stored.
        return Ok(Ok(Applied {
            reply: pb::ChatReply {
                seq: earlier.seq,
                duplicate: true,
                conversation_id: conv.to_owned(),
                timestamp_ms: earlier.timestamp_ms,
                ..Default::default()
            },
            event: None,
        }));
    }
    if c.reply_to != 0 && t.message(conv, c.reply_to)?.is_none() {
        return Ok(Err(Rejected::not_found(
            "the message replied to does not exist",
        )));
    }
    let message = pb::Message {
        conversation_id: conv.to_owned(),
        seq: head.last_seq + 1,
        sender: ctx.actor.to_owned(),
        sender_device: ctx.device.to_owned(),
        client_msg_id: c.client_msg_id.clone(),
        sent_ms: ctx.now_ms,
        content: c.content.clone(),
        reply_to: c.reply_to,
        ..Default::default()
    };
    // The message row is the send's only copy: its event is built from it
    // when events are read (`query::events`), one row fewer per send.
    let seq = message.seq;
    let record = pb::MessageRecord {
        message: Some(message),
        edit_seqs: Vec::new(),
        index: ctx.index,
        original_content: None,
    };
    t.put_message(conv, seq, &record)?;
    let event = next_event(
        ctx,
        conv,
        &mut head,
        Kind::MessageSent(record.message.unwrap_or_default()),
    );
    t.sent.put(
        &sent_key,
        &pb::SentRecord {
            seq: event.seq,
            timestamp_ms: ctx.now_ms,
        },
    )?;
    // The push notifier's feed, in log order; the cursor's advance removes it.
    t.push_queue.put(
        &ctx.index.to_be_bytes(),
        &pb::PushQueueEntry {
            conversation_id: conv.to_owned(),
            seq: event.seq,
        },
    )?;
    head.last_message_seq = event.seq;
    head.last_activity_ms = ctx.now_ms;
    t.put_conversation(conv, &head)?;
    // The sender has seen everything up to its own message.
    me.delivered_up_to = me.delivered_up_to.max(event.seq);
    me.read_up_to = me.read_up_to.max(event.seq);
    t.update_member(conv, ctx.actor, &me)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}

/// The message `seq` of `conv`, if it exists and is not deleted.
fn live_message(
    t: &Tables<'_>,
    conv: &str,
    seq: u64,
) -> Result<Result<pb::MessageRecord, Rejected>, StoreError> {
    match t.message(conv, seq)? {
        None => Ok(Err(Rejected::not_found("no such message"))),
        Some(r) if r.message.as_ref().is_none_or(|m| m.deleted) => {
            Ok(Err(Rejected::precondition("the message was deleted")))
        }
        Some(r) => Ok(Ok(r)),
    }
}

/// The conversation's head and message `seq` of it, for a change to that
/// message: the actor must be a member now, the message must exist and not
/// be deleted.
fn target(
    t: &Tables<'_>,
    ctx: &Ctx<'_>,
    conv: &str,
    seq: u64,
) -> Result<Result<(pb::ConversationRecord, pb::MessageRecord), Rejected>, StoreError> {
    let head = match member_head(t, ctx, conv)? {
        Ok((head, _)) => head,
        Err(r) => return Ok(Err(r)),
    };
    Ok(live_message(t, conv, seq)?.map(|record| (head, record)))
}

pub(super) fn edit(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::EditMessage,
) -> Result<Outcome, StoreError> {
    if let Err(r) = validate::content(c.content.as_ref()) {
        return Ok(Err(r));
    }
    let conv = c.conversation_id.as_str();
    let (mut head, mut record) = match target(t, ctx, conv, c.seq)? {
        Ok(found) => found,
        Err(r) => return Ok(Err(r)),
    };
    let Some(message) = record.message.as_mut() else {
        return Ok(Err(Rejected::not_found("no such message")));
    };
    if message.sender != ctx.actor {
        return Ok(Err(Rejected::denied("only the sender edits a message")));
    }
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::MessageEdited(pb::MessageEdited {
            target: c.seq,
            content: c.content.clone(),
        }),
    )?;
    if record.edit_seqs.is_empty() {
        // The send's event shows the content as sent.
        record.original_content = message.content.take();
    }
    message.content = c.content.clone();
    message.edited_ms = ctx.now_ms;
    record.edit_seqs.push(event.seq);
    t.put_message(conv, c.seq, &record)?;
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}

pub(super) fn delete(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::DeleteMessage,
) -> Result<Outcome, StoreError> {
    let conv = c.conversation_id.as_str();
    let (mut head, mut record) = match target(t, ctx, conv, c.seq)? {
        Ok(found) => found,
        Err(r) => return Ok(Err(r)),
    };
    let Some(message) = record.message.as_mut() else {
        return Ok(Err(Rejected::not_found("no such message")));
    };
    if message.sender != ctx.actor {
        let admin = head.kind == ConversationKind::Group as i32
            && t.active_member(conv, ctx.actor)?
                .is_some_and(|m| m.role == Role::Admin as i32);
        if !admin {
            return Ok(Err(Rejected::denied(
                "only the sender or a group admin deletes a message",
            )));
        }
    }
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::MessageDeleted(pb::MessageDeleted { target: c.seq }),
    )?;
    // Delete for everyone: the body leaves the projections — the message,
    // every edit's event and, in a store written before sends kept no event
    // row, the event that sent it. (The log keeps the
    // command until retention removes its segment; see docs/grpc.md.)
    message.content = None;
    message.deleted = true;
    message.reactions.clear();
    record.original_content = None;
    let edits = std::mem::take(&mut record.edit_seqs);
    t.put_message(conv, c.seq, &record)?;
    for seq in std::iter::once(c.seq).chain(edits) {
        if let Some(mut stored) = t.event(conv, seq)? {
            match stored.event.as_mut().and_then(|e| e.kind.as_mut()) {
                Some(Kind::MessageSent(m)) => {
                    m.content = None;
                    m.deleted = true;
                }
                Some(Kind::MessageEdited(e)) => e.content = None,
                _ => {}
            }
            t.put_event(conv, seq, &stored)?;
        }
    }
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}

pub(super) fn react(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::React,
) -> Result<Outcome, StoreError> {
    if c.emoji.len() > MAX_EMOJI_BYTES || c.emoji.chars().any(char::is_control) {
        return Ok(Err(Rejected::invalid(format!(
            "a reaction is at most {MAX_EMOJI_BYTES} bytes"
        ))));
    }
    let conv = c.conversation_id.as_str();
    let (mut head, mut record) = match target(t, ctx, conv, c.seq)? {
        Ok(found) => found,
        Err(r) => return Ok(Err(r)),
    };
    let Some(message) = record.message.as_mut() else {
        return Ok(Err(Rejected::not_found("no such message")));
    };
    let current = message.reactions.iter().position(|r| r.user == ctx.actor);
    let same = match current {
        Some(i) => message.reactions[i].emoji == c.emoji,
        None => c.emoji.is_empty(),
    };
    if same {
        return Ok(unchanged(conv, ctx));
    }
    if let Some(i) = current {
        message.reactions.remove(i);
    }
    if !c.emoji.is_empty() {
        // Kept sorted by user: one reaction per user, in a defined order.
        let at = message
            .reactions
            .partition_point(|r| r.user.as_str() < ctx.actor);
        message.reactions.insert(
            at,
            pb::Reaction {
                user: ctx.actor.to_owned(),
                emoji: c.emoji.clone(),
            },
        );
    }
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::ReactionSet(pb::ReactionSet {
            target: c.seq,
            emoji: c.emoji.clone(),
        }),
    )?;
    t.put_message(conv, c.seq, &record)?;
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}
