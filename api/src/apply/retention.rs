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

use missive_proto::v1 as pb;
use prost::Message;
use redb::ReadableTable;

use super::tables::Tables;
use super::{Ctx, Outcome, unchanged};
use crate::store::{self, StoreError, keys};

type T<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

pub(super) fn expire(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    c: &pb::ExpireHistory,
) -> Result<Outcome, StoreError> {
    let convs: Vec<String> = t
        .conversations
        .iter()?
        .map(|r| r.map(|(k, _)| String::from_utf8_lossy(k.value()).into_owned()))
        .collect::<Result<_, _>>()?;
    let mut floor = 0u64;
    for conv in &convs {
        expire_rows(
            &mut t.messages,
            conv,
            |v| {
                let m = pb::MessageRecord::decode(v).ok()?;
                Some((m.message.map_or(0, |m| m.sent_ms), 0))
            },
            c.before_ms,
        )?;
        let removed_up_to = expire_rows(
            &mut t.events,
            conv,
            |v| {
                let e = pb::StoredEvent::decode(v).ok()?;
                Some((e.event.map_or(0, |e| e.timestamp_ms), e.index))
            },
            c.before_ms,
        )?;
        floor = floor.max(removed_up_to);
    }
    let current = t
        .meta
        .get(store::HISTORY_FLOOR_KEY)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    if floor > current {
        t.meta
            .insert(store::HISTORY_FLOOR_KEY, floor.to_be_bytes().as_slice())?;
    }
    Ok(unchanged("", ctx))
}

/// Removes `conv`'s oldest rows of `table` while `stamp` says they were made
/// before `before_ms`; returns the highest log index among them (0 if none
/// or not known). A row that does not decode stops the walk: it is left for
/// the tools that report damage rather than removed blindly.
fn expire_rows(
    table: &mut T<'_>,
    conv: &str,
    stamp: impl Fn(&[u8]) -> Option<(u64, u64)>,
    before_ms: u64,
) -> Result<u64, StoreError> {
    let start = keys::seq(conv, 0);
    let end = keys::prefix_end(&keys::prefix(conv));
    let mut doomed = Vec::new();
    let mut highest = 0;
    for row in table.range(start.as_slice()..end.as_slice())? {
        let (k, v) = row?;
        match stamp(v.value()) {
            Some((ms, index)) if ms < before_ms => {
                doomed.push(k.value().to_vec());
                highest = highest.max(index);
            }
            _ => break,
        }
    }
    for k in doomed {
        table.remove(k.as_slice())?;
    }
    Ok(highest)
}
