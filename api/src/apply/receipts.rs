//! Receipts as watermarks: per (conversation, user) `delivered_up_to` and
//! `read_up_to`, forward-only, with delivered ≥ read. One receipt covers any
//! number of messages.

use missive_proto::v1 as pb;
use missive_proto::v1::ReceiptKind;
use missive_proto::v1::chat_event::Kind;

use super::tables::Tables;
use super::{Applied, Ctx, Outcome, append_event, event_reply, unchanged};
use crate::error::Rejected;
use crate::store::StoreError;

pub(super) fn mark(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::MarkReceipt,
) -> Result<Outcome, StoreError> {
    let kind = ReceiptKind::try_from(c.kind).unwrap_or(ReceiptKind::Unspecified);
    if kind == ReceiptKind::Unspecified {
        return Ok(Err(Rejected::invalid("a receipt is delivered or read")));
    }
    let conv = c.conversation_id.as_str();
    let Some(mut head) = t.conversation(conv)? else {
        return Ok(Err(Rejected::not_found("no such conversation")));
    };
    let Some(mut me) = t.active_member(conv, ctx.actor)? else {
        return Ok(Err(Rejected::denied("not a member of the conversation")));
    };
    if c.up_to > head.last_seq {
        return Ok(Err(Rejected::invalid(format!(
            "up_to {} is past the conversation's last seq {}",
            c.up_to, head.last_seq
        ))));
    }
    let (delivered, read) = match kind {
        ReceiptKind::Read => {
            let read = me.read_up_to.max(c.up_to);
            (me.delivered_up_to.max(read), read)
        }
        _ => (me.delivered_up_to.max(c.up_to), me.read_up_to),
    };
    if delivered == me.delivered_up_to && read == me.read_up_to {
        // An older or repeated receipt: watermarks never move back.
        return Ok(unchanged(conv, ctx));
    }
    let event = append_event(
        t,
        ctx,
        conv,
        &mut head,
        Kind::Receipt(pb::ReceiptMoved {
            user: ctx.actor.to_owned(),
            delivered_up_to: delivered,
            read_up_to: read,
        }),
    )?;
    me.delivered_up_to = delivered;
    me.read_up_to = read;
    t.update_member(conv, ctx.actor, &me)?;
    t.put_conversation(conv, &head)?;
    Ok(Ok(Applied {
        reply: event_reply(&event),
        event: Some(event),
    }))
}
