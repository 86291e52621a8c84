//! The push notifier: a consumer of each partition's log that notifies
//! members with no online device of new messages through their devices'
//! webhooks.
//!
//! - **Durable cursor.** Sends write a `PushQueueEntry` under their log index;
//!   the notifier of a partition (the one on its leader) reads the queue in
//!   order, settles each message, then proposes `AdvancePushCursor`, whose
//!   apply drops the settled entries. The cursor is projection state, so
//!   after a failover the new leader resumes at it: notifications are
//!   at-least-once.
//! - **Retries.** Each webhook call is tried up to `max_attempts` times with
//!   exponential backoff; then a `DeadLetterPush` command logs it as a dead
//!   letter, which `ChatAdmin` lists and re-drives.
//! - **What is sent.** The recipient, its device and push token, the
//!   conversation, seq, sender and time — never the content, which may be
//!   end-to-end encrypted and is fetched by the app when it wakes.
//!
//! Bounds: one batch of [`BATCH`] queued messages at a time per partition,
//! at most [`CONCURRENT_CALLS`] webhook calls in flight per partition.

pub mod webhook;

use std::time::Duration;

use futures_util::StreamExt;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use redb::{ReadTransaction, ReadableTable};

use crate::auth::Caller;
use crate::chat::Chat;
use crate::error::Error;
use crate::store::{self, StoreError};
use crate::{ids, query};

/// Queued messages read at once.
pub const BATCH: usize = 64;
/// Webhook calls in flight at once, per partition.
pub const CONCURRENT_CALLS: usize = 16;

/// How the notifier retries.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Attempts per notification before it is dead-lettered.
    pub max_attempts: u32,
    /// The pause after the first failure; doubled after each next one.
    pub first_backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
    /// The deadline of one webhook call.
    pub call_timeout: Duration,
    /// How often an idle notifier (or one on a follower) looks again.
    pub poll: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(200),
        }
    }
}

/// The actor the notifier's commands are attributed to.
fn notifier() -> Caller {
    Caller {
        user: "missive.push".to_owned(),
        device: "node".to_owned(),
    }
}

/// One notification to deliver.
#[derive(Clone, Debug)]
pub struct Notification {
    pub index: u64,
    pub conversation_id: String,
    pub seq: u64,
    pub sender: String,
    pub sent_ms: u64,
    pub user: String,
    pub device: String,
    pub url: String,
    pub token: String,
}

impl Notification {
    fn body(&self) -> Vec<u8> {
        serde_json::json!({
            "user": self.user,
            "device": self.device,
            "token": self.token,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender": self.sender,
            "sent_ms": self.sent_ms,
        })
        .to_string()
        .into_bytes()
    }

    fn dead_letter(&self, attempts: u32, last_error: String, failed_ms: u64) -> pb::DeadLetter {
        pb::DeadLetter {
            index: self.index,
            conversation_id: self.conversation_id.clone(),
            seq: self.seq,
            sender: self.sender.clone(),
            user: self.user.clone(),
            device: self.device.clone(),
            url: self.url.clone(),
            attempts,
            last_error,
            failed_ms,
        }
    }

    /// The notification a dead letter was.
    pub fn from_dead_letter(d: &pb::DeadLetter, token: String) -> Self {
        Notification {
            index: d.index,
            conversation_id: d.conversation_id.clone(),
            seq: d.seq,
            sender: d.sender.clone(),
            sent_ms: 0,
            user: d.user.clone(),
            device: d.device.clone(),
            url: d.url.clone(),
            token,
        }
    }
}

/// Starts one notifier task per partition.
pub fn spawn(chat: &Chat, config: PushConfig) {
    for p in 0..chat.node().partitions() {
        chat.spawn_background(run(chat.clone(), p, config.clone()));
    }
}

async fn run(chat: Chat, p: u32, config: PushConfig) {
    loop {
        let leads = chat
            .node()
            .metrics(p)
            .is_ok_and(|m| m.current_leader == Some(chat.node().id()));
        let settled = if leads {
            match settle_batch(&chat, p, &config).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "push notifier");
                    0
                }
            }
        } else {
            0
        };
        if settled == 0 {
            tokio::time::sleep(config.poll).await;
        }
    }
}

