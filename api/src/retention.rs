//! History retention: every `every`, the leader of each partition proposes
//! `ExpireHistory` with the cut-off `now - keep`, and every replica removes
//! the messages and events older than it from its projections
//! (apply/retention.rs). Only leaders propose, so a cluster expires each
//! partition once per period whichever node is asked; a leader change at
//! worst expires one period later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use missive_proto::v1 as pb;
use missive_proto::v1::chat_command::Op;

use crate::auth::Caller;
use crate::chat::Chat;

/// How often a leader proposes expiry when history retention is on.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// The actor expiry commands are attributed to.
fn retention() -> Caller {
    Caller {
        user: "missive.retention".to_owned(),
        device: "node".to_owned(),
    }
}

/// Starts the expiry loop: history older than `keep` leaves the
/// projections, checked every `every`.
pub fn spawn(chat: &Chat, keep: Duration, every: Duration) {
    let me = chat.clone();
    chat.spawn_background(async move {
        let chat = me;
        loop {
            tokio::time::sleep(every).await;
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let before_ms = now_ms.saturating_sub(keep.as_millis() as u64);
            let node = chat.node();
            for p in 0..node.partitions() {
                let leads = node
                    .metrics(p)
                    .is_ok_and(|m| m.current_leader == Some(node.id()));
                if !leads {
                    continue;
                }
                let op = Op::ExpireHistory(pb::ExpireHistory { before_ms });
                if let Err(e) = chat.propose_to(p, &retention(), op).await {
                    tracing::warn!(partition = p, error = %e, "history expiry");
                }
            }
        }
    });
}
