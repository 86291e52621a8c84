//! `Subscribe` over gRPC: from now it answers `CaughtUp` and then live
//! events of the caller's conversations, in order, each with a token; from
//! a token it replays exactly what came after it (no gap, no duplicate)
//! before `CaughtUp`; every token resumes; a garbage token is
//! `INVALID_ARGUMENT`, and a token of another history (epoch, partition
//! count, or a position this node never reached) gets `Resync`; a node
//! that stops ends a live subscription with `UNAVAILABLE` naming the token to
//! resume from.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;
use missive_api::token::Token;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind as EventKind;
use missive_proto::v1::subscribe_response::Kind;
use tonic::Code;

fn indexes(token: &str) -> Vec<u64> {
    Token::decode(token).expect("a valid token").indexes
}

/// Asserts every position in `b` is at or after the one in `a`.
#[track_caller]
fn not_before(a: &str, b: &str) {
    let (a, b) = (indexes(a), indexes(b));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x <= y),
        "token went back: {a:?} then {b:?}"
    );
}

fn key(e: &Ev) -> (String, u64) {
    (e.event.conversation_id.clone(), e.event.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_now_it_is_caught_up_then_streams_live_events_in_order_with_tokens() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let conv = direct(&mut alice, "bob").await;
    send(&mut alice, &conv, "before", "sent before subscribing").await;
    let not_bobs = direct(&mut alice, "carol").await;

    let mut sub = Sub::open(&mut bob, "").await;
    let first = sub.next().await;
    assert!(
        matches!(first.kind, Some(Kind::CaughtUp(_))),
        "from now, nothing is replayed: {first:?}"
    );
    let mut token = first.token;
    indexes(&token);

    for i in 0..5 {
        send(&mut alice, &conv, &format!("m{i}"), &format!("live {i}")).await;
        // Not bob's conversation: never streamed to him.
        send(&mut alice, &not_bobs, &format!("x{i}"), "not for bob").await;
    }
    for i in 0..5u64 {
        let ev = sub.next_conv_event().await;
        assert_eq!(ev.event.conversation_id, conv);
        assert_eq!(ev.event.seq, 3 + i);
        assert_eq!(sent_text(&ev.event), format!("live {i}"));
        assert_ne!(ev.token, token, "each event moves the token");
        not_before(&token, &ev.token);
        token = ev.token;
    }

    // A conversation created with bob while he is subscribed streams from
    // its creation on.
    let new = direct(&mut carol, "bob").await;
    send(&mut carol, &new, "c1", "hello from carol").await;
    let created = sub.next_conv_event().await.event;
    assert_eq!(
        (created.conversation_id.as_str(), created.seq),
        (new.as_str(), 1)
    );
    assert!(matches!(
        created.kind,
        Some(EventKind::ConversationCreated(_))
    ));
    let msg = sub.next_conv_event().await.event;
    assert_eq!((msg.conversation_id.as_str(), msg.seq), (new.as_str(), 2));
    sub.assert_no_conv_event(Duration::from_millis(200)).await;
}

fn sent_text(e: &pb::ChatEvent) -> String {
    match &e.kind {
        Some(EventKind::MessageSent(m)) => body(m).to_owned(),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_user_gets_exactly_what_it_missed_then_caught_up() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let d = direct(&mut alice, "bob").await;
    let g = group(&mut carol, "club", &["bob", "alice"]).await;
    let elsewhere = direct(&mut alice, "carol").await;

    let mut sub = Sub::open(&mut bob, "").await;
    sub.until_caught_up().await;
    let seen = send(&mut alice, &d, "m1", "seen live").await.seq;
    let last_seen = sub.next_conv_event().await;
    assert_eq!(key(&last_seen), (d.clone(), seen));
    drop(sub);

    // While bob is away.
    let m2 = send(&mut alice, &d, "m2", "missed one").await.seq;
    send(&mut carol, &g, "g1", "missed in the group").await;
    let m3 = send(&mut alice, &d, "m3", "missed two").await.seq;
    alice
        .edit(pb::EditRequest {
            conversation_id: d.clone(),
            seq: m2,
            content: Some(text("missed one, edited")),
        })
        .await
        .expect("edit");
    alice
        .react(pb::ReactRequest {
            conversation_id: d.clone(),
            seq: seen,
            emoji: "👀".into(),
        })
        .await
        .expect("react");
    send(&mut alice, &elsewhere, "e1", "not bob's").await;
    let g2 = group(&mut alice, "new group", &["bob"]).await;
    send(&mut alice, &g2, "n1", "welcome").await;

    let mut sub = Sub::open(&mut bob, &last_seen.token).await;
    let (replayed, caught_up) = sub.until_caught_up().await;
    let got: Vec<(String, u64)> = replayed.iter().map(key).collect();
    let mut expected: HashSet<(String, u64)> = [
        (d.clone(), m2),
        (d.clone(), m3),
        (d.clone(), m3 + 1),
        (d.clone(), m3 + 2),
        (g.clone(), 2),
        (g2.clone(), 1),
        (g2.clone(), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(got.len(), expected.len(), "replayed {got:?}");
    for k in &got {
        assert!(expected.remove(k), "replayed {k:?} twice or unexpectedly");
    }
    // In order: each conversation's seqs ascend; every token moves on.
    for conv in [&d, &g, &g2] {
        let seqs: Vec<u64> = got.iter().filter(|k| &k.0 == conv).map(|k| k.1).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{conv}: {seqs:?}");
    }
    let mut token = last_seen.token.clone();
    for e in &replayed {
        not_before(&token, &e.token);
        token = e.token.clone();
    }
    not_before(&token, &caught_up);
    // What the events say, not only their seqs.
    let d_events: Vec<&pb::ChatEvent> = replayed
        .iter()
        .map(|e| &e.event)
        .filter(|e| e.conversation_id == d)
        .collect();
    assert_eq!(sent_text(d_events[0]), "missed one");
    assert!(matches!(&d_events[2].kind, Some(EventKind::MessageEdited(e)) if e.target == m2));
    assert!(matches!(&d_events[3].kind, Some(EventKind::ReactionSet(r)) if r.target == seen));

    // Then live.
    let live = send(&mut alice, &d, "m4", "live again").await.seq;
    assert_eq!(key(&sub.next_conv_event().await), (d.clone(), live));
    drop(sub);

    // Every token resumes: from the one after the third replayed event,
    // exactly the rest (and the live one) come back.
    let mut sub = Sub::open(&mut bob, &replayed[2].token).await;
    let (rest, _) = sub.until_caught_up().await;
    let mut want: Vec<(String, u64)> = got[3..].to_vec();
    want.push((d.clone(), live));
    let mut rest: Vec<(String, u64)> = rest.iter().map(key).collect();
    rest.sort();
    want.sort();
    assert_eq!(rest, want);
    drop(sub);

    // Nothing missed: nothing replayed.
    let mut sub = Sub::open(&mut bob, &caught_up).await;
    let mut again = sub.until_caught_up().await.0;
    again.retain(|e| e.event.seq != live || e.event.conversation_id != d);
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_token_is_invalid_argument() {
    let cluster = Cluster::one().await;
    let mut bob = cluster.client("bob", "phone");
    for since in [
        "garbage",
        "2.0.1.1",
        "1.0",
        "1.x.1.1",
        "1.0.1.-1",
        "1.0.1..1",
        &"1.0.1".repeat(1000),
    ] {
        let r = match Sub::try_open(&mut bob, since).await {
            Ok(mut sub) => sub.try_next().await.map(|_| ()),
            Err(s) => Err(s),
        };
        assert_code(r, Code::InvalidArgument, &format!("token {since:.20}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_history_gets_resync_then_live_events() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    send(&mut alice, &conv, "m1", "old news").await;
    let zeros = ".0".repeat(PARTITIONS as usize);
    let cases = [
        ("another epoch", format!("1.7{zeros}")),
        (
            "another partition count",
            format!("1.0{}", ".0".repeat(PARTITIONS as usize + 1)),
        ),
        // Past anything this node applied (it waits a few seconds for the
        // node to get there first).
        (
            "a position never reached",
            format!("1.0{}", ".1000000".repeat(PARTITIONS as usize)),
        ),
    ];
    for (what, since) in cases {
        let mut sub = Sub::open(&mut bob, &since).await;
        let r = sub.next().await;
        let Some(Kind::Resync(why)) = r.kind else {
            panic!("{what}: expected resync, got {r:?}");
        };
        assert!(!why.reason.is_empty());
        // The resync token is this history's: it resumes without replay.
        assert_eq!(indexes(&r.token).len(), PARTITIONS as usize);
        let next = sub.next().await;
        assert!(
            matches!(next.kind, Some(Kind::CaughtUp(_))),
            "{what}: nothing is replayed after a resync: {next:?}"
        );
        let seq = send(&mut alice, &conv, &format!("after {what}"), "live")
            .await
            .seq;
        assert_eq!(sub.next_conv_event().await.event.seq, seq, "{what}");
        drop(sub);
        let mut resumed = Sub::open(&mut bob, &r.token).await;
        let (replayed, _) = resumed.until_caught_up().await;
        assert_eq!(
            replayed.iter().map(|e| e.event.seq).collect::<Vec<_>>(),
            [seq],
            "{what}: the resync token resumes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_start_and_end_a_subscriptions_stream() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut dave = cluster.client("dave", "phone");
    let g = group(&mut alice, "team", &["bob"]).await;
    send(&mut alice, &g, "m0", "before dave").await;
    let mut sub = Sub::open(&mut dave, "").await;
    sub.until_caught_up().await;

    let added = alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["dave".into()],
        })
        .await
        .expect("add dave")
        .into_inner()
        .seq;
    let m1 = send(&mut alice, &g, "m1", "welcome dave").await.seq;
    assert_eq!(
        sub.next_conv_event().await.event.seq,
        added,
        "the event that adds him comes first"
    );
    assert_eq!(sub.next_conv_event().await.event.seq, m1);

    let removed = alice
        .remove_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["dave".into()],
        })
        .await
        .expect("remove dave")
        .into_inner()
        .seq;
    let last = sub.next_conv_event().await;
    assert_eq!(
        last.event.seq, removed,
        "the event that removes him comes last"
    );
    send(&mut alice, &g, "m2", "dave is gone").await;
    sub.assert_no_conv_event(Duration::from_millis(300)).await;
    drop(sub);

    // A replay from before the removal also stops at it.
    let mut sub = Sub::open(
        &mut dave,
        &format!("1.0{}", ".0".repeat(PARTITIONS as usize)),
    )
    .await;
    let (replayed, _) = sub.until_caught_up().await;
    let seqs: Vec<u64> = replayed.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs.last(), Some(&removed), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_ends_a_live_subscription_with_the_token_to_resume_from() {
    let mut cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut sub = Sub::open(&mut bob, "").await;
    sub.until_caught_up().await;
    send(&mut alice, &conv, "m1", "before the stop").await;
    let last = sub.next_conv_event().await;
    // Whatever else arrives before the end (presence), the end names the
    // token after the last event read.
    let stopping = async {
        cluster.nodes[0].stop().await;
    };
    let reading = async {
        let mut token = last.token.clone();
        loop {
            match sub.try_next().await {
                Ok(Some(r)) => token = r.token,
                Ok(None) => panic!("the stream ended without saying where to resume"),
                Err(s) => return (s, token),
            }
        }
    };
    let ((), (status, token)) = tokio::join!(stopping, reading);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("resume with token {token}")),
        "{status:?} should name {token}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_history_says_what_was_streamed_live_with_deleted_bodies_removed() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let d = direct(&mut alice, "bob").await;
    let mut sub = Sub::open(&mut bob, "").await;
    let (_, from) = sub.until_caught_up().await;

    let kept = send(&mut alice, &d, "k", "as sent").await.seq;
    let gone = send(&mut alice, &d, "g", "to be deleted").await.seq;
    for (seq, body) in [
        (kept, "edited once"),
        (kept, "edited twice"),
        (gone, "edited before the delete"),
    ] {
        alice
            .edit(pb::EditRequest {
                conversation_id: d.clone(),
                seq,
                content: Some(text(body)),
            })
            .await
            .expect("edit");
    }
    bob.react(pb::ReactRequest {
        conversation_id: d.clone(),
        seq: kept,
        emoji: "👍".into(),
    })
    .await
    .expect("react");
    let mut live = Vec::new();
    for _ in 0..6 {
        live.push(sub.next_conv_event().await.event);
    }
    alice
        .delete(pb::MessageRef {
            conversation_id: d.clone(),
            seq: gone,
        })
        .await
        .expect("delete");
    live.push(sub.next_conv_event().await.event);
    drop(sub);

    let mut sub = Sub::open(&mut bob, &from).await;
    let (replayed, _) = sub.until_caught_up().await;
    let replayed: Vec<pb::ChatEvent> = replayed
        .into_iter()
        .map(|e| e.event)
        .filter(|e| e.conversation_id == d)
        .collect();
    assert_eq!(replayed.len(), live.len(), "{replayed:#?}");

    // The deleted message's send and edit lost their bodies; everything
    // else replays exactly as it was streamed: the send with the content as
    // sent, each edit with its own.
    let mut want = live.clone();
    for e in &mut want {
        match e.kind.as_mut() {
            Some(EventKind::MessageSent(m)) if m.seq == gone => {
                m.content = None;
                m.deleted = true;
            }
            Some(EventKind::MessageEdited(x)) if x.target == gone => x.content = None,
            _ => {}
        }
    }
    assert_eq!(replayed, want);
    assert_eq!(sent_text(&replayed[0]), "as sent");
}
