//! The log is the source of truth: dropping a node's projection stores and
//! replaying its log gives byte-identical projections.
//!
//! A restart appends a blank entry of the new leader's term to every
//! partition, so a store that was kept and one rebuilt from the log are
//! compared at the same position: the stopped node's directory is copied;
//! the copy restarts with its projections deleted, the original with its
//! projections kept; both make the same election from the same vote and
//! apply the same blank entries, and their dumps — every row of every
//! table, the applied position included — must be equal. The kept store
//! must also equal the one before the restart in every row but its
//! applied position.
//!
//! With a snapshot taken mid-way, the rebuilt store starts from the
//! snapshot and applies the log after it.
//!
//! The offline rebuild (`missive log replay`) of the stopped node's
//! directory must equal its stores too, row for row and position
//! included, in small batches and in its default ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use missive_api::chat::PROJECTIONS_FILE;
use missive_api::offline::{DEFAULT_BATCH, Source, StopAt, rebuild_partition};
use missive_api::store::{self, Row, Store};
use missive_proto::v1 as pb;
use missive_raft::node::partition_dir;

/// Chat traffic touching every projection table, with refusals and a
/// retry among it. `round` keeps the ids of two rounds apart.
async fn traffic(cluster: &Cluster, round: u32) {
    let mut alice = cluster.client("alice", "phone");
    let mut bob = cluster.client("bob", "laptop");
    let mut carol = cluster.client("carol", "phone");
    let d = direct(&mut alice, "bob").await;
    let g = group(&mut alice, &format!("round {round}"), &["bob", "carol"]).await;

    // Presence transitions (logged), through live streams.
    let mut subs = Vec::new();
    for c in [&mut bob, &mut carol] {
        let mut sub = Sub::open(c, "").await;
        sub.until_caught_up().await;
        subs.push(sub);
    }

    for i in 0..6 {
        let id = format!("r{round}-{i}");
        send(&mut alice, &d, &id, &format!("direct {i}")).await;
        send(&mut bob, &g, &id, &format!("group {i}")).await;
    }
    // A retry stores nothing; refusals store nothing.
    send(&mut alice, &d, &format!("r{round}-0"), "retried").await;
    let _ = carol
        .edit(pb::EditRequest {
            conversation_id: g.clone(),
            seq: 2,
            content: Some(text("not hers")),
        })
        .await
        .expect_err("only the sender edits");
    let _ = bob
        .mark_read(pb::ReceiptRequest {
            conversation_id: d.clone(),
            up_to: 10_000,
        })
        .await
        .expect_err("past the end");

    let last = history(&mut bob, &g).await.last().expect("messages").seq;
    bob.edit(pb::EditRequest {
        conversation_id: g.clone(),
        seq: last,
        content: Some(text("edited")),
    })
    .await
    .expect("edit");
    carol
        .react(pb::ReactRequest {
            conversation_id: g.clone(),
            seq: last,
            emoji: "🎉".into(),
        })
        .await
        .expect("react");
    alice
        .delete(pb::MessageRef {
            conversation_id: g.clone(),
            seq: 2,
        })
        .await
        .expect("an admin deletes");
    bob.mark_delivered(pb::ReceiptRequest {
        conversation_id: d.clone(),
        up_to: 3,
    })
    .await
    .expect("delivered");
    carol
        .mark_read(pb::ReceiptRequest {
            conversation_id: g.clone(),
            up_to: last,
        })
        .await
        .expect("read");
    alice
        .add_members(pb::MembersRequest {
            conversation_id: g.clone(),
            users: vec![format!("dave{round}")],
        })
        .await
        .expect("add");
    alice
        .set_role(pb::SetRoleRequest {
            conversation_id: g.clone(),
            user: "bob".into(),
            role: pb::Role::Admin as i32,
        })
        .await
        .expect("promote");
    carol
        .leave(pb::ConversationRequest {
            conversation_id: g.clone(),
        })
        .await
        .expect("leave");

    // The key directory and push targets.
    bob.publish_keys(pb::PublishKeys {
        identity_key: b"identity".to_vec(),
        signed_prekey_id: round as u64,
        signed_prekey: b"spk".to_vec(),
        signed_prekey_signature: b"sig".to_vec(),
        one_time_keys: (0..5)
            .map(|i| pb::OneTimeKey {
                key_id: round as u64 * 100 + i,
                public_key: vec![i as u8; 32],
            })
            .collect(),
        last_resort_key: Some(pb::OneTimeKey {
            key_id: 9_999,
            public_key: vec![9; 32],
        }),
    })
    .await
    .expect("publish keys");
    alice
        .claim_keys(pb::ClaimKeys { user: "bob".into() })
        .await
        .expect("claim");
    // A push target of a user in no conversation: the table is written,
    // and no notification (with its retries) runs in the background.
    cluster
        .client("zed", "phone")
        .set_push_target(pb::SetPushTarget {
            url: format!("http://127.0.0.1:9/hook/{round}"),
            token: "device-token".into(),
        })
        .await
        .expect("push target");

    drop(subs);
    // Wait for the offline transitions, so the log ends quiet.
    for user in ["bob", "carol"] {
        // Asked by the user itself: carol left the only group she shared.
        let me = cluster.client(user, "probe");
        eventually(&format!("{user} offline"), || {
            let mut a = me.clone();
            async move {
                let p = a
                    .presence(pb::PresenceRequest {
                        users: vec![user.into()],
                    })
                    .await
                    .ok()?
                    .into_inner();
                (!p.users[0].online).then_some(())
            }
        })
        .await;
    }
}

