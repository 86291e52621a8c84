//! Conversations over gRPC: a direct conversation is one per pair whoever
//! creates it; a group starts with its creator as admin; admins (and only
//! admins) add and remove members and set roles; any member may leave, and
//! loses access with it.

use crate::support::*;
use missive_proto::v1 as pb;
use missive_proto::v1::{ConversationKind, Role};
use tonic::Code;

fn role_of(c: &pb::Conversation, user: &str) -> Option<Role> {
    c.members
        .iter()
        .find(|m| m.user == user)
        .map(|m| Role::try_from(m.role).expect("a known role"))
}

fn users(c: &pb::Conversation) -> Vec<&str> {
    c.members.iter().map(|m| m.user.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_conversation_is_one_per_pair_whoever_creates_it() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "laptop");

    let first = alice
        .create_direct(pb::CreateDirectRequest { peer: "bob".into() })
        .await
        .expect("alice creates")
        .into_inner();
    assert_eq!(first.kind, ConversationKind::Direct as i32);
    assert_eq!(users(&first), ["alice", "bob"]);
    assert_eq!(
        first.last_seq, 1,
        "creation is the conversation's first event"
    );

    let from_bob = bob
        .create_direct(pb::CreateDirectRequest {
            peer: "alice".into(),
        })
        .await
        .expect("bob creates")
        .into_inner();
    assert_eq!(from_bob.conversation_id, first.conversation_id);
    assert_eq!(from_bob.last_seq, 1, "creating it again stores nothing");
    let again = direct(&mut alice, "bob").await;
    assert_eq!(again, first.conversation_id);
    assert_eq!(conversation(&mut bob, &again).await.last_seq, 1);

    // Another pair, another conversation.
    let with_carol = direct(&mut alice, "carol").await;
    assert_ne!(with_carol, first.conversation_id);

    // Not with oneself; not with an invalid id.
    assert_code(
        alice
            .create_direct(pb::CreateDirectRequest {
                peer: "alice".into(),
            })
            .await,
        Code::InvalidArgument,
        "a direct conversation with oneself",
    );
    assert_code(
        alice
            .create_direct(pb::CreateDirectRequest {
                peer: "not an id".into(),
            })
            .await,
        Code::InvalidArgument,
        "a direct conversation with a bad id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_starts_with_its_creator_as_admin_and_the_rest_as_members() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut dave = cluster.client("dave", "phone");

    let g = alice
        .create_group(pb::CreateGroupRequest {
            name: "team".into(),
            // The creator named again, and in any order: one member each.
            members: vec!["carol".into(), "bob".into(), "alice".into()],
        })
        .await
        .expect("create a group")
        .into_inner();
    assert_eq!(g.kind, ConversationKind::Group as i32);
    assert_eq!(g.name, "team");
    assert!(g.conversation_id.starts_with("g-"));
    assert_eq!(users(&g), ["alice", "bob", "carol"]);
    assert_eq!(role_of(&g, "alice"), Some(Role::Admin));
    assert_eq!(role_of(&g, "bob"), Some(Role::Member));
    assert_eq!(role_of(&g, "carol"), Some(Role::Member));

    // Members see it; others do not.
    assert_eq!(conversation(&mut bob, &g.conversation_id).await, g);
    assert_code(
        dave.get_conversation(pb::ConversationRequest {
            conversation_id: g.conversation_id.clone(),
        })
        .await,
        Code::PermissionDenied,
        "a stranger reads a group",
    );

    // Two groups with the same name and members are two groups.
    let other = group(&mut alice, "team", &["bob", "carol"]).await;
    assert_ne!(other, g.conversation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_and_remove_members_and_members_cannot() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let mut carol = cluster.client("carol", "phone");
    let mut dave = cluster.client("dave", "phone");
    let g = group(&mut alice, "team", &["bob", "carol"]).await;

    let ack = alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["dave".into()],
        })
        .await
        .expect("an admin adds")
        .into_inner();
    assert_eq!((ack.conversation_id.as_str(), ack.seq), (g.as_str(), 2));
    let c = conversation(&mut dave, &g).await;
    assert_eq!(users(&c), ["alice", "bob", "carol", "dave"]);
    assert_eq!(role_of(&c, "dave"), Some(Role::Member));

    // A member neither adds nor removes others.
    assert_code(
        bob.add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["eve".into()],
        })
        .await,
        Code::PermissionDenied,
        "a member adds",
    );
    assert_code(
        bob.remove_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["carol".into()],
        })
        .await,
        Code::PermissionDenied,
        "a member removes another",
    );
    assert_eq!(
        conversation(&mut alice, &g).await.last_seq,
        2,
        "refusals store nothing"
    );

    // The admin removes carol: she loses access.
    alice
        .remove_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["carol".into()],
        })
        .await
        .expect("an admin removes");
    assert_eq!(
        users(&conversation(&mut alice, &g).await),
        ["alice", "bob", "dave"]
    );
    assert_code(
        carol
            .get_conversation(pb::ConversationRequest {
                conversation_id: g.clone(),
            })
            .await,
        Code::PermissionDenied,
        "a removed member reads",
    );
    assert_code(
        carol
            .send(pb::SendRequest {
                conversation_id: g.clone(),
                client_msg_id: "m1".into(),
                content: Some(text("still here?")),
                reply_to: 0,
            })
            .await,
        Code::PermissionDenied,
        "a removed member sends",
    );

    // Adding someone already in, or removing someone not in, changes nothing.
    let noop = alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["bob".into()],
        })
        .await
        .expect("adding a member again")
        .into_inner();
    assert_eq!(noop.seq, 0, "no event");
    assert_eq!(conversation(&mut alice, &g).await.last_seq, 3);

    // Re-added, carol is back.
    alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec!["carol".into()],
        })
        .await
        .expect("re-add");
    assert_eq!(
        users(&conversation(&mut carol, &g).await),
        ["alice", "bob", "carol", "dave"]
    );

    // A direct conversation's members never change.
    let d = direct(&mut alice, "bob").await;
    assert_code(
        alice
            .add_members(pb::MembersRequest {
                conversation_id: d,
                users: vec!["carol".into()],
            })
            .await,
        Code::FailedPrecondition,
        "adding to a direct conversation",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaves_and_loses_access() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let g = group(&mut alice, "team", &["bob", "carol"]).await;
    let mut watch = Sub::open(&mut alice, "").await;
    watch.until_caught_up().await;

    let ack = bob
        .leave(pb::ConversationRequest {
            conversation_id: g.clone(),
        })
        .await
        .expect("a member leaves")
        .into_inner();
    assert_eq!(ack.seq, 2);
    let ev = watch.next_conv_event().await.event;
    assert_eq!(ev.seq, 2);
    assert_eq!(ev.actor, "bob");
    match ev.kind {
        Some(pb::chat_event::Kind::MembersChanged(mc)) => {
            assert!(mc.added.is_empty());
            assert_eq!(mc.removed, ["bob"]);
        }
        other => panic!("expected members changed, got {other:?}"),
    }
    assert_eq!(
        users(&conversation(&mut alice, &g).await),
        ["alice", "carol"]
    );

    for (what, r) in [
        (
            "history after leaving",
            bob.history(pb::HistoryRequest {
                conversation_id: g.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "sending after leaving",
            bob.send(pb::SendRequest {
                conversation_id: g.clone(),
                client_msg_id: "x".into(),
                content: Some(text("hello?")),
                reply_to: 0,
            })
            .await
            .map(|_| ()),
        ),
        (
            "leaving twice",
            bob.leave(pb::ConversationRequest {
                conversation_id: g.clone(),
            })
            .await
            .map(|_| ()),
        ),
    ] {
        assert_code(r, Code::PermissionDenied, what);
    }

    // The group is gone from bob's inbox, not from alice's.
    let inbox = |e: &pb::InboxResponse| {
        e.entries
            .iter()
            .filter_map(|e| e.conversation.as_ref())
            .map(|c| c.conversation_id.clone())
            .collect::<Vec<_>>()
    };
    let bobs = bob
        .inbox(pb::InboxRequest { limit: 0 })
        .await
        .expect("inbox")
        .into_inner();
    assert!(!inbox(&bobs).contains(&g));
    let alices = alice
        .inbox(pb::InboxRequest { limit: 0 })
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(inbox(&alices), std::slice::from_ref(&g));

    // The last admin may leave too: then nobody administers the group,
    // but its members keep talking.
    alice
        .leave(pb::ConversationRequest {
            conversation_id: g.clone(),
        })
        .await
        .expect("the admin leaves");
    let mut carol = cluster.client("carol", "phone");
    send(&mut carol, &g, "c1", "anyone?").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_set_roles() {
    let cluster = Cluster::one().await;
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "phone");
    let g = group(&mut alice, "team", &["bob", "carol"]).await;
    let set = |conv: &str, user: &str, role: Role| pb::SetRoleRequest {
        conversation_id: conv.to_owned(),
        user: user.to_owned(),
        role: role as i32,
    };

    assert_code(
        bob.set_role(set(&g, "bob", Role::Admin)).await,
        Code::PermissionDenied,
        "a member promotes itself",
    );
    assert_code(
        bob.set_role(set(&g, "carol", Role::Admin)).await,
        Code::PermissionDenied,
        "a member promotes another",
    );
    assert_eq!(
        role_of(&conversation(&mut bob, &g).await, "bob"),
        Some(Role::Member)
    );

    let ack = alice
        .set_role(set(&g, "bob", Role::Admin))
        .await
        .expect("an admin promotes")
        .into_inner();
    assert_eq!(ack.seq, 2);
    assert_eq!(
        role_of(&conversation(&mut bob, &g).await, "bob"),
        Some(Role::Admin)
    );
    // Now bob administers: he adds, and demotes alice, who no longer can.
    bob.add_members(pb::MembersRequest {
        conversation_id: g.clone(),
        users: vec!["dave".into()],
    })
    .await
    .expect("the new admin adds");
    bob.set_role(set(&g, "alice", Role::Member))
        .await
        .expect("the new admin demotes");
    assert_code(
        alice
            .add_members(pb::MembersRequest {
                conversation_id: g.clone(),
                users: vec!["eve".into()],
            })
            .await,
        Code::PermissionDenied,
        "a demoted admin adds",
    );

    assert_code(
        bob.set_role(set(&g, "carol", Role::Unspecified)).await,
        Code::InvalidArgument,
        "an unspecified role",
    );
    assert_code(
        bob.set_role(set(&g, "zed", Role::Admin)).await,
        Code::NotFound,
        "the role of a non-member",
    );
    let d = direct(&mut alice, "bob").await;
    assert_code(
        alice.set_role(set(&d, "bob", Role::Admin)).await,
        Code::FailedPrecondition,
        "roles in a direct conversation",
    );
}
