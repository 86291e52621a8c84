//! A node knows whether its cluster is initialized from its partitions'
//! Raft cores, not from metrics a core publishes a moment after it starts.

use std::collections::BTreeMap;

use missive_raft::kv::Kv;
use missive_raft::{ClusterNode, ClusterSecret, Node, NodeConfig};
use tokio::net::TcpListener;

/// `is_initialized` asks the partitions' Raft cores, so a restarted node
/// knows it was initialized the moment it has started (its metrics may
/// still be the empty ones a core starts with), and `missive serve` does
/// not try to initialize it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_knows_it_is_initialized_as_soon_as_it_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut config = NodeConfig::new(
            1,
            dir.path(),
            ClusterSecret::new("initialized").expect("secret"),
        )
        .expect("config");
        config.partitions = Some(2);
        config.rebalance_every = None;
        config
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = ClusterNode::start(config(), listener, |_| Kv::default())
        .await
        .expect("start node");
    assert!(!node.is_initialized().await.expect("ask"));
    node.initialize(BTreeMap::from([(1, Node::new(node.addr()))]))
        .await
        .expect("initialize");
    assert!(node.is_initialized().await.expect("ask"));
    node.shutdown().await.expect("shutdown");
    drop(node);

    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = ClusterNode::start(config(), listener, |_| Kv::default())
            .await
            .expect("restart node");
        assert!(node.is_initialized().await.expect("ask"));
        node.shutdown().await.expect("shutdown");
    }
}
