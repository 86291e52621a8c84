//! Presence and typing over gRPC: a user with a live `Subscribe` is online
//! to anyone sharing a conversation with it, and goes offline, with when it
//! was last seen, once its last stream is gone; strangers cannot ask.
//! Typing reaches the other members' subscriptions and is never stored:
//! not in history, not in the conversation's seqs, not replayed on resume.

use std::time::Duration;

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::chat_event::Kind;
use tonic::Code;

async fn presence_of(c: &mut Client, user: &str) -> pb::PresenceChanged {
    let mut r = c
        .presence(pb::PresenceRequest {
            users: vec![user.to_owned()],
        })
        .await
        .expect("presence")
        .into_inner();
    assert_eq!(r.users.len(), 1);
    r.users.remove(0)
}

/// Waits until `viewer` sees `user` online (or offline).
async fn wait_presence(viewer: &Client, user: &str, online: bool) -> pb::PresenceChanged {
    eventually(&format!("{user} online={online}"), || {
        let mut c = viewer.clone();
        async move {
            let p = presence_of(&mut c, user).await;
            (p.online == online).then_some(p)
        }
    })
    .await
}

/// The next presence change on `sub`.
async fn next_presence(sub: &mut Sub) -> pb::PresenceChanged {
    match sub.next_where(is_presence).await.event.kind {
        Some(Kind::Presence(p)) => p,
        _ => unreachable!("filtered to presence"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_user_is_online_to_its_contacts_and_offline_with_last_seen_when_gone() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut bob_laptop = cluster.client("bob", "laptop");
    let mut carol = cluster.client("carol", "phone");
    direct(&mut alice, "bob").await;

    let never = presence_of(&mut alice, "bob").await;
    assert_eq!(
        (never.user.as_str(), never.online, never.last_seen_ms),
        ("bob", false, 0)
    );

    let mut watch = Sub::open(&mut alice, "").await;
    watch.until_caught_up().await;
    let mut phone = Sub::open(&mut bob, "").await;
    phone.until_caught_up().await;
    let online = wait_presence(&alice, "bob", true).await;
    assert!(online.last_seen_ms > 0);
    // Alice's stream told her too (her own coming online may come first).
    let p = loop {
        let p = next_presence(&mut watch).await;
        if p.user == "bob" {
            break p;
        }
    };
    assert!(p.online);

    // Two devices: closing one keeps bob online.
    let mut laptop = Sub::open(&mut bob_laptop, "").await;
    laptop.until_caught_up().await;
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        presence_of(&mut alice, "bob").await.online,
        "bob still has a stream"
    );

    // The last one gone: offline, last seen when it went.
    drop(laptop);
    let offline = wait_presence(&alice, "bob", false).await;
    assert!(offline.last_seen_ms >= online.last_seen_ms);
    let p = loop {
        let p = next_presence(&mut watch).await;
        if p.user == "bob" && !p.online {
            break p;
        }
    };
    assert_eq!(p.last_seen_ms, offline.last_seen_ms);

    // A stranger may not ask; one may always ask about oneself.
    assert_code(
        carol
            .presence(pb::PresenceRequest {
                users: vec!["bob".into()],
            })
            .await,
        Code::PermissionDenied,
        "a stranger's presence",
    );
    assert_code(
        carol
            .presence(pb::PresenceRequest {
                users: vec!["carol".into(), "bob".into()],
            })
            .await,
        Code::PermissionDenied,
        "a stranger among others",
    );
    assert_eq!(presence_of(&mut carol, "carol").await.user, "carol");
    // Sharing a group is enough.
    group(&mut carol, "g", &["bob"]).await;
    assert!(!presence_of(&mut carol, "bob").await.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_at_once_still_ends_offline() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    direct(&mut alice, "bob").await;
    // Subscribe and hang up at once, several times: however the online and
    // offline transitions race, bob must end offline.
    for _ in 0..5 {
        let mut sub = Sub::open(&mut bob, "").await;
        sub.until_caught_up().await;
        drop(sub);
    }
    wait_presence(&alice, "bob", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !presence_of(&mut alice, "bob").await.online,
        "bob came back online"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_other_members_live_and_is_never_stored() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let g = group(&mut alice, "team", &["bob"]).await;
    let seq = send(&mut alice, &g, "m1", "hi").await.seq;
    // A conversation of carol's: her stream must not get bob's typing.
    direct(&mut carol, "alice").await;

    let mut bobs = Sub::open(&mut bob, "").await;
    let (_, before) = bobs.until_caught_up().await;
    let mut alices = Sub::open(&mut alice, "").await;
    alices.until_caught_up().await;
    let mut carols = Sub::open(&mut carol, "").await;
    carols.until_caught_up().await;
    // Let the online transitions pass, so the tokens below only move for
    // what the test does.
    for user in ["alice", "bob", "carol"] {
        wait_presence(&alice, user, true).await;
    }
    let last = bobs
        .drain(Duration::from_millis(200))
        .await
        .expect("bob's stream saw bob and alice come online");

    for typing in [true, false] {
        alice
            .set_typing(pb::TypingRequest {
                conversation_id: g.clone(),
                typing,
            })
            .await
            .expect("typing");
        let ev = bobs.next_conv_event().await;
        assert_eq!(ev.event.conversation_id, g);
        assert_eq!(ev.event.seq, 0, "typing takes no seq");
        match &ev.event.kind {
            Some(Kind::Typing(t)) => assert_eq!((t.user.as_str(), t.typing), ("alice", typing)),
            other => panic!("expected typing, got {other:?}"),
        }
        assert_eq!(ev.token, last, "typing has no position: the token stays");
    }
    // Not echoed to the typist, not sent to non-members.
    alices
        .assert_no_conv_event(Duration::from_millis(200))
        .await;
    carols.assert_no_conv_event(Duration::from_millis(1)).await;

    // Not stored.
    assert_eq!(conversation(&mut bob, &g).await.last_seq, seq);
    assert_eq!(history(&mut bob, &g).await.len(), 1);
    drop(bobs);
    let mut again = Sub::open(&mut bob, &before).await;
    let (replayed, _) = again.until_caught_up().await;
    assert!(
        replayed
            .iter()
            .all(|e| !matches!(e.event.kind, Some(Kind::Typing(_)))),
        "typing replayed: {replayed:?}"
    );
    assert!(
        replayed.is_empty(),
        "nothing was stored since: {replayed:?}"
    );

    // Typing still goes live after the resume, and a message after it
    // comes with a seq.
    alice
        .set_typing(pb::TypingRequest {
            conversation_id: g.clone(),
            typing: true,
        })
        .await
        .expect("typing");
    assert!(matches!(
        again.next_conv_event().await.event.kind,
        Some(Kind::Typing(_))
    ));
    let next = send(&mut alice, &g, "m2", "done typing").await.seq;
    assert_eq!(next, seq + 1);
    assert_eq!(again.next_conv_event().await.event.seq, next);
}