/// Each partition's last log index on `node`.
fn last_indexes(node: &TestNode) -> Vec<u64> {
    let n = node.chat.node();
    (0..n.partitions())
        .map(|p| n.metrics(p).expect("partition").last_log_index.unwrap_or(0))
        .collect()
}

/// Waits until nothing more is proposed on `node` (the push notifier
/// advances its cursor after the last messages) and everything is
/// applied; the last indexes then.
async fn quiet(node: &TestNode) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = last_indexes(node);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let n = node.chat.node();
        let applied: Vec<u64> = (0..n.partitions())
            .map(|p| {
                n.metrics(p)
                    .expect("partition")
                    .last_applied
                    .map_or(0, |l| l.index)
            })
            .collect();
        let now = last_indexes(node);
        if now == last && applied == now {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never went quiet"
        );
        last = now;
    }
}

/// Waits until every partition of `node` has a log past `past` and has
/// applied all of it.
async fn settled(node: &TestNode, past: &[u64]) -> Vec<u64> {
    eventually("every partition to apply its whole log", || {
        let n = node.chat.node();
        let done = (0..n.partitions()).all(|p| {
            let m = n.metrics(p).expect("partition");
            let last = m.last_log_index.unwrap_or(0);
            m.current_leader == Some(n.id())
                && last > past.get(p as usize).copied().unwrap_or(0)
                && m.last_applied.map(|l| l.index) == Some(last)
        });
        async move { done.then_some(()) }
    })
    .await;
    last_indexes(node)
}

fn projection_files(data: &Path) -> Vec<PathBuf> {
    (0..PARTITIONS)
        .map(|p| partition_dir(data, p).join(PROJECTIONS_FILE))
        .collect()
}

/// Every partition's dump, read from the files of a stopped node.
fn dumps(data: &Path) -> Vec<Vec<Row>> {
    projection_files(data)
        .iter()
        .map(|f| {
            Store::open(f)
                .unwrap_or_else(|e| panic!("open {}: {e}", f.display()))
                .dump()
                .expect("dump")
        })
        .collect()
}

/// Stops the node; every partition's dump as it left it (read through
/// the node's own stores, made durable by the shutdown).
async fn stop(mut node: TestNode) -> Vec<Vec<Row>> {
    node.stop().await;
    node.chat
        .stores()
        .iter()
        .map(|s| s.dump().expect("dump"))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// The rows of a dump but the applied position.
fn without_position(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .filter(|(t, k, _)| !(*t == 0 && k.as_slice() == store::APPLIED_KEY))
        .cloned()
        .collect()
}

/// A readable difference between two dumps, for failures.
fn first_difference(a: &[Row], b: &[Row]) -> String {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return format!(
                "row {i}: table {} key {:?} vs table {} key {:?}",
                x.0,
                String::from_utf8_lossy(&x.1),
                y.0,
                String::from_utf8_lossy(&y.1)
            );
        }
    }
    format!("{} rows vs {}", a.len(), b.len())
}