/// Settles up to [`BATCH`] queued messages of partition `p`; returns how many.
async fn settle_batch(chat: &Chat, p: u32, config: &PushConfig) -> Result<usize, Error> {
    let store = chat.stores()[p as usize].clone();
    let queued = chat
        .read(move |_| {
            let txn = store.read()?;
            let t = txn
                .open_table(store::PUSH_QUEUE)
                .map_err(StoreError::from)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::from)?.take(BATCH) {
                let (k, v) = row.map_err(StoreError::from)?;
                let index = k.value().try_into().map(u64::from_be_bytes).unwrap_or(0);
                let e: pb::PushQueueEntry = store::decode("push_queue", k.value(), v.value())?;
                out.push((index, e));
            }
            Ok(out)
        })
        .await?;
    let Some(last) = queued.last().map(|q| q.0) else {
        return Ok(0);
    };
    let count = queued.len();
    let notifications = chat
        .read(move |chat| {
            let views = Views::open(chat)?;
            let mut out = Vec::new();
            for (index, entry) in &queued {
                out.extend(recipients(&views, *index, entry)?);
            }
            Ok(out)
        })
        .await?;
    let results: Vec<(Notification, Result<(), Failed>)> =
        futures_util::stream::iter(notifications)
            .map(|n| async move {
                let r = deliver(&n, config).await;
                (n, r)
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .collect()
            .await;
    for (n, r) in results {
        if let Err(f) = r {
            tracing::warn!(user = %n.user, device = %n.device, error = %f.error, "push dead-lettered");
            let letter = n.dead_letter(f.attempts, f.error, now_ms());
            chat.propose_to(
                p,
                &notifier(),
                Op::DeadLetterPush(pb::DeadLetterPush {
                    letter: Some(letter),
                }),
            )
            .await?;
        }
    }
    chat.propose_to(
        p,
        &notifier(),
        Op::AdvancePushCursor(pb::AdvancePushCursor { up_to: last }),
    )
    .await?;
    Ok(count)
}

/// A consistent view of every partition, taken once per batch: the
/// notifier's reads of presence and push targets go through it instead of a
/// transaction per member.
struct Views {
    txns: Vec<ReadTransaction>,
    partitions: u32,
    /// Push targets in the whole cluster.
    targets: u64,
}

impl Views {
    fn open(chat: &Chat) -> Result<Views, Error> {
        let txns = chat
            .stores()
            .iter()
            .map(|s| s.read())
            .collect::<Result<Vec<_>, _>>()?;
        let mut targets = 0;
        for t in &txns {
            targets += query::push_target_count(t)?;
        }
        Ok(Views {
            partitions: txns.len() as u32,
            txns,
            targets,
        })
    }

    fn of(&self, key: &str) -> &ReadTransaction {
        &self.txns[ids::partition(key, self.partitions) as usize]
    }
}

/// Who must be notified of the message `entry`: every member but the
/// sender that has no online device, once per device with a push target.
///
/// The cost follows the smaller side: with fewer push targets in the
/// cluster than members in the conversation, the targets are checked for
/// membership; otherwise the members are checked for targets. A message to
/// a group of 10,000 costs nothing here while nobody has a push target.
fn recipients(
    views: &Views,
    index: u64,
    entry: &pb::PushQueueEntry,
) -> Result<Vec<Notification>, Error> {
    // Nobody to notify anywhere: not even the message is read.
    if views.targets == 0 {
        return Ok(Vec::new());
    }
    let conv = &entry.conversation_id;
    let txn = views.of(conv);
    let Some(message) = query::message(txn, conv, entry.seq)? else {
        return Ok(Vec::new());
    };
    if message.deleted {
        return Ok(Vec::new());
    }
    let members = query::conversation_record(txn, conv)?.map_or(0, |h| h.member_count as u64);
    let mut candidates: Vec<(String, String, pb::PushTargetRecord)> = Vec::new();
    if views.targets < members {
        for t in &views.txns {
            for (user, device, target) in query::all_push_targets(t)? {
                if query::member(txn, conv, &user)?.is_some_and(|m| m.left_seq == 0) {
                    candidates.push((user, device, target));
                }
            }
        }
    } else {
        for (user, _) in query::members(txn, conv)? {
            for (device, target) in query::push_targets_in(views.of(&user), &user)? {
                candidates.push((user.clone(), device, target));
            }
        }
    }
    let mut out = Vec::new();
    for (user, device, target) in candidates {
        if user == message.sender || query::presence_in(views.of(&user), &user)?.online {
            continue;
        }
        out.push(Notification {
            index,
            conversation_id: conv.clone(),
            seq: entry.seq,
            sender: message.sender.clone(),
            sent_ms: message.sent_ms,
            user,
            device,
            url: target.url,
            token: target.token,
        });
    }
    Ok(out)
}

/// A notification that failed every attempt.
#[derive(Debug)]
pub struct Failed {
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
}

/// Delivers `n` with retries.
pub async fn deliver(n: &Notification, config: &PushConfig) -> Result<(), Failed> {
    let body = n.body();
    let mut backoff = config.first_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match webhook::post(&n.url, &body, config.call_timeout).await {
            Ok(()) => {
                crate::metrics::PUSH_DELIVERED.inc();
                return Ok(());
            }
            Err(e) if attempt >= config.max_attempts => {
                crate::metrics::PUSH_DEAD_LETTERED.inc();
                return Err(Failed {
                    attempts: attempt,
                    error: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!(user = %n.user, attempt, error = %e, "push attempt failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
