//! Who may call what, over gRPC: every conversation-scoped call by someone
//! who is not a member is `PERMISSION_DENIED` and changes nothing; a call
//! without a valid bearer token (missing, malformed, signed with another
//! key, expired, naming an invalid user) is `UNAUTHENTICATED` before any
//! handler runs.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::Role;
use tonic::{Code, Status};

/// Every conversation-scoped call `c` can make against `conv` (whose
/// message `seq` exists), by name.
async fn conversation_calls(
    c: &mut Client,
    conv: &str,
    seq: u64,
) -> Vec<(&'static str, Result<(), Status>)> {
    let conv = conv.to_owned();
    let msg = pb::MessageRef {
        conversation_id: conv.clone(),
        seq,
    };
    let receipt = pb::ReceiptRequest {
        conversation_id: conv.clone(),
        up_to: seq,
    };
    let members = |users: &[&str]| pb::MembersRequest {
        conversation_id: conv.clone(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
    };
    vec![
        (
            "GetConversation",
            c.get_conversation(pb::ConversationRequest {
                conversation_id: conv.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "Send",
            c.send(pb::SendRequest {
                conversation_id: conv.clone(),
                client_msg_id: "intruder".into(),
                content: Some(text("let me in")),
                reply_to: 0,
            })
            .await
            .map(drop),
        ),
        (
            "Edit",
            c.edit(pb::EditRequest {
                conversation_id: conv.clone(),
                seq,
                content: Some(text("rewritten")),
            })
            .await
            .map(drop),
        ),
        ("Delete", c.delete(msg.clone()).await.map(drop)),
        (
            "React",
            c.react(pb::ReactRequest {
                conversation_id: conv.clone(),
                seq,
                emoji: "👎".into(),
            })
            .await
            .map(drop),
        ),
        (
            "MarkDelivered",
            c.mark_delivered(receipt.clone()).await.map(drop),
        ),
        ("MarkRead", c.mark_read(receipt).await.map(drop)),
        ("MessageStatus", c.message_status(msg).await.map(drop)),
        (
            "History",
            c.history(pb::HistoryRequest {
                conversation_id: conv.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "AddMembers",
            c.add_members(members(&["mallory"])).await.map(drop),
        ),
        (
            "RemoveMembers",
            c.remove_members(members(&["bob"])).await.map(drop),
        ),
        (
            "Leave",
            c.leave(pb::ConversationRequest {
                conversation_id: conv.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "SetRole",
            c.set_role(pb::SetRoleRequest {
                conversation_id: conv.clone(),
                user: "mallory".into(),
                role: Role::Admin as i32,
            })
            .await
            .map(drop),
        ),
        (
            "SetTyping",
            c.set_typing(pb::TypingRequest {
                conversation_id: conv.clone(),
                typing: true,
            })
            .await
            .map(drop),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_call_by_a_non_member_is_permission_denied_and_changes_nothing() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut mallory = cluster.client("mallory", "phone");
    let d = direct(&mut alice, "bob").await;
    let g = group(&mut alice, "team", &["bob"]).await;
    let mut bobs = Sub::open(&mut bob, "").await;
    bobs.until_caught_up().await;

    for conv in [&d, &g] {
        let seq = send(&mut alice, conv, "m1", "private").await.seq;
        assert_eq!(bobs.next_conv_event().await.event.seq, seq);
        let before = conversation(&mut alice, conv).await;
        let messages = history(&mut alice, conv).await;

        let calls = conversation_calls(&mut mallory, conv, seq).await;
        assert_eq!(calls.len(), 14);
        for (name, r) in calls {
            assert_code(
                r,
                Code::PermissionDenied,
                &format!("{name} by a non-member of {conv}"),
            );
        }

        assert_eq!(
            conversation(&mut alice, conv).await,
            before,
            "{conv} changed"
        );
        assert_eq!(
            history(&mut alice, conv).await,
            messages,
            "{conv}'s history changed"
        );
    }
    // Nothing reached the members' stream either (typing included).
    bobs.assert_no_conv_event(std::time::Duration::from_millis(200))
        .await;
    // And mallory holds nothing.
    let inbox = mallory
        .inbox(pb::InboxRequest { limit: 0 })
        .await
        .expect("inbox")
        .into_inner();
    assert!(inbox.entries.is_empty());

    // A conversation that does not exist is not found, not denied.
    assert_code(
        mallory
            .get_conversation(pb::ConversationRequest {
                conversation_id: "g-00000000000000000000000000000000".into(),
            })
            .await,
        Code::NotFound,
        "a conversation nobody created",
    );
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

fn hs256(claims: &Claims<'_>, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encode a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_valid_token_is_unauthenticated() {
    let cluster = Cluster::one().await;
    let node = cluster.node();
    let mut alice = cluster.client("alice", "phone");
    let conv = direct(&mut alice, "bob").await;
    let seq = send(&mut alice, &conv, "m1", "hi").await.seq;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let other = missive_api::Auth::hs256(b"another secret, also 32+ bytes long!")
        .expect("secret")
        .mint("alice", None, 3600)
        .expect("mint");
    let good = node.chat.auth().mint("alice", None, 3600).expect("mint");
    let headers: Vec<(&str, Option<String>)> = vec![
        ("no authorization", None),
        ("an empty bearer", Some("Bearer ".into())),
        ("garbage", Some("Bearer not.a.token".into())),
        ("another scheme", Some(format!("Basic {good}"))),
        ("the token alone", Some(good.clone())),
        ("another key", Some(format!("Bearer {other}"))),
        (
            "an expired token",
            Some(format!(
                "Bearer {}",
                hs256(
                    &Claims {
                        sub: "alice",
                        exp: now - 3600
                    },
                    JWT_SECRET
                )
            )),
        ),
        (
            "an invalid user id",
            Some(format!(
                "Bearer {}",
                hs256(
                    &Claims {
                        sub: "alice smith",
                        exp: now + 3600
                    },
                    JWT_SECRET
                )
            )),
        ),
    ];
    for (what, header) in headers {
        let mut c = node.client_with(header.as_deref());
        let mut calls = conversation_calls(&mut c, &conv, seq).await;
        calls.push((
            "CreateDirect",
            c.create_direct(pb::CreateDirectRequest { peer: "bob".into() })
                .await
                .map(drop),
        ));
        calls.push((
            "Inbox",
            c.inbox(pb::InboxRequest { limit: 0 }).await.map(drop),
        ));
        calls.push((
            "PublishKeys",
            c.publish_keys(pb::PublishKeys::default()).await.map(drop),
        ));
        calls.push((
            "Subscribe",
            c.subscribe(pb::SubscribeRequest {
                since: String::new(),
            })
            .await
            .map(drop),
        ));
        for (name, r) in calls {
            assert_code(r, Code::Unauthenticated, &format!("{name} with {what}"));
        }
    }
    // Nothing changed; the right token still works.
    let mut again = node.client_with(Some(&format!("Bearer {good}")));
    let messages = history(&mut again, &conv).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(body(&messages[0]), "hi");
}
