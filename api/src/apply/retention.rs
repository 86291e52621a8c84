//! Retention of history: `ExpireHistory` removes every message and
//! conversation event stamped before its cut-off from the projections.
//!
//! The cut-off is in the command (the proposing leader computed it from its
//! clock and the configured retention), so every replica and every replay
//! removes exactly the same rows. Within a conversation seqs grow with time,
//! so each conversation is read from its oldest row and stops at the first
//! row inside the retention: a run costs the rows it removes plus one read
//! per conversation. The highest log index of a removed event becomes the
//! partition's history floor: a subscription resuming from before it would
//! miss what was removed, so it is told to resync (service/subscribe.rs).
//!
//! What stays: conversations, members and roles, receipts watermarks, the
//! idempotency records of sends (a retry of an expired message is still
//! recognised), and the log itself until log retention deletes its
//! segments (docs/backup-and-audit.md).

use std::ops::{Bound, ControlFlow};

use missive_proto::v1 as pb;
use prost::Message;

use super::tables::{Tab, Tables};
use super::{Ctx, Outcome, unchanged};
use crate::store::{self, StoreError, keys};

pub(super) fn expire(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::ExpireHistory,
) -> Result<Outcome, StoreError> {
    let convs = t.conversation_ids()?;
    let mut floor = 0u64;
    for conv in &convs {
        // A send's event is its message row (see `query::events`), so the
        // floor counts the messages' indexes as well as the events'.
        let sends_up_to = expire_rows(
            &mut t.messages,
            conv,
            |v| {
                let m = pb::MessageRecord::decode(v).ok()?;
                Some((m.message.map_or(0, |m| m.sent_ms), m.index))
            },
            c.before_ms,
        )?;
        let events_up_to = expire_rows(
            &mut t.events,
            conv,
            |v| {
                let e = pb::StoredEvent::decode(v).ok()?;
                Some((e.event.map_or(0, |e| e.timestamp_ms), e.index))
            },
            c.before_ms,
        )?;
        floor = floor.max(sends_up_to).max(events_up_to);
    }
    let current = t.meta.get_u64(store::HISTORY_FLOOR_KEY)?.unwrap_or(0);
    if floor > current {
        t.meta
            .insert(store::HISTORY_FLOOR_KEY, &floor.to_be_bytes())?;
    }
    Ok(unchanged("", ctx))
}

/// Removes `conv`'s oldest rows of `table` while `stamp` says they were made
/// before `before_ms`; returns the highest log index among them (0 if none
/// or not known). A row that does not decode stops the walk: it is left for
/// the tools that report damage rather than removed blindly.
fn expire_rows(
    table: &mut Tab<'_>,
    conv: &str,
    stamp: impl Fn(&[u8]) -> Option<(u64, u64)>,
    before_ms: u64,
) -> Result<u64, StoreError> {
    // The rows removed are the conversation's first ones, up to `last`
    // (empty if none: no key is).
    let prefix = keys::prefix(conv);
    let mut last = Vec::new();
    let mut highest = 0;
    table.scan_prefix(&prefix, |k, v| {
        Ok(match stamp(v) {
            Some((ms, index)) if ms < before_ms => {
                last.clear();
                last.extend_from_slice(k);
                highest = highest.max(index);
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(()),
        })
    })?;
    if !last.is_empty() {
        table.remove_range(Bound::Included(&prefix), Bound::Included(&last))?;
    }
    Ok(highest)
}
