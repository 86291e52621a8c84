//! The chat state machine: applies `missive.v1.ChatCommand`s to the
//! projections of one partition.
//!
//! # Invariants
//!
//! - **Deterministic.** A command's effect depends only on the projections
//!   and the entry (actor, ids and the leader's timestamp are in it). A
//!   refusal ([`Rejected`]) is deterministic too, and changes nothing:
//!   every handler checks everything before it writes.
//! - **Atomic with its position.** One write transaction holds the changes
//!   and the applied state after them: the batches of one group commit
//!   (`apply` leaves the transaction open, `flush` commits it; see
//!   missive-raft's `sm_store`).
//! - **Gapless seqs.** Each event of a conversation takes the conversation's
//!   next seq, from 1; a refused command takes none.
//! - **O(1) writes per message**, whatever the group's size: a send writes
//!   the message (which is also its event: see `query::events`), the
//!   conversation head, the sender's watermarks, its idempotency row and the
//!   push notifier's queue. Inboxes are built on read.
//!
//! After committing, the group's events go to the node's [`Hub`] for live
//! subscribers.
//!
//! # Layout
//!
//! - `tables`: the tables of one transaction, typed.
//! - `conversations`: create, members, roles.
//! - `messages`: send, edit, delete, react.
//! - `receipts`: delivered and read watermarks.
//! - `users`: presence, the key directory, push targets.
//! - `push`: the push notifier's queue, cursor and dead letters.

mod conversations;
mod messages;
mod push;
mod receipts;
mod retention;
mod tables;
mod users;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use missive_raft::{AppliedState, BoxError, CommandEntry, Reply, SnapshotSource, StateMachine};
use prost::Message;
use redb::{ReadTransaction, WriteTransaction};

use self::tables::Tables;
use crate::error::Rejected;
use crate::hub::{Hub, Published};
use crate::store::{self, Store, StoreError};
use crate::validate;

/// What one command is applied with.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub actor: &'a str,
    pub device: &'a str,
    /// The leader's timestamp of the entry.
    pub now_ms: u64,
    /// The entry's log index.
    pub index: u64,
}

/// What applying a command did.
#[derive(Debug, Default)]
pub struct Applied {
    pub reply: pb::ChatReply,
    /// The event it produced, if any: stored (conversation events) and
    /// published.
    pub event: Option<pb::ChatEvent>,
}

type Outcome = Result<Applied, Rejected>;

/// One partition's chat state machine.
#[derive(Debug)]
pub struct ChatStateMachine {
    /// Where its projection store lives.
    path: PathBuf,
    /// The store, opened on first use so that an open failure reaches
    /// missive-raft as a state machine error when the partition starts.
    store: OnceLock<Arc<Store>>,
    /// This partition's number, stamped on published events.
    partition: u32,
    /// Where committed events go for live subscribers; none for an offline
    /// rebuild, which has none and so keeps no events.
    hub: Option<Arc<Hub>>,
    /// What `apply` wrote and `flush` commits.
    pending: Option<Pending>,
}

/// An open write transaction: the batches applied since the last flush.
struct Pending {
    txn: WriteTransaction,
    /// Log entries it applied.
    entries: u64,
    /// Their events, published once committed.
    published: Vec<Published>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("entries", &self.entries)
            .field("published", &self.published.len())
            .finish_non_exhaustive()
    }
}

impl ChatStateMachine {
    /// The state machine of `partition`, with its store at `path`.
    pub fn new(partition: u32, path: PathBuf, hub: Arc<Hub>) -> Self {
        Self::with_hub(partition, path, Some(hub))
    }

    /// The state machine of `partition` with its store at `path`, for a
    /// rebuild: no live subscriber sees what it applies.
    pub fn offline(partition: u32, path: PathBuf) -> Self {
        Self::with_hub(partition, path, None)
    }

    fn with_hub(partition: u32, path: PathBuf, hub: Option<Arc<Hub>>) -> Self {
        ChatStateMachine {
            path,
            store: OnceLock::new(),
            partition,
            hub,
            pending: None,
        }
    }

    /// The store, opening it if needed.
    pub fn store(&self) -> Result<Arc<Store>, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let s = Arc::new(Store::open_partition(&self.path, self.partition)?);
        // Only missive-raft's one apply thread calls this, so nobody else
        // can have set it meanwhile.
        Ok(self.store.get_or_init(|| s).clone())
    }
}

/// Applies one command.
fn apply_command(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    cmd: &pb::ChatCommand,
) -> Result<Outcome, StoreError> {
    if let Err(r) =
        validate::id("actor", ctx.actor).and_then(|()| validate::id("device", ctx.device))
    {
        return Ok(Err(r));
    }
    let Some(op) = &cmd.op else {
        return Ok(Err(Rejected::invalid("the command has no operation")));
    };
    match op {
        Op::CreateConversation(c) => conversations::create(t, ctx, c),
        Op::ChangeMembers(c) => conversations::change_members(t, ctx, c),
        Op::SetRole(c) => conversations::set_role(t, ctx, c),
        Op::Send(c) => messages::send(t, ctx, c),
        Op::Edit(c) => messages::edit(t, ctx, c),
        Op::Delete(c) => messages::delete(t, ctx, c),
        Op::React(c) => messages::react(t, ctx, c),
        Op::Receipt(c) => receipts::mark(t, ctx, c),
        Op::Presence(c) => users::presence(t, ctx, c),
        Op::PublishKeys(c) => users::publish_keys(t, ctx, c),
        Op::ClaimKeys(c) => users::claim_keys(t, ctx, c),
        Op::SetPushTarget(c) => users::set_push_target(t, ctx, c),
        Op::AdvancePushCursor(c) => push::advance(t, ctx, c),
        Op::DeadLetterPush(c) => push::dead_letter(t, ctx, c),
        Op::ResolveDeadLetter(c) => push::resolve(t, ctx, c),
        Op::ExpireHistory(c) => retention::expire(t, ctx, c),
    }
}

