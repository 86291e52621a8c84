//! Receipts over gRPC are watermarks: per member, delivered and read up to
//! a seq, moving only forward, read implying delivered. A message's status
//! for each member is a comparison with them, and "read by all" holds only
//! once every member but the sender has read it.

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use tonic::Code;

fn receipt(conv: &str, up_to: u64) -> pb::ReceiptRequest {
    pb::ReceiptRequest {
        conversation_id: conv.to_owned(),
        up_to,
    }
}

async fn status(c: &mut Client, conv: &str, seq: u64) -> pb::MessageStatusResponse {
    c.message_status(pb::MessageRef {
        conversation_id: conv.to_owned(),
        seq,
    })
    .await
    .expect("message status")
    .into_inner()
}

/// (user, delivered, read) of each member in a status.
fn states(s: &pb::MessageStatusResponse) -> Vec<(&str, bool, bool)> {
    s.members
        .iter()
        .map(|m| (m.user.as_str(), m.delivered, m.read))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_only_move_forward_and_read_implies_delivered() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut live = Sub::open(&mut alice, "").await;
    live.until_caught_up().await;
    for i in 0..3 {
        send(&mut alice, &conv, &format!("m{i}"), "hi").await;
    }
    // Messages are seqs 2, 3, 4.
    for _ in 0..3 {
        live.next_conv_event().await;
    }
    let watermarks = |s: &pb::MessageStatusResponse| {
        let m = &s.members[0];
        (m.delivered_up_to, m.read_up_to)
    };

    let ack = bob
        .mark_delivered(receipt(&conv, 3))
        .await
        .expect("delivered")
        .into_inner();
    assert_eq!(ack.seq, 5, "a receipt is an event of the conversation");
    let s = status(&mut alice, &conv, 3).await;
    assert_eq!(
        states(&s),
        [("bob", true, false)],
        "the sender is not listed"
    );
    assert_eq!(watermarks(&s), (3, 0));
    assert_eq!(
        states(&status(&mut alice, &conv, 4).await),
        [("bob", false, false)]
    );

    // An older receipt changes nothing and stores nothing.
    let older = bob
        .mark_delivered(receipt(&conv, 2))
        .await
        .expect("older")
        .into_inner();
    assert_eq!(older.seq, 0);
    assert_eq!(watermarks(&status(&mut alice, &conv, 3).await), (3, 0));

    // Read up to 4 moves delivered up to 4 too.
    bob.mark_read(receipt(&conv, 4)).await.expect("read");
    let s = status(&mut alice, &conv, 4).await;
    assert_eq!(states(&s), [("bob", true, true)]);
    assert_eq!(watermarks(&s), (4, 4));
    assert!(s.delivered_to_all && s.read_by_all);

    // Neither watermark moves back.
    for r in [
        bob.mark_read(receipt(&conv, 2)).await,
        bob.mark_delivered(receipt(&conv, 1)).await,
        bob.mark_read(receipt(&conv, 4)).await,
    ] {
        assert_eq!(r.expect("an old receipt").into_inner().seq, 0);
    }
    assert_eq!(watermarks(&status(&mut alice, &conv, 4).await), (4, 4));

    // Past the end, refused.
    let last = conversation(&mut bob, &conv).await.last_seq;
    assert_code(
        bob.mark_read(receipt(&conv, last + 1)).await,
        Code::InvalidArgument,
        "a receipt past the last seq",
    );
    assert_eq!(conversation(&mut bob, &conv).await.last_seq, last);

    // The sender saw both moves, with both watermarks each time.
    let mut moves = Vec::new();
    while moves.len() < 2 {
        let ev = live.next_conv_event().await.event;
        match ev.kind {
            Some(Kind::Receipt(r)) => {
                assert_eq!(ev.actor, "bob");
                moves.push((r.user, r.delivered_up_to, r.read_up_to));
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    assert_eq!(moves, [("bob".to_owned(), 3, 0), ("bob".to_owned(), 4, 4)]);

    // The inbox shows the same watermarks.
    let inbox = bob
        .inbox(pb::InboxRequest { limit: 0 })
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(
        (
            inbox.entries[0].delivered_up_to,
            inbox.entries[0].read_up_to
        ),
        (4, 4)
    );
    assert_code(
        alice
            .message_status(pb::MessageRef {
                conversation_id: conv.clone(),
                seq: 999,
            })
            .await,
        Code::NotFound,
        "the status of a missing message",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_status_is_per_member_and_read_by_all_needs_every_member() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let mut dave = cluster.client("dave", "phone");
    let g = group(&mut alice, "team", &["bob", "carol", "dave"]).await;
    let m = send(&mut alice, &g, "m1", "meeting at 3").await.seq;

    let s = status(&mut bob, &g, m).await;
    assert_eq!(
        states(&s),
        [
            ("bob", false, false),
            ("carol", false, false),
            ("dave", false, false)
        ]
    );
    assert!(!s.delivered_to_all && !s.read_by_all);

    bob.mark_read(receipt(&g, m)).await.expect("bob reads");
    carol
        .mark_delivered(receipt(&g, m))
        .await
        .expect("carol receives");
    let s = status(&mut alice, &g, m).await;
    assert_eq!(
        states(&s),
        [
            ("bob", true, true),
            ("carol", true, false),
            ("dave", false, false)
        ]
    );
    assert!(!s.delivered_to_all && !s.read_by_all);

    dave.mark_delivered(receipt(&g, m))
        .await
        .expect("dave receives");
    let s = status(&mut alice, &g, m).await;
    assert!(s.delivered_to_all, "{s:?}");
    assert!(!s.read_by_all, "{s:?}");

    dave.mark_read(receipt(&g, m)).await.expect("dave reads");
    assert!(
        !status(&mut alice, &g, m).await.read_by_all,
        "carol has not read"
    );

    // Carol reads up to the first after a second was sent: the first is
    // read by all, the second by nobody yet.
    let m2 = send(&mut bob, &g, "b1", "ok").await.seq;
    carol.mark_read(receipt(&g, m)).await.expect("carol reads");
    let s = status(&mut alice, &g, m).await;
    assert!(s.read_by_all && s.delivered_to_all, "{s:?}");
    let s2 = status(&mut alice, &g, m2).await;
    // bob sent m2: he is not listed; alice's own send of m1 does not read m2.
    assert_eq!(
        states(&s2),
        [
            ("alice", false, false),
            ("carol", false, false),
            ("dave", false, false)
        ]
    );
    assert!(!s2.read_by_all);

    // One receipt covers any number of messages.
    for who in [&mut alice, &mut carol, &mut dave] {
        who.mark_read(receipt(&g, m2)).await.expect("read all");
    }
    let s2 = status(&mut bob, &g, m2).await;
    assert!(s2.read_by_all && s2.delivered_to_all, "{s2:?}");
}
