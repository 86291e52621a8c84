//! The push notifier's state: its queue (written by sends), its cursor and
//! its dead letters. Only the node itself proposes these commands (the
//! notifier and the operators' ChatAdmin calls); no client call builds them.

use std::ops::Bound;

use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;

use super::tables::Tables;
use super::{Applied, Ctx, Outcome, unchanged};
use crate::error::Rejected;
use crate::store::{self, StoreError, keys};

pub(super) fn advance(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::AdvancePushCursor,
) -> Result<Outcome, StoreError> {
    let current = t.meta.get_u64(store::PUSH_CURSOR_KEY)?.unwrap_or(0);
    if c.up_to <= current {
        return Ok(unchanged("", ctx));
    }
    // Settled: leave the queue, up to the new cursor.
    t.push_queue.remove_range(
        Bound::Unbounded,
        Bound::Included(c.up_to.to_be_bytes().as_slice()),
    )?;
    t.meta
        .insert(store::PUSH_CURSOR_KEY, &c.up_to.to_be_bytes())?;
    Ok(unchanged("", ctx))
}

pub(super) fn dead_letter(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::DeadLetterPush,
) -> Result<Outcome, StoreError> {
    let Some(letter) = &c.letter else {
        return Ok(Err(Rejected::invalid("no dead letter")));
    };
    t.dead_letters.put(
        &keys::dead_letter(letter.index, &letter.user, &letter.device),
        letter,
    )?;
    Ok(Ok(Applied {
        reply: pb::ChatReply {
            timestamp_ms: ctx.now_ms,
            ..Default::default()
        },
        // Logged and published with no conversation: no subscriber gets it;
        // operators read dead letters through ChatAdmin.
        event: Some(pb::ChatEvent {
            conversation_id: String::new(),
            seq: 0,
            timestamp_ms: ctx.now_ms,
            actor: ctx.actor.to_owned(),
            kind: Some(Kind::PushDeadLettered(letter.clone())),
        }),
    }))
}

pub(super) fn resolve(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::ResolveDeadLetter,
) -> Result<Outcome, StoreError> {
    t.dead_letters
        .remove(keys::dead_letter(c.index, &c.user, &c.device).as_slice())?;
    Ok(unchanged("", ctx))
}
