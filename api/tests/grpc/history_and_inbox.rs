//! Reads over gRPC: history pages backwards (before a seq, newest first) or
//! forwards (after a seq, oldest first), at most `limit` messages, with
//! `more` telling whether anything lies beyond; the inbox lists the
//! caller's conversations by last activity with each one's last message
//! and unread count.

use std::time::Duration;

use crate::support::*;
use missive_proto::v1 as pb;
use tonic::Code;

async fn page(c: &mut Client, conv: &str, before: u64, after: u64, limit: u32) -> (Vec<u64>, bool) {
    let r = c
        .history(pb::HistoryRequest {
            conversation_id: conv.to_owned(),
            before,
            after,
            limit,
        })
        .await
        .expect("history")
        .into_inner();
    (r.messages.iter().map(|m| m.seq).collect(), r.more)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_and_forwards_and_says_when_there_is_more() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut seqs = Vec::new();
    for i in 0..7 {
        let c = if i % 2 == 0 { &mut alice } else { &mut bob };
        seqs.push(
            send(c, &conv, &format!("m{i}"), &format!("message {i}"))
                .await
                .seq,
        );
        if i == 3 {
            // Events that are not messages take seqs too; pages skip them.
            alice
                .mark_read(pb::ReceiptRequest {
                    conversation_id: conv.clone(),
                    up_to: seqs[3],
                })
                .await
                .expect("read");
        }
    }
    assert_eq!(seqs, [2, 3, 4, 5, 7, 8, 9]);

    // Backwards from the newest.
    assert_eq!(page(&mut bob, &conv, 0, 0, 3).await, (vec![9, 8, 7], true));
    assert_eq!(page(&mut bob, &conv, 7, 0, 3).await, (vec![5, 4, 3], true));
    assert_eq!(page(&mut bob, &conv, 3, 0, 3).await, (vec![2], false));
    assert_eq!(page(&mut bob, &conv, 2, 0, 3).await, (vec![], false));
    // Forwards after a seq.
    assert_eq!(page(&mut bob, &conv, 0, 2, 3).await, (vec![3, 4, 5], true));
    assert_eq!(page(&mut bob, &conv, 0, 5, 3).await, (vec![7, 8, 9], false));
    assert_eq!(page(&mut bob, &conv, 0, 9, 3).await, (vec![], false));
    // A page that ends exactly at the last message has no more.
    assert_eq!(
        page(&mut bob, &conv, 0, 0, 7).await,
        (seqs.iter().rev().copied().collect(), false)
    );
    assert!(page(&mut bob, &conv, 0, 0, 6).await.1);
    // No limit: the default page (50) holds them all.
    assert_eq!(page(&mut bob, &conv, 0, 0, 0).await.0.len(), 7);

    // Pages carry the messages themselves.
    let r = bob
        .history(pb::HistoryRequest {
            conversation_id: conv.clone(),
            before: 4,
            after: 0,
            limit: 1,
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        (r.messages[0].sender.as_str(), body(&r.messages[0])),
        ("bob", "message 1")
    );

    assert_code(
        bob.history(pb::HistoryRequest {
            conversation_id: conv.clone(),
            before: 5,
            after: 2,
            limit: 3,
        })
        .await,
        Code::InvalidArgument,
        "before and after together",
    );
}

/// Waits until the leader's clock (which stamps entries) has moved on, so
/// the next write's activity time differs from the last one's.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn entry<'a>(inbox: &'a pb::InboxResponse, conv: &str) -> &'a pb::InboxEntry {
    inbox
        .entries
        .iter()
        .find(|e| {
            e.conversation
                .as_ref()
                .is_some_and(|c| c.conversation_id == conv)
        })
        .unwrap_or_else(|| panic!("{conv} not in the inbox"))
}

fn order(inbox: &pb::InboxResponse) -> Vec<String> {
    inbox
        .entries
        .iter()
        .map(|e| {
            e.conversation
                .as_ref()
                .expect("a conversation")
                .conversation_id
                .clone()
        })
        .collect()
}

