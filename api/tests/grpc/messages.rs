//! Messages over gRPC: text, end-to-end-encrypted envelopes and media
//! references are stored and streamed as sent; replies point at earlier
//! messages; only the sender edits; delete for everyone is for the sender
//! or a group admin and takes the body out of history and of replays;
//! reactions are one per user; a retried send is stored once.

use std::time::Duration;

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use tonic::Code;

fn sent(ev: &pb::ChatEvent) -> &pb::Message {
    match &ev.kind {
        Some(Kind::MessageSent(m)) => m,
        other => panic!("expected a sent message, got {other:?}"),
    }
}

/// A token before everything: replays every event of the caller's
/// conversations.
fn origin() -> String {
    format!("1.0{}", ".0".repeat(PARTITIONS as usize))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_ciphertext_and_media_messages_are_stored_and_streamed_as_sent() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "laptop");
    let conv = direct(&mut alice, "bob").await;
    let mut live = Sub::open(&mut bob, "").await;
    live.until_caught_up().await;

    let contents = [
        text("hello bob"),
        pb::Content {
            ciphertexts: vec![
                pb::Ciphertext {
                    user: "bob".into(),
                    device: "laptop".into(),
                    body: vec![0xde, 0xad, 0xbe, 0xef],
                },
                pb::Ciphertext {
                    user: "bob".into(),
                    device: "phone".into(),
                    body: vec![0x01; 300],
                },
                pb::Ciphertext {
                    user: "alice".into(),
                    device: "laptop".into(),
                    body: vec![0x00, 0xff],
                },
            ],
            ..Default::default()
        },
        pb::Content {
            text: "the view from here".into(),
            media: Some(pb::MediaRef {
                media_id: "m-0123456789abcdef".into(),
                mime_type: "image/jpeg".into(),
                size: 345_678,
                name: "view.jpg".into(),
            }),
            ..Default::default()
        },
    ];
    let mut seqs = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let r = alice
            .send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: format!("c{i}"),
                content: Some(content.clone()),
                reply_to: 0,
            })
            .await
            .expect("send")
            .into_inner();
        assert!(!r.duplicate);
        assert!(r.timestamp_ms > 0);
        seqs.push(r.seq);
    }
    assert_eq!(seqs, [2, 3, 4], "seqs follow the creation's 1, gapless");
    let reply = alice
        .send(pb::SendRequest {
            conversation_id: conv.clone(),
            client_msg_id: "c3".into(),
            content: Some(text("and a reply")),
            reply_to: 2,
        })
        .await
        .expect("a reply")
        .into_inner();
    assert_eq!(reply.seq, 5);

    let messages = history(&mut bob, &conv).await;
    assert_eq!(messages.len(), 4);
    for (m, (i, content)) in messages.iter().zip(contents.iter().enumerate()) {
        assert_eq!(m.conversation_id, conv);
        assert_eq!(m.seq, seqs[i]);
        assert_eq!(m.sender, "alice");
        assert_eq!(m.sender_device, "phone");
        assert_eq!(m.client_msg_id, format!("c{i}"));
        assert_eq!(m.content.as_ref(), Some(content));
        assert_eq!(m.reply_to, 0);
        assert!(!m.deleted && m.edited_ms == 0 && m.reactions.is_empty());
    }
    assert_eq!(messages[3].reply_to, 2);
    assert_eq!(body(&messages[3]), "and a reply");

    // The live subscriber got the same messages, in order.
    for expected in &messages {
        let ev = live.next_conv_event().await.event;
        assert_eq!(
            (ev.conversation_id.as_str(), ev.seq),
            (conv.as_str(), expected.seq)
        );
        assert_eq!(ev.actor, "alice");
        assert_eq!(sent(&ev), expected);
    }

    // A reply to nothing, and content of two kinds, are refused.
    assert_code(
        alice
            .send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: "c4".into(),
                content: Some(text("re: ?")),
                reply_to: 99,
            })
            .await,
        Code::NotFound,
        "a reply to a missing message",
    );
    let mut mixed = contents[1].clone();
    mixed.text = "plain and encrypted".into();
    assert_code(
        alice
            .send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: "c5".into(),
                content: Some(mixed),
                reply_to: 0,
            })
            .await,
        Code::InvalidArgument,
        "text and ciphertexts together",
    );
    assert_eq!(history(&mut bob, &conv).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sender_edits_and_members_see_the_edit() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut live = Sub::open(&mut bob, "").await;
    live.until_caught_up().await;
    let seq = send(&mut alice, &conv, "m1", "helo").await.seq;
    assert_eq!(live.next_conv_event().await.event.seq, seq);

    let edit = |content: &str| pb::EditRequest {
        conversation_id: conv.clone(),
        seq,
        content: Some(text(content)),
    };
    assert_code(
        bob.edit(edit("bob was here")).await,
        Code::PermissionDenied,
        "someone else edits",
    );
    let ack = alice
        .edit(edit("hello"))
        .await
        .expect("the sender edits")
        .into_inner();
    assert_eq!(ack.seq, seq + 1, "an edit is an event of its own");

    let m = &history(&mut bob, &conv).await[0];
    assert_eq!((m.seq, body(m)), (seq, "hello"));
    assert!(m.edited_ms >= m.sent_ms && m.edited_ms > 0);
    let ev = live.next_conv_event().await.event;
    assert_eq!(ev.seq, ack.seq);
    match ev.kind {
        Some(Kind::MessageEdited(e)) => {
            assert_eq!(e.target, seq);
            assert_eq!(e.content, Some(text("hello")));
        }
        other => panic!("expected an edit, got {other:?}"),
    }

    assert_code(
        alice
            .edit(pb::EditRequest {
                conversation_id: conv.clone(),
                seq: 42,
                content: Some(text("?")),
            })
            .await,
        Code::NotFound,
        "editing a missing message",
    );
    assert_code(
        alice
            .edit(pb::EditRequest {
                conversation_id: conv.clone(),
                seq,
                content: None,
            })
            .await,
        Code::InvalidArgument,
        "an edit without content",
    );
    alice
        .delete(pb::MessageRef {
            conversation_id: conv.clone(),
            seq,
        })
        .await
        .expect("delete");
    assert_code(
        alice.edit(edit("too late")).await,
        Code::FailedPrecondition,
        "editing a deleted message",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_for_everyone_is_for_the_sender_or_a_group_admin_and_removes_the_body() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let g = group(&mut alice, "team", &["bob", "carol"]).await;
    let mut live = Sub::open(&mut carol, "").await;
    live.until_caught_up().await;

    let m1 = send(&mut bob, &g, "b1", "secret one").await.seq;
    let m2 = send(&mut carol, &g, "c1", "secret two").await.seq;
    let m3 = send(&mut bob, &g, "b2", "secret three").await.seq;
    bob.edit(pb::EditRequest {
        conversation_id: g.clone(),
        seq: m3,
        content: Some(text("secret three, edited")),
    })
    .await
    .expect("edit");
    bob.react(pb::ReactRequest {
        conversation_id: g.clone(),
        seq: m2,
        emoji: "👍".into(),
    })
    .await
    .expect("react");
    let del = |seq| pb::MessageRef {
        conversation_id: g.clone(),
        seq,
    };

    // A member deletes only its own messages.
    assert_code(
        carol.delete(del(m1)).await,
        Code::PermissionDenied,
        "a member deletes another's message",
    );
    let before = conversation(&mut alice, &g).await.last_seq;
    bob.delete(del(m1)).await.expect("the sender deletes");
    // An admin deletes anyone's.
    alice
        .delete(del(m2))
        .await
        .expect("an admin deletes another's message");
    alice
        .delete(del(m3))
        .await
        .expect("an admin deletes an edited message");
    assert_code(
        bob.delete(del(m1)).await,
        Code::FailedPrecondition,
        "deleting twice",
    );

    let messages = history(&mut carol, &g).await;
    assert_eq!(messages.len(), 3);
    for m in &messages {
        assert!(m.deleted, "{m:?}");
        assert_eq!(m.content, None, "the body is gone: {m:?}");
        assert!(m.reactions.is_empty(), "reactions went with it: {m:?}");
    }
    assert_eq!(
        messages
            .iter()
            .map(|m| m.sender.as_str())
            .collect::<Vec<_>>(),
        ["bob", "carol", "bob"],
        "the tombstones keep who sent what when"
    );

    // Live subscribers saw the deletions...
    let mut deleted = Vec::new();
    while deleted.len() < 3 {
        let ev = live.next_conv_event().await.event;
        if let Some(Kind::MessageDeleted(d)) = ev.kind {
            assert!(ev.seq > before);
            deleted.push(d.target);
        }
    }
    assert_eq!(deleted, [m1, m2, m3]);

    // ...and a replay of the whole conversation carries no body either:
    // not in the events that sent them, nor in the edit's.
    let mut replay = Sub::open(&mut carol, &origin()).await;
    let (events, _) = replay.until_caught_up().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    for e in &events {
        match &e.event.kind {
            Some(Kind::MessageSent(m)) => {
                assert!(m.deleted && m.content.is_none(), "{m:?}")
            }
            Some(Kind::MessageEdited(ed)) => assert_eq!(ed.content, None),
            _ => {}
        }
    }
    assert!(
        events
            .iter()
            .all(|e| !format!("{:?}", e.event).contains("secret")),
        "a deleted body survives in the replay"
    );

    // In a direct conversation nobody deletes the other's messages.
    let d = direct(&mut alice, "bob").await;
    let s = send(&mut alice, &d, "a1", "mine").await.seq;
    assert_code(
        bob.delete(pb::MessageRef {
            conversation_id: d.clone(),
            seq: s,
        })
        .await,
        Code::PermissionDenied,
        "the peer deletes in a direct conversation",
    );
    assert_eq!(body(&history(&mut bob, &d).await[0]), "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_are_one_per_user_and_are_set_and_cleared() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let seq = send(&mut alice, &conv, "m1", "lunch?").await.seq;
    let mut live = Sub::open(&mut alice, "").await;
    live.until_caught_up().await;
    let react = |emoji: &str| pb::ReactRequest {
        conversation_id: conv.clone(),
        seq,
        emoji: emoji.to_owned(),
    };
    let reactions = |m: &pb::Message| {
        m.reactions
            .iter()
            .map(|r| (r.user.clone(), r.emoji.clone()))
            .collect::<Vec<_>>()
    };
    let pair = |u: &str, e: &str| (u.to_owned(), e.to_owned());

    bob.react(react("👍")).await.expect("react");
    assert_eq!(
        reactions(&history(&mut alice, &conv).await[0]),
        [pair("bob", "👍")]
    );
    // A second reaction replaces the first.
    bob.react(react("❤️")).await.expect("react again");
    assert_eq!(
        reactions(&history(&mut alice, &conv).await[0]),
        [pair("bob", "❤️")]
    );
    alice.react(react("😂")).await.expect("react");
    assert_eq!(
        reactions(&history(&mut bob, &conv).await[0]),
        [pair("alice", "😂"), pair("bob", "❤️")]
    );
    // The same reaction again changes nothing.
    let same = bob.react(react("❤️")).await.expect("same").into_inner();
    assert_eq!(same.seq, 0, "no event");
    // An empty emoji clears; clearing twice changes nothing.
    let cleared = bob.react(react("")).await.expect("clear").into_inner();
    assert!(cleared.seq > 0);
    assert_eq!(
        reactions(&history(&mut bob, &conv).await[0]),
        [pair("alice", "😂")]
    );
    assert_eq!(
        bob.react(react("")).await.expect("clear").into_inner().seq,
        0
    );

    // The live subscriber saw each change, in order.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = live.next_conv_event().await.event;
        match ev.kind {
            Some(Kind::ReactionSet(r)) => {
                assert_eq!(r.target, seq);
                seen.push((ev.actor, r.emoji));
            }
            other => panic!("expected a reaction, got {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            pair("bob", "👍"),
            pair("bob", "❤️"),
            pair("alice", "😂"),
            pair("bob", ""),
        ]
    );
    live.assert_no_conv_event(Duration::from_millis(200)).await;

    assert_code(
        bob.react(react(&"🎉".repeat(20))).await,
        Code::InvalidArgument,
        "an over-long reaction",
    );
    assert_code(
        bob.react(pb::ReactRequest {
            conversation_id: conv.clone(),
            seq: 77,
            emoji: "👍".into(),
        })
        .await,
        Code::NotFound,
        "a reaction to a missing message",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_returns_the_original_seq_and_stores_nothing() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let mut live = Sub::open(&mut bob, "").await;
    live.until_caught_up().await;

    let first = send(&mut alice, &conv, "retry-me", "once").await;
    assert!(!first.duplicate);
    assert_eq!(live.next_conv_event().await.event.seq, first.seq);
    let last_seq = conversation(&mut alice, &conv).await.last_seq;
    let count = history(&mut alice, &conv).await.len();

    // The retry (even from another device, even with other content) is
    // answered with the original.
    let mut alice_laptop = cluster.client("alice", "laptop");
    for c in [&mut alice, &mut alice_laptop] {
        let retry = send(c, &conv, "retry-me", "twice?").await;
        assert_eq!(retry.seq, first.seq);
        assert_eq!(retry.timestamp_ms, first.timestamp_ms);
        assert!(retry.duplicate);
    }
    let messages = history(&mut alice, &conv).await;
    assert_eq!(messages.len(), count, "the retry stored a message");
    assert_eq!(body(&messages[0]), "once");
    assert_eq!(conversation(&mut alice, &conv).await.last_seq, last_seq);
    live.assert_no_conv_event(Duration::from_millis(200)).await;

    // Concurrent retries: one is stored, all get its seq.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = alice.clone();
        let conv = conv.clone();
        tasks.push(tokio::spawn(async move {
            send(&mut c, &conv, "racing", "one of eight").await
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    assert_eq!(replies.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(replies.iter().all(|r| r.seq == replies[0].seq));
    assert_eq!(history(&mut alice, &conv).await.len(), count + 1);

    // client_msg_id is the sender's own: bob may use the same one.
    let bobs = send(&mut bob, &conv, "retry-me", "mine").await;
    assert!(!bobs.duplicate);
    assert_ne!(bobs.seq, first.seq);
    assert_eq!(history(&mut alice, &conv).await.len(), count + 2);
}
