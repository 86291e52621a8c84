//! Three nodes in one process over the real gRPC transport on loopback,
//! two partitions each: initialization spreads the leaders, a write through
//! any node reaches its partition's leader and is answered, every node ends
//! with the same state, and a call without the cluster secret is refused.
//! A node added after the leaders purged their logs catches up by a
//! streamed snapshot plus the log after it, and its log continues the hash
//! chain from the hash the snapshot carries: at every index it holds, its
//! chain hash equals the other nodes'. Many writes share one `Writes`
//! stream, each answered as `Forward` would answer it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use missive_log::verify::verify_dir;
use missive_log::{Log, Options};
use missive_proto::v1 as pb;
use missive_proto::v1::raft_internal_client::RaftInternalClient;
use missive_raft::kv::{self, Kv};
use missive_raft::network::{MAX_MESSAGE_BYTES, WriteStream};
use missive_raft::node::partition_dir;
use missive_raft::partition::partition_of;
use missive_raft::{ClusterNode, ClusterSecret, LOG_DIR, Node, NodeConfig, NodeId, Reply};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};

const PARTITIONS: u32 = 2;
const SECRET: &str = "test-cluster-secret";

fn config(id: NodeId, dir: &std::path::Path) -> NodeConfig {
    let defaults = openraft::Config::default();
    config_with(
        id,
        dir,
        defaults.snapshot_policy,
        defaults.max_in_snapshot_log_to_keep,
    )
}

fn config_with(
    id: NodeId,
    dir: &std::path::Path,
    snapshot_policy: openraft::SnapshotPolicy,
    max_in_snapshot_log_to_keep: u64,
) -> NodeConfig {
    let mut c =
        NodeConfig::new(id, dir, ClusterSecret::new(SECRET).expect("secret")).expect("config");
    c.partitions = Some(PARTITIONS);
    let raft = openraft::Config {
        cluster_name: "grpc-cluster-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy,
        max_in_snapshot_log_to_keep,
        ..openraft::Config::default()
    };
    c.raft = Arc::new(raft.validate().expect("valid"));
    c
}

async fn start_node(config: NodeConfig) -> ClusterNode<Kv> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ClusterNode::start(config, listener, |_| Kv::default())
        .await
        .expect("start node")
}

async fn start_cluster(dir: &std::path::Path) -> Vec<ClusterNode<Kv>> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(config(id, &dir.join(id.to_string()))).await);
    }
    nodes
}

async fn initialize(nodes: &[ClusterNode<Kv>]) {
    let members: BTreeMap<NodeId, Node> = nodes
        .iter()
        .map(|n| (n.id(), Node::new(n.addr())))
        .collect();
    nodes[0].initialize(members).await.expect("initialize");
}

/// Waits until every node sees partition p led by the member at position
/// p % 3: nodes 1 and 2.
async fn await_spread_leaders(nodes: &[ClusterNode<Kv>]) {
    for p in 0..PARTITIONS {
        let wanted = p as u64 + 1;
        for n in nodes {
            eventually("every node to see the spread leader", || {
                n.metrics(p).expect("partition").current_leader == Some(wanted)
            })
            .await;
        }
    }
}

/// Writes `key-{i}` for `i` in `range` through the nodes in turn.
async fn write_keys(
    nodes: &[ClusterNode<Kv>],
    range: std::ops::Range<usize>,
    expected: &mut BTreeMap<String, String>,
) {
    for i in range {
        let key = format!("key-{i}");
        let p = partition_of(key.as_bytes(), PARTITIONS);
        let reply = nodes[i % nodes.len()]
            .write(p, kv::set(&key, &format!("v{i}")))
            .await
            .expect("write");
        assert_eq!(kv::previous(&reply), Ok(None));
        expected.insert(key, format!("v{i}"));
    }
}

/// Waits until `node` applied partition `p` up to `index`.
async fn applied(node: &ClusterNode<Kv>, p: u32, index: Option<u64>) {
    eventually("the node to apply everything", || {
        node.metrics(p)
            .expect("partition")
            .last_applied
            .map(|l| l.index)
            >= index
    })
    .await;
}

