//! A node's partitions snapshot by the size of the log behind their current
//! snapshot, not by a count of entries (openraft's own policy is off):
//! nothing before a segment's worth of log, then a snapshot once the log
//! outgrows it, and nothing more while the log stays smaller than the
//! snapshot — unless the log has a retention policy, which needs the purge
//! point to follow the log a segment at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use missive_log::Retention;
use missive_raft::kv::{self, Kv};
use missive_raft::node::{SNAPSHOT_CHECK_EVERY, partition_dir};
use missive_raft::{ClusterNode, ClusterSecret, LOG_DIR, Node, NodeConfig};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};

/// Small segments, so a few hundred writes fill several.
const SEGMENT_BYTES: u64 = 16 << 10;

async fn start(dir: &Path) -> ClusterNode<Kv> {
    start_with(dir, None).await
}

/// A one-node cluster of one partition in `dir`, with small segments and,
/// if given, a retention policy (and a purge up to each snapshot, so that
/// retention follows snapshots closely).
async fn start_with(dir: &Path, retention: Option<Retention>) -> ClusterNode<Kv> {
    let mut config = NodeConfig::new(
        1,
        dir,
        ClusterSecret::new("snapshot-by-size").expect("secret"),
    )
    .expect("config");
    config.partitions = Some(1);
    config.log.segment_bytes = SEGMENT_BYTES;
    config.rebalance_every = None;
    if let Some(retention) = retention {
        config.log.retention = retention;
        let mut raft = (*config.raft).clone();
        raft.max_in_snapshot_log_to_keep = 0;
        config.raft = Arc::new(raft.validate().expect("valid config"));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = ClusterNode::start(config, listener, |_| Kv::default())
        .await
        .expect("start node");
    node.initialize(BTreeMap::from([(1, Node::new(node.addr()))]))
        .await
        .expect("initialize");
    node
}

/// Writes `n` values of `bytes` bytes each, to keys `key-{i % keys}`.
async fn write(node: &ClusterNode<Kv>, n: usize, keys: usize, bytes: usize) {
    let value = "v".repeat(bytes);
    for i in 0..n {
        node.write(0, kv::set(&format!("key-{}", i % keys), &value))
            .await
            .expect("write");
    }
}

fn snapshot_index(node: &ClusterNode<Kv>) -> Option<u64> {
    node.metrics(0)
        .expect("partition")
        .snapshot
        .map(|id| id.index)
}

/// Triggers a snapshot and waits until one covers everything applied;
/// returns its index.
async fn snapshot_now(node: &ClusterNode<Kv>) -> u64 {
    let applied = node
        .metrics(0)
        .expect("partition")
        .last_applied
        .expect("applied")
        .index;
    node.raft(0)
        .expect("partition")
        .trigger()
        .snapshot()
        .await
        .expect("trigger a snapshot");
    snapshot_reaches(node, applied).await;
    snapshot_index(node).expect("a snapshot")
}

/// Polls until `done`, failing with `why()` if that takes longer than a few
/// snapshot checks.
async fn wait_until(mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + 5 * SNAPSHOT_CHECK_EVERY + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the node's snapshot reaches `index` at least.
async fn snapshot_reaches(node: &ClusterNode<Kv>, index: u64) {
    wait_until(
        || snapshot_index(node) >= Some(index),
        || {
            format!(
                "no snapshot at or past {index} (the node's: {:?})",
                snapshot_index(node)
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_snapshots_once_its_log_outgrows_the_snapshot_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;

    // Less than a segment of log: no snapshot, however many checks pass.
    write(&node, 10, 10, 100).await;
    sleep(2 * SNAPSHOT_CHECK_EVERY + Duration::from_millis(500)).await;
    assert_eq!(
        snapshot_index(&node),
        None,
        "a snapshot before a segment of log"
    );

    // Several segments of log over five keys: the state stays tiny, so a
    // segment of log behind the (absent, then tiny) snapshot is enough.
    write(&node, 200, 5, 400).await;
    snapshot_reaches(&node, 1).await;

    // A state of ~160 KiB (40 keys of 4 KiB), snapshotted now.
    write(&node, 40, 40, 4_096).await;
    let big = snapshot_now(&node).await;

    // ~40 KiB of log behind it: over a segment, under the snapshot's size.
    write(&node, 10, 40, 4_096).await;
    sleep(2 * SNAPSHOT_CHECK_EVERY + Duration::from_millis(500)).await;
    assert_eq!(
        snapshot_index(&node),
        Some(big),
        "a snapshot while the log behind the last one was smaller than it"
    );

    // ~200 KiB behind it: more than the snapshot, so one is taken.
    write(&node, 40, 40, 4_096).await;
    snapshot_reaches(&node, big + 1).await;

    node.shutdown().await.expect("shutdown");
}

/// Bytes of partition 0's log segments on disk.
fn log_bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(partition_dir(dir, 0).join(LOG_DIR))
        .expect("log dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().expect("metadata").len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retention_snapshots_follow_the_log_so_retention_can_delete_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max_total_bytes = 4 * SEGMENT_BYTES;
    let node = start_with(
        dir.path(),
        Some(Retention {
            max_age_ms: None,
            max_total_bytes: Some(max_total_bytes),
        }),
    )
    .await;

    // A state of ~800 KiB (200 keys of 4 KiB), snapshotted now.
    write(&node, 200, 200, 4_096).await;
    let big = snapshot_now(&node).await;

    // ~160 KiB of log behind it: ten segments, a fifth of the snapshot.
    // Without retention that takes no snapshot; with it, the node must take
    // one, or retention can delete nothing and the log stays over its
    // bound.
    write(&node, 40, 200, 4_096).await;
    // The bound, plus the active segment and the one the purge point
    // falls in.
    let bound = max_total_bytes + 2 * SEGMENT_BYTES;
    wait_until(
        || log_bytes_on_disk(dir.path()) <= bound,
        || {
            format!(
                "the log still takes {} bytes on disk, over {bound} (snapshot at {:?}, {big} before the last writes)",
                log_bytes_on_disk(dir.path()),
                snapshot_index(&node)
            )
        },
    )
    .await;
    // Retention deletes what the new snapshot covers as soon as it is
    // current; openraft's metrics may name it a moment later.
    snapshot_reaches(&node, big + 1).await;

    node.shutdown().await.expect("shutdown");
}
