//! A stopped node lets go of everything: restarted from the same directory
//! in the same process, it opens its projections again and serves what it
//! had. (Before background work watched the shutdown signal, the push
//! notifier and presence loops kept the node — and its redb files — alive
//! after `shutdown`, and reopening failed with "Database already open".)

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_directory_in_the_same_process_serves_its_history() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("1");
    let mut node = TestNode::start(1, &data, PARTITIONS).await;
    initialize(std::slice::from_ref(&node)).await;
    let mut alice = node.client("alice", "phone");
    let conv = direct(&mut alice, "bob").await;
    for i in 0..5 {
        send(&mut alice, &conv, &format!("m{i}"), &format!("message {i}")).await;
    }
    let before = history(&mut alice, &conv).await;
    node.stop().await;
    drop(alice);
    drop(node);

    let node = TestNode::start(1, &data, PARTITIONS).await;
    wait_for_leaders(std::slice::from_ref(&node)).await;
    let mut bob = node.client("bob", "phone");
    let after = history(&mut bob, &conv).await;
    assert_eq!(before, after);
    assert_eq!(after.len(), 5);
    // And it takes writes again.
    send(&mut bob, &conv, "b1", "back").await;
    assert_eq!(history(&mut bob, &conv).await.len(), 6);
}