/// Waits until every node applied each partition up to its leader's last
/// entry (partition p is led by the node at position p).
async fn await_converged(nodes: &[ClusterNode<Kv>]) {
    for p in 0..PARTITIONS {
        let last = nodes[p as usize]
            .metrics(p)
            .expect("partition")
            .last_log_index;
        for n in nodes {
            applied(n, p, last).await;
        }
    }
}

/// The key-value pairs of every partition of `node`.
fn state(node: &ClusterNode<Kv>) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for p in 0..PARTITIONS {
        let map = node
            .state_machine(p)
            .expect("partition")
            .read(|kv| kv.map.clone());
        for k in map.keys() {
            assert_eq!(
                partition_of(k.as_bytes(), PARTITIONS),
                p,
                "{k} in the wrong partition"
            );
        }
        all.extend(map);
    }
    all
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_over_grpc_forward_writes_spread_leaders_and_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(dir.path()).await;
    initialize(&nodes).await;

    await_spread_leaders(&nodes).await;

    // Writes through every node, to both partitions: each is answered with
    // the state machine's reply, whichever node leads.
    let mut expected = BTreeMap::new();
    write_keys(&nodes, 0..60, &mut expected).await;
    let again = nodes[2]
        .write(
            partition_of(b"key-0", PARTITIONS),
            kv::set("key-0", "changed"),
        )
        .await
        .expect("overwrite");
    assert_eq!(kv::previous(&again), Ok(Some("v0".into())));
    expected.insert("key-0".into(), "changed".into());

    // Every node converges to the same state, partition by partition.
    await_converged(&nodes).await;
    let states: Vec<_> = nodes.iter().map(state).collect();
    assert_eq!(states[0], expected);
    assert_eq!(states[1], expected);
    assert_eq!(states[2], expected);

    // The status reports each leader's followers, caught up.
    for p in 0..PARTITIONS {
        let leader = &nodes[p as usize];
        eventually("followers to be reported caught up", || {
            let status = leader.status();
            let s = &status.partitions[p as usize];
            s.followers.len() == 2 && s.followers.iter().all(|f| f.lag == 0)
        })
        .await;
    }

    // A caller without the secret, or with a wrong one, is refused.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", nodes[0].addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = RaftInternalClient::new(channel);
    let forward = pb::ForwardRequest {
        partition: 0,
        command: Some(pb::Command {
            body: kv::set("intruder", "x").body,
            request_id: "intruder".into(),
        }),
        relayed: false,
    };
    let err = client
        .forward(forward.clone())
        .await
        .expect_err("no secret");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(forward);
    wrong.metadata_mut().insert(
        missive_raft::SECRET_HEADER,
        "not-the-secret".parse().expect("ascii"),
    );
    let err = client.forward(wrong).await.expect_err("wrong secret");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = client
        .status(pb::StatusRequest {})
        .await
        .expect_err("no secret");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_after_a_purge_catches_up_by_streamed_snapshot_and_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Snapshots only when asked; a purge keeps nothing of what they cover.
    let cfg = |id: NodeId| {
        config_with(
            id,
            &dir.path().join(id.to_string()),
            openraft::SnapshotPolicy::Never,
            0,
        )
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(cfg(id)).await);
    }
    initialize(&nodes).await;
    let mut expected = BTreeMap::new();
    write_keys(&nodes, 0..40, &mut expected).await;

    // Every node snapshots and purges each partition: nobody has the log
    // from the start any more, so a new node needs the snapshot.
    for p in 0..PARTITIONS {
        for n in &nodes {
            let raft = n.raft(p).expect("partition");
            let last = n
                .metrics(p)
                .expect("partition")
                .last_applied
                .expect("applied");
            raft.trigger().snapshot().await.expect("snapshot");
            let wait = Duration::from_secs(10);
            let m = raft
                .wait(Some(wait))
                .metrics(
                    |m| m.snapshot.map(|s| s.index) >= Some(last.index),
                    "snapshot built",
                )
                .await
                .expect("snapshot built");
            let snapshot = m.snapshot.expect("a snapshot");
            raft.trigger()
                .purge_log(snapshot.index)
                .await
                .expect("purge");
            raft.wait(Some(wait))
                .metrics(
                    |m| m.purged.map(|l| l.index) >= Some(snapshot.index),
                    "purged",
                )
                .await
                .expect("purged");
        }
    }
    // And a log after the snapshot.
    write_keys(&nodes, 40..60, &mut expected).await;

    let new = start_node(cfg(4)).await;
    nodes[0]
        .add_node(4, new.addr())
        .await
        .expect("add node 4 to every partition");
    for p in 0..PARTITIONS {
        let leader = new
            .metrics(p)
            .expect("partition")
            .current_leader
            .expect("leader");
        let last = nodes[leader as usize - 1]
            .metrics(p)
            .expect("partition")
            .last_log_index;
        applied(&new, p, last).await;
        let m = new.metrics(p).expect("partition");
        assert!(
            m.snapshot.is_some(),
            "partition {p} did not come by snapshot"
        );
        assert!(
            m.membership_config
                .membership()
                .voter_ids()
                .any(|id| id == 4),
            "node 4 is a voter of partition {p}"
        );
    }
    assert_eq!(state(&new), expected);

    new.shutdown().await.expect("shutdown");
    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }

    // The new node's log starts past the snapshot with the chain hash the
    // snapshot carried, and agrees with every other log at every index
    // they share — the purge point included.
    for p in 0..PARTITIONS {
        let log_dir = |id: NodeId| partition_dir(&dir.path().join(id.to_string()), p).join(LOG_DIR);
        let report = verify_dir(&missive_log::fs::StdFs, &log_dir(4), 1 << 24).expect("verify");
        assert_eq!(report.problem, None, "partition {p}: node 4's log verifies");
        assert!(
            report.segments.first().is_some_and(|s| s.carried),
            "partition {p}: node 4's log continues a chain carried in by the snapshot"
        );
        let logs: Vec<Log> = (1..=4)
            .map(|id| Log::open(log_dir(id), Options::default()).expect("open log"))
            .collect();
        let new_log = &logs[3];
        let start = new_log.state().first_index - 1;
        let end = logs
            .iter()
            .map(|l| l.state().next_index)
            .min()
            .expect("logs");
        assert!(start < end, "partition {p}: the logs share indexes");
        for index in start..end {
            let hash = new_log.chain_hash_at(index).expect("node 4's chain hash");
            for (k, log) in logs[..3].iter().enumerate() {
                // The others purged up to their own snapshots; they still
                // know the hash at their purge point and after it.
                if let Ok(theirs) = log.chain_hash_at(index) {
                    assert_eq!(
                        theirs,
                        hash,
                        "partition {p}: node {} and node 4 differ at index {index}",
                        k + 1
                    );
                }
            }
        }
        let shared_head = end - 1;
        let heads: Vec<_> = logs
            .iter()
            .map(|l| {
                l.chain_hash_at(shared_head)
                    .expect("hash at the shared end")
            })
            .collect();
        assert!(
            heads.windows(2).all(|w| w[0] == w[1]),
            "partition {p}: every node has the same chain hash at {shared_head}"
        );
    }
}

