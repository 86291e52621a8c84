//! Ending presence sessions nobody holds any more.
//!
//! A user is online while some node holds a session of it (a live
//! subscription there); sessions are projection state, one row per (user,
//! node). Two things end sessions whose node cannot:
//!
//! - **A crashed node.** The leader of each partition ends the sessions of
//!   nodes that have not acknowledged its heartbeats for [`PRESENCE_TTL`]
//!   (openraft's heartbeat metrics), so a crashed node's users go offline
//!   within one TTL plus one sweep — under two TTLs.
//! - **A restarted node.** Every node ends its own sessions for users with
//!   no live subscription in its hub: the ones its previous process held.
//!
//! Both propose ordinary `SetPresence{online: false}` commands, which apply
//! idempotently; a user who subscribes again meanwhile opens a new session.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;
use openraft::Instant as _;
use redb::ReadableTable;

use crate::auth::Caller;
use crate::chat::Chat;
use crate::error::Error;
use crate::store::{self, StoreError, keys};

/// How long a node may miss the leader's heartbeats before its sessions end.
pub const PRESENCE_TTL: Duration = Duration::from_secs(10);

/// How often sessions are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Starts the sweeper: every `every`, with `ttl` for missed heartbeats.
pub fn spawn(chat: &Chat, ttl: Duration, every: Duration) {
    let me = chat.clone();
    chat.spawn_background(async move {
        let chat = me;
        let mut sweeper = Sweeper::new(ttl);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = sweeper.sweep(&chat).await {
                tracing::warn!(error = %e, "presence sweep");
            }
        }
    });
}

/// What the sweeps remember between runs.
#[derive(Debug)]
pub struct Sweeper {
    /// How long a node may miss the leader's heartbeats.
    ttl: Duration,
    /// Since when each (partition, node) has had no acknowledged heartbeat
    /// on record (a leader that just took over has none yet for anyone):
    /// only after `ttl` of that is the node taken for dead. Bounded by
    /// partitions × members.
    unacked_since: HashMap<(u32, u64), Instant>,
}

/// Every session of every partition: (user, node).
fn sessions(chat: &Chat, p: u32) -> Result<Vec<(String, u64)>, Error> {
    let txn = chat.stores()[p as usize].read()?;
    let t = txn
        .open_table(store::PRESENCE_SESSIONS)
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for row in t.iter().map_err(StoreError::from)? {
        let (k, _) = row.map_err(StoreError::from)?;
        let key = k.value();
        let node = std::str::from_utf8(keys::last_part(key))
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let user_len = key.len() - keys::last_part(key).len() - 1;
        out.push((String::from_utf8_lossy(&key[..user_len]).into_owned(), node));
    }
    Ok(out)
}

impl Sweeper {
    pub fn new(ttl: Duration) -> Self {
        Sweeper {
            ttl,
            unacked_since: HashMap::new(),
        }
    }

    /// Ends the sessions of dead nodes (on partitions this node leads) and
    /// this node's own stale ones.
    pub async fn sweep(&mut self, chat: &Chat) -> Result<(), Error> {
        let me = chat.node().id();
        let ttl = self.ttl;
        for p in 0..chat.node().partitions() {
            let all = chat.read(move |chat| sessions(chat, p)).await?;
            if all.is_empty() {
                continue;
            }
            let metrics = chat.node().metrics(p).map_err(Error::from_raft)?;
            // Only the leader knows when it last heard from each node.
            let heartbeats = (metrics.current_leader == Some(me))
                .then_some(metrics.heartbeat)
                .flatten();
            for (user, node) in all {
                let stale = if node == me {
                    !chat.hub().has_user(&user)
                } else {
                    match heartbeats.as_ref().map(|h| h.get(&node)) {
                        // Not the leader: its leader sweeps.
                        None => false,
                        Some(Some(Some(acked))) => {
                            self.unacked_since.remove(&(p, node));
                            acked.elapsed() > ttl
                        }
                        // Not heard from since this leader took over, or not
                        // a member any more.
                        Some(Some(None) | None) => {
                            self.unacked_since
                                .entry((p, node))
                                .or_insert_with(Instant::now)
                                .elapsed()
                                > ttl
                        }
                    }
                };
                if stale {
                    let caller = Caller {
                        user: user.clone(),
                        device: "node".to_owned(),
                    };
                    let op = Op::Presence(pb::SetPresence {
                        online: false,
                        node,
                    });
                    chat.propose_to(p, &caller, op).await?;
                }
            }
        }
        Ok(())
    }
}
