//! A one-node Raft group on the missive-log store and the key-value state
//! machine: openraft itself drives the storage — initialization, elections,
//! writes with replies, snapshots, purges — and a restart from the
//! directory alone brings back the same state.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use missive_raft::types::Vote;
use missive_raft::{Node, NodeId, SnapshotFile, TypeConfig};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Config, Raft, Snapshot, SnapshotPolicy};

use crate::support::kv::{self, Kv};
use crate::support::{ManualClock, open_kv, open_log};

type KvRaft = Raft<TypeConfig, missive_raft::StateMachineStore<Kv>>;

/// The network of a one-node cluster: there is nobody to call.
struct NoPeers;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &Node) -> NoPeers {
        NoPeers
    }
}

fn nobody() -> Unreachable<TypeConfig> {
    Unreachable::from_string("a one-node cluster has no peers")
}

impl RaftNetworkV2<TypeConfig> for NoPeers {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(nobody().into())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(nobody().into())
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot<missive_raft::types::LeaderId, NodeId, Node, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(nobody().into())
    }
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "single-node-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Snapshots only when the test asks, and a purge keeps nothing.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(
        missive_raft::LogStore::raft_config(config)
            .validate()
            .expect("valid config"),
    )
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Starts the node on `dir`; the future resolves once its log is closed
/// after shutdown.
async fn start(
    dir: &std::path::Path,
    clock: &ManualClock,
) -> (KvRaft, impl Future<Output = ()> + use<>) {
    let log = open_log(dir, clock).await;
    let closed = log.closed();
    let sm = open_kv(dir).await;
    let raft = Raft::new(1, config(), NoPeers, log, sm)
        .await
        .expect("start raft");
    (raft, closed)
}

async fn write(
    raft: &KvRaft,
    command: missive_raft::Command,
) -> Result<Option<String>, kv::Rejected> {
    let resp = raft.client_write(command).await.expect("client write");
    kv::previous(&resp.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_commits_snapshots_purges_and_restarts_from_its_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_700_000_000_000);
    let (raft, closed) = start(dir.path(), &clock).await;
    raft.initialize(BTreeMap::from([(1, Node::new("127.0.0.1:7001"))]))
        .await
        .expect("initialize");
    raft.wait(WAIT)
        .current_leader(1, "node 1 leads")
        .await
        .expect("leader");

    // Each write is answered with the state machine's reply.
    assert_eq!(write(&raft, kv::set("a", "1")).await, Ok(None));
    clock.set(1_700_000_000_500);
    assert_eq!(write(&raft, kv::set("a", "2")).await, Ok(Some("1".into())));
    assert_eq!(write(&raft, kv::set("b", "x")).await, Ok(None));
    let resp = raft
        .client_write(missive_raft::Command {
            body: vec![9, 9, 9],
            request_id: "garbage".into(),
        })
        .await
        .expect("a rejected command is still committed and answered");
    assert_eq!(kv::previous(&resp.data), Err(kv::Rejected));
    let last = raft
        .client_write(kv::delete("b"))
        .await
        .expect("delete")
        .log_id;

    // The leader's timestamps reached the state machine with the commands.
    let (written_at, map) = raft
        .with_state_machine(|sm| {
            Box::pin(async move { sm.read(|kv| (kv.written_at.clone(), kv.map.clone())) })
        })
        .await
        .expect("read state machine");
    assert_eq!(written_at["a"], 1_700_000_000_500);
    // The store's own watermark: the last write is applied and flushed;
    // an entry nobody wrote is not.
    let (applied, beyond) = raft
        .with_state_machine(move |sm| {
            Box::pin(async move {
                (
                    sm.wait_applied(last.index, Duration::from_secs(10)).await,
                    sm.wait_applied(last.index + 100, Duration::from_millis(50))
                        .await,
                )
            })
        })
        .await
        .expect("wait in the state machine");
    assert!(applied, "the last write is not visible after its reply");
    assert!(!beyond, "an entry never written counts as applied");
    assert_eq!(map, BTreeMap::from([("a".to_string(), "2".to_string())]));

    // A snapshot, then a purge of everything it covers.
    raft.trigger().snapshot().await.expect("trigger snapshot");
    raft.wait(WAIT)
        .snapshot(last, "snapshot at the last write")
        .await
        .expect("snapshot");
    raft.trigger()
        .purge_log(last.index)
        .await
        .expect("trigger purge");
    raft.wait(WAIT)
        .purged(Some(last), "log purged up to the snapshot")
        .await
        .expect("purged");

    // Writes after the snapshot live only in the log.
    let after_snapshot = raft
        .client_write(kv::set("c", "3"))
        .await
        .expect("write")
        .log_id;
    raft.shutdown().await.expect("shutdown");
    drop(raft);
    // openraft's tasks drop their log readers on their own time.
    closed.await;

    // A restart from the directory alone: the snapshot restores the state
    // machine, the log after it is re-applied.
    let (raft, _closed) = start(dir.path(), &clock).await;
    raft.wait(WAIT)
        .applied_index_at_least(Some(after_snapshot.index), "re-applied after restart")
        .await
        .expect("applied");
    let map = raft
        .with_state_machine(|sm| Box::pin(async move { sm.read(|kv| kv.map.clone()) }))
        .await
        .expect("read state machine");
    assert_eq!(
        map,
        BTreeMap::from([
            ("a".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string()),
        ])
    );
    raft.shutdown().await.expect("shutdown");
}