/// After a node restarts, the partitions it was placed to lead come back to
/// it: the survivors, which took them over in the elections, hand them back
/// once it answers their heartbeats and has the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_its_preferred_node_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = |id: NodeId| {
        let mut c = config(id, &dir.path().join(id.to_string()));
        c.rebalance_every = Some(Duration::from_millis(200));
        c
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(fast(id)).await);
    }
    initialize(&nodes).await;
    assert_eq!(nodes[0].preferred_leader(0).expect("partition"), Some(1));
    eventually("node 1 to lead partition 0", || {
        nodes[1].metrics(0).expect("p0").current_leader == Some(1)
    })
    .await;

    let old = nodes.remove(0);
    let addr = old.addr().to_owned();
    old.shutdown().await.expect("shutdown");
    drop(old);
    eventually("another node to lead partition 0", || {
        matches!(nodes[0].metrics(0).expect("p0").current_leader, Some(2 | 3))
    })
    .await;
    // Writes go on meanwhile.
    let mut expected = BTreeMap::new();
    write_keys(&nodes, 0..10, &mut expected).await;

    // Back at the address the membership records.
    let listener = TcpListener::bind(&addr)
        .await
        .expect("bind the old address");
    let restarted = ClusterNode::start(fast(1), listener, |_| Kv::default())
        .await
        .expect("restart node 1");
    nodes.insert(0, restarted);
    eventually("partition 0 to come back to node 1", || {
        nodes
            .iter()
            .all(|n| n.metrics(0).expect("p0").current_leader == Some(1))
    })
    .await;
    // And partition 1 stays with (or returns to) node 2.
    eventually("partition 1 led by node 2", || {
        nodes[0].metrics(1).expect("p1").current_leader == Some(2)
    })
    .await;
    write_keys(&nodes, 10..20, &mut expected).await;
    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// A key-value write of `key` as the internal calls carry it.