/// Rebuilds every partition of the stopped node at `data` offline, in
/// batches of a few commands and in the default ones, and checks each
/// store against the node's dumps.
fn offline_rebuilds_equal(data: &Path, scratch: &Path, stopped: &[Vec<Row>]) {
    let source = Source::open(data).expect("the stopped node's directory");
    for batch in [3, DEFAULT_BATCH] {
        for p in 0..PARTITIONS {
            let out = scratch.join(format!("{batch}-{p}.redb"));
            let (sm, _) = rebuild_partition(&source, p, StopAt::End, &out, batch, &|_| {})
                .unwrap_or_else(|e| panic!("batch {batch}: rebuild partition {p}: {e}"));
            let rows = sm.store().expect("the rebuilt store").dump().expect("dump");
            assert!(
                rows == stopped[p as usize],
                "batch {batch}: partition {p} rebuilt offline differs: {}",
                first_difference(&rows, &stopped[p as usize])
            );
        }
    }
}

async fn replay_gives_identical_projections(snapshot_midway: bool) {
    let cluster = Cluster::one().await;
    traffic(&cluster, 1).await;
    if snapshot_midway {
        let n = cluster.node().chat.node();
        for p in 0..n.partitions() {
            n.raft(p)
                .expect("partition")
                .trigger()
                .snapshot()
                .await
                .expect("trigger a snapshot");
        }
        eventually("every partition's snapshot", || {
            let done =
                (0..n.partitions()).all(|p| n.metrics(p).expect("partition").snapshot.is_some());
            async move { done.then_some(()) }
        })
        .await;
    }
    traffic(&cluster, 2).await;
    let before_stop = quiet(cluster.node()).await;

    let Cluster { mut nodes, dir } = cluster;
    let original = nodes.remove(0);
    let data = original.data.clone();
    let stopped = stop(original).await;
    assert!(
        stopped.iter().map(Vec::len).sum::<usize>() > 100,
        "the traffic made projections"
    );

    offline_rebuilds_equal(&data, &dir.path().join("offline"), &stopped);

    // Two copies of the stopped node's directory. (Copies rather than the
    // directory itself: a stopped `Chat` keeps its stores open — see the
    // module docs.)
    let kept_dir = dir.path().join("kept");
    let rebuilt_dir = dir.path().join("rebuilt");
    copy_dir(&data, &kept_dir);
    copy_dir(&data, &rebuilt_dir);
    assert!(
        dumps(&kept_dir) == stopped,
        "the copy holds what the node left"
    );

    // One restarts with its projections...
    let kept = TestNode::start(1, &kept_dir, PARTITIONS).await;
    initialize(std::slice::from_ref(&kept)).await;
    let kept_at = settled(&kept, &before_stop).await;
    let kept = stop(kept).await;

    // ...the other without them.
    for f in projection_files(&rebuilt_dir) {
        std::fs::remove_file(&f).unwrap_or_else(|e| panic!("remove {}: {e}", f.display()));
    }
    let rebuilt = TestNode::start(1, &rebuilt_dir, PARTITIONS).await;
    initialize(std::slice::from_ref(&rebuilt)).await;
    let rebuilt_at = settled(&rebuilt, &before_stop).await;
    // The rebuilt node serves what the traffic left.
    let mut bob = rebuilt.client("bob", "laptop");
    let inbox = bob
        .inbox(pb::InboxRequest { limit: 0 })
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(inbox.entries.len(), 3, "bob's direct and two groups");
    let rebuilt = stop(rebuilt).await;

    assert_eq!(
        kept_at, rebuilt_at,
        "both restarts end at the same position"
    );
    for p in 0..PARTITIONS as usize {
        assert!(
            kept[p] == rebuilt[p],
            "partition {p}: the rebuilt projections differ: {}",
            first_difference(&kept[p], &rebuilt[p])
        );
        assert!(
            without_position(&stopped[p]) == without_position(&kept[p]),
            "partition {p}: a restart changed the projections: {}",
            first_difference(&stopped[p], &kept[p])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_projections_and_replaying_the_log_gives_identical_projections() {
    replay_gives_identical_projections(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_rebuilt_from_a_snapshot_and_the_log_after_it_are_identical() {
    replay_gives_identical_projections(true).await;
}
