//! Bounds on input over gRPC: text over 64 KiB, pages over 200, malformed
//! ids, too many members in one call and the like are `INVALID_ARGUMENT`
//! and change nothing; a group at its member bound refuses more with
//! `RESOURCE_EXHAUSTED` (a bound of the group's state, not of the call);
//! writes past a user's rate are `RESOURCE_EXHAUSTED` after the burst, for
//! that user only.

use crate::support::*;
use missive_api::limits::{
    MAX_GROUP_MEMBERS, MAX_MEMBERS_PER_CALL, MAX_PAGE, MAX_PRESENCE_USERS, MAX_TEXT_BYTES,
    WRITE_BURST, WRITES_PER_SECOND,
};
use missive_proto::v1 as pb;
use tokio::time::Instant;
use tonic::{Code, Status};

fn send_req(conv: &str, id: &str, content: pb::Content) -> pb::SendRequest {
    pb::SendRequest {
        conversation_id: conv.to_owned(),
        client_msg_id: id.to_owned(),
        content: Some(content),
        reply_to: 0,
    }
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_past_its_bounds_is_invalid_argument_and_changes_nothing() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let conv = direct(&mut alice, "bob").await;
    let g = group(&mut alice, "team", &["bob"]).await;

    // Exactly at the bounds is fine.
    let at = send(&mut alice, &conv, "max", &"x".repeat(MAX_TEXT_BYTES)).await;
    assert_eq!(at.seq, 2);
    alice
        .history(pb::HistoryRequest {
            conversation_id: conv.clone(),
            limit: MAX_PAGE,
            ..Default::default()
        })
        .await
        .expect("a page of the largest size");

    let before = (
        conversation(&mut alice, &conv).await,
        conversation(&mut alice, &g).await,
        alice
            .inbox(pb::InboxRequest { limit: 0 })
            .await
            .expect("inbox")
            .into_inner(),
    );
    let media = |id: &str, mime: &str| pb::Content {
        media: Some(pb::MediaRef {
            media_id: id.into(),
            mime_type: mime.into(),
            size: 1,
            name: "f".into(),
        }),
        ..Default::default()
    };
    let ciphertext = |user: &str, body: Vec<u8>| pb::Content {
        ciphertexts: vec![pb::Ciphertext {
            user: user.into(),
            device: "d".into(),
            body,
        }],
        ..Default::default()
    };
    let c = &mut alice;
    let cases: Vec<(&str, Result<(), Status>)> = vec![
        (
            "text over 64 KiB",
            c.send(send_req(
                &conv,
                "big",
                text(&"x".repeat(MAX_TEXT_BYTES + 1)),
            ))
            .await
            .map(drop),
        ),
        (
            "an edit over 64 KiB",
            c.edit(pb::EditRequest {
                conversation_id: conv.clone(),
                seq: 2,
                content: Some(text(&"y".repeat(MAX_TEXT_BYTES + 1))),
            })
            .await
            .map(drop),
        ),
        (
            "a page over 200",
            c.history(pb::HistoryRequest {
                conversation_id: conv.clone(),
                limit: MAX_PAGE + 1,
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "a conversation id with a space",
            c.send(send_req("d-not an id", "m", text("hi")))
                .await
                .map(drop),
        ),
        (
            "an empty conversation id",
            c.send(send_req("", "m", text("hi"))).await.map(drop),
        ),
        (
            "a conversation id over 64 bytes",
            c.history(pb::HistoryRequest {
                conversation_id: "g".repeat(65),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "an empty client_msg_id",
            c.send(send_req(&conv, "", text("hi"))).await.map(drop),
        ),
        (
            "a client_msg_id over 64 bytes",
            c.send(send_req(&conv, &"i".repeat(65), text("hi")))
                .await
                .map(drop),
        ),
        (
            "no content",
            c.send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: "none".into(),
                content: None,
                reply_to: 0,
            })
            .await
            .map(drop),
        ),
        (
            "empty content",
            c.send(send_req(&conv, "empty", pb::Content::default()))
                .await
                .map(drop),
        ),
        (
            "a media id with a slash",
            c.send(send_req(
                &conv,
                "media",
                media("../etc/passwd", "text/plain"),
            ))
            .await
            .map(drop),
        ),
        (
            "media without a mime type",
            c.send(send_req(&conv, "media", media("m1", "")))
                .await
                .map(drop),
        ),
        (
            "a ciphertext for an invalid user",
            c.send(send_req(&conv, "ct", ciphertext("bob\0", vec![1])))
                .await
                .map(drop),
        ),
        (
            "an empty ciphertext",
            c.send(send_req(&conv, "ct", ciphertext("bob", Vec::new())))
                .await
                .map(drop),
        ),
        (
            "an invalid peer",
            c.create_direct(pb::CreateDirectRequest {
                peer: "bob/../admin".into(),
            })
            .await
            .map(drop),
        ),
        (
            "an invalid member",
            c.create_group(pb::CreateGroupRequest {
                name: "x".into(),
                members: vec!["bob".into(), "not valid".into()],
            })
            .await
            .map(drop),
        ),
        (
            "a member named twice",
            c.create_group(pb::CreateGroupRequest {
                name: "x".into(),
                members: vec!["bob".into(), "bob".into()],
            })
            .await
            .map(drop),
        ),
        (
            "a group name over 256 bytes",
            c.create_group(pb::CreateGroupRequest {
                name: "n".repeat(257),
                members: vec!["bob".into()],
            })
            .await
            .map(drop),
        ),
        (
            "too many members to create a group with",
            c.create_group(pb::CreateGroupRequest {
                name: "big".into(),
                members: users("m", MAX_MEMBERS_PER_CALL + 1),
            })
            .await
            .map(drop),
        ),
        (
            "too many members to add at once",
            c.add_members(pb::MembersRequest {
                conversation_id: g.clone(),
                users: users("m", MAX_MEMBERS_PER_CALL + 1),
            })
            .await
            .map(drop),
        ),
        (
            "an invalid user to add",
            c.add_members(pb::MembersRequest {
                conversation_id: g.clone(),
                users: vec![String::new()],
            })
            .await
            .map(drop),
        ),
        (
            "an over-long reaction",
            c.react(pb::ReactRequest {
                conversation_id: conv.clone(),
                seq: 2,
                emoji: "x".repeat(33),
            })
            .await
            .map(drop),
        ),
        (
            "too many users in a presence query",
            c.presence(pb::PresenceRequest {
                users: users("u", MAX_PRESENCE_USERS + 1),
            })
            .await
            .map(drop),
        ),
        (
            "an invalid user whose keys to claim",
            c.claim_keys(pb::ClaimKeys {
                user: "bob\n".into(),
            })
            .await
            .map(drop),
        ),
        (
            "a push target that is not http",
            c.set_push_target(pb::SetPushTarget {
                url: "ftp://example.com/hook".into(),
                token: "t".into(),
            })
            .await
            .map(drop),
        ),
    ];
    for (what, r) in cases {
        assert_code(r, Code::InvalidArgument, what);
    }

    let after = (
        conversation(&mut alice, &conv).await,
        conversation(&mut alice, &g).await,
        alice
            .inbox(pb::InboxRequest { limit: 0 })
            .await
            .expect("inbox")
            .into_inner(),
    );
    assert_eq!(before, after, "a refused call changed something");
    let m = &history(&mut alice, &conv).await;
    assert_eq!(m.len(), 1);
    assert_eq!(
        body(&m[0]).len(),
        MAX_TEXT_BYTES,
        "the refused edit changed it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_refuses_more_members() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let per_call = MAX_MEMBERS_PER_CALL;
    let g = alice
        .create_group(pb::CreateGroupRequest {
            name: "everyone".into(),
            members: users("m", per_call - 1),
        })
        .await
        .expect("create")
        .into_inner()
        .conversation_id;
    let mut next = per_call - 1;
    let total = MAX_GROUP_MEMBERS as usize;
    while next + 1 < total {
        let n = per_call.min(total - 1 - next);
        let batch: Vec<String> = (next..next + n).map(|i| format!("m{i}")).collect();
        alice
            .add_members(pb::MembersRequest {
                conversation_id: g.clone(),
                users: batch,
            })
            .await
            .expect("add members");
        next += n;
    }
    let full = conversation(&mut alice, &g).await;
    assert_eq!(full.members.len(), total);

    assert_code(
        alice
            .add_members(pb::MembersRequest {
                conversation_id: g.clone(),
                users: vec!["one-too-many".into()],
            })
            .await,
        Code::ResourceExhausted,
        "a member past the group's bound",
    );
    assert_eq!(
        conversation(&mut alice, &g).await,
        full,
        "the refusal changed the group"
    );

    // Room made, room taken.
    alice
        .remove_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["m0".into()],
        })
        .await
        .expect("remove");
    alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["one-too-many".into()],
        })
        .await
        .expect("add into the room made");
    assert_eq!(conversation(&mut alice, &g).await.members.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_per_user_rate_are_resource_exhausted_after_the_burst() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let conv = direct(&mut alice, "bob").await;
    let base = history(&mut alice, &conv).await.len();

    // Far more than the burst, at once.
    let attempts = 300;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..attempts {
        // Over a few connections, like several devices.
        let mut c = if i % 3 == 0 {
            alice.clone()
        } else {
            cluster.client("alice", &format!("device{}", i % 3))
        };
        let conv = conv.clone();
        tasks.push(tokio::spawn(async move {
            c.send(send_req(&conv, &format!("burst-{i}"), text("spam")))
                .await
                .map(drop)
        }));
    }
    let (mut ok, mut exhausted) = (0usize, 0usize);
    for t in tasks {
        match t.await.expect("send task") {
            Ok(()) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => exhausted += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The first call (the create) took a token too.
    let allowed = WRITE_BURST + WRITES_PER_SECOND * elapsed;
    assert!(
        (ok as f64) <= allowed,
        "{ok} writes in {elapsed:.2} s; at most {allowed:.0} allowed"
    );
    assert!(
        ok as f64 >= WRITE_BURST - 1.0,
        "the burst was not allowed: {ok}"
    );
    assert_eq!(ok + exhausted, attempts);
    assert!(exhausted > 0);
    // Refused writes stored nothing.
    let page = alice
        .history(pb::HistoryRequest {
            conversation_id: conv.clone(),
            limit: MAX_PAGE,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(page.messages.len(), base + ok);

    // Others are not slowed down by alice.
    send(&mut bob, &conv, "b1", "I can still talk").await;
    // And alice's bucket refills.
    eventually("alice's bucket to refill", || {
        let mut c = alice.clone();
        let conv = conv.clone();
        async move {
            c.send(send_req(&conv, "after", text("calmer now")))
                .await
                .ok()
        }
    })
    .await;
}