fn forward_request(key: &str, value: &str, relayed: bool) -> pb::ForwardRequest {
    pb::ForwardRequest {
        partition: partition_of(key.as_bytes(), PARTITIONS),
        command: Some(kv::set(key, value).into()),
        relayed,
    }
}

/// A write stream to `node`, opened with `secret`.
async fn open_stream(node: &ClusterNode<Kv>, secret: &str) -> Result<WriteStream, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let secret = ClusterSecret::new(secret).expect("secret");
    WriteStream::open(channel, node.addr(), &secret, MAX_MESSAGE_BYTES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writes_share_one_stream_and_each_is_answered_as_forward_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(dir.path()).await;
    initialize(&nodes).await;
    await_spread_leaders(&nodes).await;
    let timeout = Duration::from_secs(10);

    // Node 3 leads neither partition: it forwards every write it is sent
    // to the leader, itself over its write stream to that node.
    let follower = &nodes[2];
    let stream = open_stream(follower, SECRET)
        .await
        .expect("open a write stream");
    let writes = (0..300).map(|i| {
        let key = format!("stream-{i}");
        let stream = &stream;
        async move {
            let done = stream
                .write(forward_request(&key, &format!("v{i}"), false), timeout)
                .await
                .expect("write");
            assert_eq!(kv::previous(&Reply { body: done.reply }), Ok(None), "{key}");
            (key, done.index)
        }
    });
    let answered = futures_util::future::join_all(writes).await;
    for p in 0..PARTITIONS {
        let mut indexes: Vec<u64> = answered
            .iter()
            .filter(|(k, _)| partition_of(k.as_bytes(), PARTITIONS) == p)
            .map(|(_, i)| *i)
            .collect();
        let n = indexes.len();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), n, "two writes of partition {p} at one index");
    }
    let expected: BTreeMap<String, String> = (0..300)
        .map(|i| (format!("stream-{i}"), format!("v{i}")))
        .collect();
    await_converged(&nodes).await;
    for n in &nodes {
        assert_eq!(state(n), expected);
    }

    // A relayed write to a node that does not lead is refused as Forward
    // refuses it, and a write without a request or too large for a message
    // is refused alone: the stream goes on serving.
    let refused = stream
        .write(forward_request("stream-0", "x", true), timeout)
        .await
        .expect_err("node 3 leads nothing");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let empty = pb::ForwardRequest {
        partition: 0,
        command: None,
        relayed: false,
    };
    let refused = stream.write(empty, timeout).await.expect_err("no command");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let huge = "x".repeat(MAX_MESSAGE_BYTES);
    let refused = stream
        .write(forward_request("stream-0", &huge, false), timeout)
        .await
        .expect_err("larger than a message");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let again = stream
        .write(forward_request("stream-0", "again", false), timeout)
        .await
        .expect("the stream still serves");
    assert_eq!(
        kv::previous(&Reply { body: again.reply }),
        Ok(Some("v0".into()))
    );
    for n in &nodes {
        eventually("the last write to be applied everywhere", || {
            state(n).get("stream-0").map(String::as_str) == Some("again")
        })
        .await;
    }

    // Without the secret, no stream opens.
    let err = open_stream(follower, "not-the-secret")
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // When the node goes, its stream ends: writes through it fail as
    // unavailable rather than wait for their deadline.
    let mut nodes = nodes;
    let follower = nodes.pop().expect("three nodes");
    follower.shutdown().await.expect("shutdown");
    let gone = stream
        .write(forward_request("stream-1", "late", false), timeout)
        .await
        .expect_err("the node is gone");
    assert_eq!(gone.code(), tonic::Code::Unavailable, "{gone:?}");
    assert!(stream.is_broken());

    for n in &nodes {
        n.shutdown().await.expect("shutdown");
    }
}