async fn inbox(c: &mut Client, limit: u32) -> pb::InboxResponse {
    c.inbox(pb::InboxRequest { limit })
        .await
        .expect("inbox")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_ordered_by_last_activity_with_unread_counts_and_last_messages() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let with_alice = direct(&mut bob, "alice").await;
    tick().await;
    let with_carol = direct(&mut bob, "carol").await;
    tick().await;
    let g = group(&mut alice, "trip", &["bob", "carol"]).await;
    tick().await;
    // Not bob's: never in his inbox.
    direct(&mut alice, "carol").await;
    tick().await;

    // Newest first: created in this order, nothing sent yet.
    let b = inbox(&mut bob, 0).await;
    assert_eq!(
        order(&b),
        [g.clone(), with_carol.clone(), with_alice.clone()]
    );
    assert!(
        b.entries
            .iter()
            .all(|e| e.last_message.is_none() && e.unread == 0)
    );

    send(&mut carol, &with_carol, "c1", "hi bob").await;
    tick().await;
    send(&mut alice, &with_alice, "a1", "are you there?").await;
    tick().await;
    send(&mut alice, &with_alice, "a2", "bob?").await;
    tick().await;
    send(&mut carol, &g, "g1", "tickets booked").await;
    tick().await;

    let b = inbox(&mut bob, 0).await;
    assert_eq!(
        order(&b),
        [g.clone(), with_alice.clone(), with_carol.clone()]
    );
    let unread: Vec<u64> = b.entries.iter().map(|e| e.unread).collect();
    assert_eq!(unread, [1, 2, 1]);
    let last: Vec<&str> = b
        .entries
        .iter()
        .map(|e| body(e.last_message.as_ref().expect("a last message")))
        .collect();
    assert_eq!(last, ["tickets booked", "bob?", "hi bob"]);
    assert!(
        b.entries
            .windows(2)
            .all(|w| w[0].last_activity_ms > w[1].last_activity_ms)
    );
    let e = entry(&b, &g);
    assert_eq!(
        e.conversation.as_ref().map(|c| c.name.as_str()),
        Some("trip")
    );

    // The limit keeps the most recent.
    assert_eq!(
        order(&inbox(&mut bob, 2).await),
        [g.clone(), with_alice.clone()]
    );

    // Reading clears the count without reordering; a deleted message no
    // longer counts.
    let g_last = conversation(&mut bob, &g).await.last_seq;
    bob.mark_read(pb::ReceiptRequest {
        conversation_id: g.clone(),
        up_to: g_last,
    })
    .await
    .expect("read");
    let first = history(&mut bob, &with_alice).await[0].seq;
    alice
        .delete(pb::MessageRef {
            conversation_id: with_alice.clone(),
            seq: first,
        })
        .await
        .expect("delete");
    let b = inbox(&mut bob, 0).await;
    assert_eq!(
        order(&b),
        [g.clone(), with_alice.clone(), with_carol.clone()]
    );
    assert_eq!(entry(&b, &g).unread, 0);
    assert_eq!(entry(&b, &with_alice).unread, 1);

    // Bob's own message moves its conversation first and is not unread
    // for him; it is for carol.
    send(&mut bob, &with_carol, "b1", "hi carol").await;
    let b = inbox(&mut bob, 0).await;
    assert_eq!(order(&b)[0], with_carol);
    assert_eq!(
        entry(&b, &with_carol).unread,
        0,
        "one's own messages are read"
    );
    let c = inbox(&mut carol, 0).await;
    assert_eq!(entry(&c, &with_carol).unread, 1);
    assert_eq!(
        entry(&c, &with_carol).last_message.as_ref().map(body),
        Some("hi carol")
    );
    assert_eq!(c.entries.len(), 3, "carol is in three conversations");
}