/// The next event of conversation `conv` (whose head is `head`, updated
/// here; the caller writes it), not stored.
fn next_event(
    ctx: &Ctx<'_>,
    conv: &str,
    head: &mut pb::ConversationRecord,
    kind: pb::chat_event::Kind,
) -> pb::ChatEvent {
    head.last_seq += 1;
    pb::ChatEvent {
        conversation_id: conv.to_owned(),
        seq: head.last_seq,
        timestamp_ms: ctx.now_ms,
        actor: ctx.actor.to_owned(),
        kind: Some(kind),
    }
}

/// Stores `kind` as the next event of conversation `conv` (whose head is
/// `head`, updated here; the caller writes it) and returns the event.
fn append_event(
    t: &mut Tables<'_>,
    ctx: &Ctx<'_>,
    conv: &str,
    head: &mut pb::ConversationRecord,
    kind: pb::chat_event::Kind,
) -> Result<pb::ChatEvent, StoreError> {
    let event = next_event(ctx, conv, head, kind);
    t.put_event(
        conv,
        event.seq,
        &pb::StoredEvent {
            index: ctx.index,
            event: Some(event.clone()),
        },
    )?;
    Ok(event)
}

/// The reply for a stored conversation event.
fn event_reply(event: &pb::ChatEvent) -> pb::ChatReply {
    pb::ChatReply {
        seq: event.seq,
        conversation_id: event.conversation_id.clone(),
        timestamp_ms: event.timestamp_ms,
        ..Default::default()
    }
}

/// A success that changed nothing and produced no event.
fn unchanged(conv: &str, ctx: &Ctx<'_>) -> Outcome {
    Ok(Applied {
        reply: pb::ChatReply {
            conversation_id: conv.to_owned(),
            timestamp_ms: ctx.now_ms,
            ..Default::default()
        },
        event: None,
    })
}

fn rejected_reply(r: &Rejected) -> pb::ChatReply {
    pb::ChatReply {
        rejection: Some(r.to_pb()),
        ..Default::default()
    }
}

impl StateMachine for ChatStateMachine {
    type Snapshot = ProjectionView;

    fn applied_state(&self) -> Result<AppliedState, BoxError> {
        Ok(match self.store()?.applied_bytes()? {
            Some(b) => AppliedState::decode(&b)?,
            None => AppliedState::default(),
        })
    }

    fn apply(
        &mut self,
        commands: &[CommandEntry<'_>],
        after: &AppliedState,
    ) -> Result<Vec<Reply>, BoxError> {
        let mut pending = match self.pending.take() {
            Some(p) => p,
            None => Pending {
                txn: self.store()?.write()?,
                entries: 0,
                published: Vec::new(),
            },
        };
        let mut replies = Vec::with_capacity(commands.len());
        // Events are kept only for a hub to publish.
        let keep_events = self.hub.is_some();
        Tables::within(&pending.txn, commands.len(), |t| {
            for c in commands {
                let outcome = match pb::ChatCommand::decode(c.command.body.as_slice()) {
                    Ok(cmd) => {
                        let ctx = Ctx {
                            actor: &cmd.actor,
                            device: &cmd.device,
                            now_ms: c.timestamp_ms,
                            index: c.log_id.index,
                        };
                        apply_command(t, &ctx, &cmd)?
                    }
                    Err(e) => Err(Rejected::invalid(format!(
                        "the command does not decode: {e}"
                    ))),
                };
                let reply = match outcome {
                    Ok(applied) => {
                        if keep_events && let Some(event) = applied.event {
                            pending.published.push(Published {
                                index: c.log_id.index,
                                event,
                            });
                        }
                        applied.reply
                    }
                    Err(r) => rejected_reply(&r),
                };
                replies.push(Reply {
                    body: reply.encode_to_vec(),
                });
            }
            t.meta.insert(store::APPLIED_KEY, &after.encode())
        })?;
        pending.entries += commands.len() as u64;
        self.pending = Some(pending);
        Ok(replies)
    }

    fn flush(&mut self) -> Result<(), BoxError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        self.store()?.commit(pending.txn, pending.entries)?;
        if let Some(hub) = &self.hub
            && !pending.published.is_empty()
        {
            hub.publish(self.partition, pending.published);
        }
        Ok(())
    }

    fn begin_snapshot(&mut self) -> Result<ProjectionView, BoxError> {
        // missive-raft flushes before it takes a view; this keeps the view
        // whole for any other caller.
        self.flush()?;
        Ok(ProjectionView(self.store()?.read()?))
    }

    fn install_snapshot(
        &mut self,
        state: &AppliedState,
        data: &mut dyn Read,
    ) -> Result<(), BoxError> {
        // Whatever is pending is replaced by the snapshot anyway; committing
        // it first keeps redb's one writer free for the install.
        self.flush()?;
        self.store()?.install(data, &state.encode())?;
        Ok(())
    }
}

/// A read transaction of a partition's projections, written out as its
/// snapshot.
pub struct ProjectionView(ReadTransaction);

impl std::fmt::Debug for ProjectionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectionView")
    }
}

impl SnapshotSource for ProjectionView {
    fn write_to(self, out: &mut dyn Write) -> Result<(), BoxError> {
        Store::write_snapshot(&self.0, out)?;
        Ok(())
    }
}
