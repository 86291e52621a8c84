//! History retention: with `history_retention` set, the partitions' leaders
//! expire messages and conversation events older than it from the
//! projections; newer history stays, the conversation stays, and a
//! subscription resuming from a token before the removed events is told to
//! resync instead of silently missing them.

use std::time::Duration;

use crate::support::*;
use missive_api::ChatOptions;
use missive_proto::v1 as pb;

/// How long history is kept in this test: long enough that the newer
/// message is certain to be checked before it expires too.
const KEEP: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_history_leaves_the_projections_and_old_tokens_resync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ChatOptions {
        history_retention: Some(KEEP),
        history_expire_every: Duration::from_millis(100),
        ..Default::default()
    };
    let node = TestNode::start_with(1, dir.path(), 2, options).await;
    initialize(std::slice::from_ref(&node)).await;
    let mut alice = node.client("alice", "phone");
    let mut bob = node.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;

    let mut sub = Sub::open(&mut bob, "").await;
    let (_, before_m1) = sub.until_caught_up().await;
    let old = send(&mut alice, &conv, "m1", "soon gone").await;
    let seen_m1 = sub
        .next_where(|e| matches!(e.kind, Some(pb::chat_event::Kind::MessageSent(_))))
        .await;
    drop(sub);

    // Once m1 is older than KEEP, a newer message arrives; the next expiry
    // removes m1 and keeps m2.
    tokio::time::sleep(KEEP + Duration::from_millis(200)).await;
    let new = send(&mut alice, &conv, "m2", "still here").await;
    let sent_m2 = std::time::Instant::now();
    let left = eventually("m1 to expire", || {
        let mut bob = bob.clone();
        let conv = conv.clone();
        async move {
            let h = history(&mut bob, &conv).await;
            (!h.iter().any(|m| m.seq == old.seq)).then_some(h)
        }
    })
    .await;
    assert!(
        sent_m2.elapsed() < KEEP,
        "the check came too late to tell whether m2 was kept"
    );
    assert_eq!(
        left.iter()
            .map(|m| (m.seq, body(m).to_owned()))
            .collect::<Vec<_>>(),
        vec![(new.seq, "still here".to_owned())]
    );
    // The conversation itself stays, and new messages continue its seqs.
    assert_eq!(conversation(&mut bob, &conv).await.conversation_id, conv);
    let third = send(&mut alice, &conv, "m3", "after expiry").await;
    assert!(third.seq > new.seq);
    // A retry of the expired send is still recognised, not stored again.
    let retry = send(&mut alice, &conv, "m1", "soon gone").await;
    assert!(retry.duplicate);
    assert_eq!(retry.seq, old.seq);

    // Resuming from before m1 would skip m1, which retention removed: the
    // subscription says to resync.
    let mut again = Sub::open(&mut bob, &before_m1).await;
    match again.next().await.kind {
        Some(pb::subscribe_response::Kind::Resync(r)) => {
            assert!(r.reason.contains("retention"), "{}", r.reason)
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    // Resuming from m1's own token misses nothing that was removed (all of
    // it is at or before m1): it replays what came after, m2 first.
    let mut resumed = Sub::open(&mut bob, &seen_m1.token).await;
    let next = resumed
        .next_where(|e| matches!(e.kind, Some(pb::chat_event::Kind::MessageSent(_))))
        .await;
    assert_eq!(next.event.seq, new.seq);
}
