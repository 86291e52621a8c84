//! Three chat nodes in one process, each serving ChatService over gRPC:
//! a write through any node reaches its partition's leader, and reads and
//! subscriptions on every node see it; a send retried with the same
//! `client_msg_id` on another node after the partition's leader is shut
//! down is stored once.
//!
//! Regression: `CreateGroup` and `CreateDirect` through a follower failed
//! with `NOT_FOUND` — the leader applied the create and answered, and the
//! follower then read the new conversation from its own projections before
//! it had applied the entry. A write now answers once the node it came
//! through has applied it too.

use std::time::Duration;

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use tonic::Code;

/// What a subscriber saw of an event, comparable across nodes.
fn summary(e: &pb::ChatEvent) -> (String, u64, String, String) {
    let what = match &e.kind {
        Some(Kind::MessageSent(m)) => format!("sent {}", body(m)),
        Some(Kind::ConversationCreated(_)) => "created".to_owned(),
        other => format!("{other:?}"),
    };
    (e.conversation_id.clone(), e.seq, e.actor.clone(), what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_node_are_seen_by_reads_and_subscriptions_on_every_node() {
    let cluster = Cluster::three().await;
    let n = &cluster.nodes;
    // Bob subscribes on every node.
    let mut subs = Vec::new();
    for node in n {
        let mut c = node.client("bob", "phone");
        let mut sub = Sub::open(&mut c, "").await;
        sub.until_caught_up().await;
        subs.push(sub);
    }

    // Writers on different nodes: some of their writes are forwarded.
    let mut alice = n[0].client("alice", "phone");
    let mut bob = n[1].client("bob", "phone");
    let mut carol = n[2].client("carol", "phone");
    let g = group(&mut alice, "spread", &["bob", "carol"]).await;
    let d = direct(&mut carol, "bob").await;
    let mut expected = 2; // the two creations
    for i in 0..4 {
        send(&mut alice, &g, &format!("a{i}"), &format!("alice {i}")).await;
        send(&mut bob, &g, &format!("b{i}"), &format!("bob {i}")).await;
        send(&mut carol, &g, &format!("c{i}"), &format!("carol {i}")).await;
        send(&mut carol, &d, &format!("d{i}"), &format!("direct {i}")).await;
        expected += 4;
    }

    // Every node's subscription saw the same events, each conversation in
    // seq order.
    let mut seen = Vec::new();
    for sub in &mut subs {
        let mut events = Vec::new();
        while events.len() < expected {
            events.push(summary(&sub.next_conv_event().await.event));
        }
        sub.assert_no_conv_event(Duration::from_millis(100)).await;
        for conv in [&g, &d] {
            let seqs: Vec<u64> = events
                .iter()
                .filter(|e| &e.0 == conv)
                .map(|e| e.1)
                .collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        }
        events.sort();
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);

    // Every node answers reads with all of it (followers apply shortly
    // after the leader answers the write).
    let mut histories = Vec::new();
    for node in n {
        let c = node.client("carol", "laptop");
        let h = eventually("every message on every node", || {
            let mut c = c.clone();
            let g = g.clone();
            async move {
                let h = history(&mut c, &g).await;
                (h.len() == 12).then_some(h)
            }
        })
        .await;
        histories.push(h);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    assert_eq!(
        histories[0].iter().map(|m| m.seq).collect::<Vec<_>>(),
        (2..=13).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_retried_on_another_node_after_the_leader_is_shut_down_is_stored_once() {
    let mut cluster = Cluster::three().await;
    let mut alice = cluster.nodes[0].client("alice", "phone");
    let conv = direct(&mut alice, "bob").await;

    // The partition's leader, and the two others.
    let p = cluster.nodes[0].chat.partition_of(&conv);
    let leader = cluster.nodes[0]
        .chat
        .node()
        .metrics(p)
        .expect("partition")
        .current_leader
        .expect("a leader");
    let at = cluster
        .nodes
        .iter()
        .position(|n| n.chat.node().id() == leader)
        .expect("the leader is one of the nodes");
    let others: Vec<usize> = (0..3).filter(|i| *i != at).collect();

    // Acknowledged by the leader.
    let mut through_leader = cluster.nodes[at].client("alice", "phone");
    let first = send(&mut through_leader, &conv, "once", "exactly once").await;
    assert!(!first.duplicate);
    // A second send goes out through a follower just as the leader stops:
    // its outcome is unknown to the client.
    let racing = {
        let mut c = cluster.nodes[others[0]].client("alice", "phone");
        let conv = conv.clone();
        tokio::spawn(async move {
            c.send(pb::SendRequest {
                conversation_id: conv,
                client_msg_id: "racing".into(),
                content: Some(text("maybe")),
                reply_to: 0,
            })
            .await
        })
    };
    cluster.nodes[at].stop().await;
    match racing.await.expect("send task") {
        Ok(r) => assert!(!r.into_inner().duplicate),
        // Retryable, and said so.
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
    }

    // The client retries both on the survivors, until a new leader takes
    // them: the first is a duplicate of the acknowledged one.
    let retry = |node: usize, id: &'static str, body: &'static str| {
        let c = cluster.nodes[node].client("alice", "phone");
        let conv = conv.clone();
        async move {
            eventually(&format!("a leader to take the retry of {id}"), || {
                let mut c = c.clone();
                let conv = conv.clone();
                async move {
                    c.send(pb::SendRequest {
                        conversation_id: conv,
                        client_msg_id: id.into(),
                        content: Some(text(body)),
                        reply_to: 0,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
                }
            })
            .await
        }
    };
    let again = retry(others[1], "once", "exactly once").await;
    assert_eq!(again.seq, first.seq);
    assert!(again.duplicate);
    let racing = retry(others[1], "racing", "maybe").await;
    let racing_again = retry(others[0], "racing", "maybe").await;
    assert_eq!(racing_again.seq, racing.seq);
    assert!(racing_again.duplicate);

    // On both survivors: each message once, seqs gapless.
    let next = retry(others[0], "after", "after the failover").await;
    assert!(!next.duplicate);
    for i in &others {
        let c = cluster.nodes[*i].client("bob", "phone");
        let h = eventually("the survivors to agree", || {
            let mut c = c.clone();
            let conv = conv.clone();
            async move {
                let h = history(&mut c, &conv).await;
                (h.last().map(|m| m.seq) == Some(next.seq)).then_some(h)
            }
        })
        .await;
        let ids: Vec<&str> = h.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(ids, ["once", "racing", "after"], "node {i}");
        assert_eq!(
            h.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [first.seq, racing.seq, next.seq]
        );
        assert_eq!(next.seq, first.seq + 2, "no seq was taken twice or skipped");
    }
}

/// Typing is never logged, so it cannot reach other nodes through the log:
/// the node that takes the call relays it to every other node, whose hubs
/// hand it to their subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_on_one_node_reaches_a_subscriber_on_another() {
    let cluster = Cluster::three().await;
    let n = &cluster.nodes;
    let mut alice = n[0].client("alice", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut bob = n[2].client("bob", "phone");
    // Bob's view of the conversation, so his node knows he is a member.
    eventually("the conversation on bob's node", || {
        let mut bob = bob.clone();
        let conv = conv.clone();
        async move {
            bob.get_conversation(pb::ConversationRequest {
                conversation_id: conv,
            })
            .await
            .ok()
        }
    })
    .await;
    let mut sub = Sub::open(&mut bob, "").await;
    sub.until_caught_up().await;
    alice
        .set_typing(pb::TypingRequest {
            conversation_id: conv.clone(),
            typing: true,
        })
        .await
        .expect("typing");
    let ev = sub.next_conv_event().await;
    assert_eq!(ev.event.conversation_id, conv);
    match &ev.event.kind {
        Some(Kind::Typing(t)) => assert_eq!((t.user.as_str(), t.typing), ("alice", true)),
        other => panic!("expected typing, got {other:?}"),
    }
}
