//! Regression: a leader that lost entries it had already sent came back as
//! leader of the same term and wrote new entries under their log ids.
//!
//! The story (chaos test, seed 7, about one run in ten): node 1 leads the
//! first term. It accepts a client write at index 2 and replicates it from the
//! store's overlay while its own writer thread syncs it — missive lets
//! followers see an entry before the leader's fdatasync, as Raft allows.
//! Nodes 2 and 3 make the entry durable; node 1's fdatasync fails, it stops
//! and loses power, so its log ends at index 1. It restarts within
//! milliseconds, before its followers' election timeout, and openraft's
//! default `enable_leader_restore` makes it leader of term 1 again at once,
//! because its durable vote is a committed vote for itself. The next client
//! write becomes entry `T1-N1.2` on node 1 — the log id of the entry nodes
//! 2 and 3 already hold. They see a log id they have, keep their entry and
//! report a match, so node 1 commits and acknowledges its write at index 2
//! while both followers apply the other entry there: "acknowledged write
//! k000001 (index 2) lost" on node 2, and committed logs that differ.
//!
//! The fix (`LogStore::raft_config`, used by `ClusterNode` and by these
//! tests): a node over a missive-log store never resumes leading after a
//! restart; a leader is elected in a higher term, whose entries cannot
//! share a log id with anything written before.
//!
//! This test builds the same state deterministically: a write is committed
//! and applied everywhere, the leader stops and its log is cut back to
//! before that write (the entry its writer never made durable: a kill
//! before the write, a failed fdatasync or a power loss all leave this),
//! and it restarts at once, well within the followers' long election
//! timeout. Then a client writes until acknowledged. It proves:
//! every acknowledged write is applied on every node, at every index all
//! three logs hold the same entry — one log id never names two entries —
//! and the write after the restart was led in a higher term.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use missive_log::fs::SimFs;
use missive_log::{Clock, Log, Options};
use missive_raft::{LOG_DIR, LogStore, Node, NodeId, SNAPSHOT_DIR, StateMachineStore};
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, Raft, ServerState};

use crate::support::kv::{self, Kv};
use crate::support::sim_net::{KvRaft, SimNet};

const NODES: [NodeId; 3] = [1, 2, 3];

/// Bound on every wait for the cluster to do something.
const WAIT: Duration = Duration::from_secs(10);

/// How long one client write may take before the client tries elsewhere.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// Timestamps start here (ms since the epoch).
const BASE_MS: u64 = 1_700_000_000_000;

/// A node that is up.
struct Running {
    raft: KvRaft,
    sm: StateMachineStore<Kv>,
    /// Resolves once the node's log is closed after shutdown.
    closed: tokio::task::JoinHandle<()>,
}

/// One member: its simulated disk outlives its processes.
struct Member {
    id: NodeId,
    dir: PathBuf,
    fs: SimFs,
    running: Option<Running>,
}

struct Cluster {
    net: SimNet,
    config: Arc<Config>,
    members: Vec<Member>,
    epoch: Instant,
    _tmp: tempfile::TempDir,
}

fn log_options(fs: &SimFs, epoch: Instant) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        clock: Clock::new(move || BASE_MS + epoch.elapsed().as_millis() as u64),
        ..Options::default()
    }
}

impl Cluster {
    fn new() -> anyhow::Result<Cluster> {
        let tmp = tempfile::tempdir()?;
        let config = Config {
            cluster_name: "leader-restart".into(),
            heartbeat_interval: 50,
            // Long enough that the restarted leader is always back before a
            // follower stands for election: the window the bug needs.
            election_timeout_min: 1500,
            election_timeout_max: 2000,
            ..Config::default()
        };
        Ok(Cluster {
            net: SimNet::new(1),
            config: Arc::new(LogStore::raft_config(config).validate()?),
            members: NODES
                .iter()
                .map(|&id| Member {
                    id,
                    dir: tmp.path().join(format!("node-{id}")),
                    fs: SimFs::new(),
                    running: None,
                })
                .collect(),
            epoch: Instant::now(),
            _tmp: tmp,
        })
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("ids come from NODES")
    }

    fn raft(&self, id: NodeId) -> anyhow::Result<KvRaft> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.running.as_ref())
            .map(|r| r.raft.clone())
            .with_context(|| format!("node {id} is down"))
    }

    async fn start(&mut self, id: NodeId) -> anyhow::Result<()> {
        let (epoch, config, net) = (self.epoch, self.config.clone(), self.net.clone());
        let m = self.member(id);
        let log = LogStore::open(&m.dir, log_options(&m.fs, epoch)).await?;
        let closed = tokio::spawn(log.closed());
        let sm =
            StateMachineStore::open_with_log(m.dir.join(SNAPSHOT_DIR), Kv::default(), &log).await?;
        let raft = Raft::new(id, config, net.factory(id), log, sm.clone()).await?;
        net.register(id, raft.clone());
        m.running = Some(Running { raft, sm, closed });
        Ok(())
    }

    async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.net.unregister(id);
        let Some(run) = self.member(id).running.take() else {
            return Ok(());
        };
        run.raft.shutdown().await?;
        drop(run.raft);
        drop(run.sm);
        tokio::time::timeout(WAIT, run.closed)
            .await
            .with_context(|| format!("node {id}'s log still open after shutdown"))??;
        Ok(())
    }

    /// The node that leads in its own eyes, with its term.
    fn leader(&self) -> Option<(NodeId, u64)> {
        self.members.iter().find_map(|m| {
            let metrics = m.running.as_ref()?.raft.metrics().borrow_watched().clone();
            (metrics.state == ServerState::Leader && metrics.current_leader == Some(m.id))
                .then_some((m.id, metrics.current_term))
        })
    }

    async fn wait_leader(&self) -> anyhow::Result<(NodeId, u64)> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            ensure!(Instant::now() < deadline, "no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes `key` through whichever node leads until it is acknowledged;
    /// returns its index.
    async fn write(&self, key: &str) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            ensure!(
                Instant::now() < deadline,
                "{key} not acknowledged in {WAIT:?}"
            );
            let Some((leader, _)) = self.leader() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let raft = self.raft(leader)?;
            if let Ok(Ok(resp)) =
                tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(kv::set(key, "v"))).await
            {
                return Ok(resp.log_id.index);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_applied(&self, index: u64) -> anyhow::Result<()> {
        for id in NODES {
            self.raft(id)?
                .wait(Some(WAIT))
                .applied_index_at_least(Some(index), "applied")
                .await
                .with_context(|| format!("node {id} did not apply index {index}"))?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_stands_for_election_and_never_reuses_a_log_id() -> anyhow::Result<()> {
    let mut cluster = Cluster::new()?;
    for id in NODES {
        cluster.start(id).await?;
    }
    let voters: BTreeMap<_, _> = NODES
        .iter()
        .map(|&id| (id, Node::new(format!("sim-{id}"))))
        .collect();
    cluster.raft(1)?.initialize(voters).await?;
    let (leader, term) = cluster.wait_leader().await?;

    let mut acked = vec![("before", cluster.write("before").await?)];
    let lost_at = cluster.write("kept-by-followers").await?;
    acked.push(("kept-by-followers", lost_at));
    // The followers hold the entry durably and have applied it.
    cluster.wait_applied(lost_at).await?;

    // The leader goes down and comes back without that entry: its own copy
    // never became durable.
    cluster.stop(leader).await?;
    {
        let epoch = cluster.epoch;
        let m = cluster.member(leader);
        let log = Log::open(m.dir.join(LOG_DIR), log_options(&m.fs, epoch))?;
        log.truncate_from(lost_at)?;
    }
    cluster.start(leader).await?;

    let after = cluster.write("after-restart").await?;
    acked.push(("after-restart", after));
    let (new_leader, new_term) = cluster.wait_leader().await?;
    cluster.wait_applied(after).await?;

    for m in &cluster.members {
        let map = m
            .running
            .as_ref()
            .context("every node is up")?
            .sm
            .read(|kv| kv.map.clone());
        for (key, index) in &acked {
            ensure!(
                map.contains_key(*key),
                "node {}: acknowledged write {key} (index {index}) is not applied",
                m.id
            );
        }
    }

    // At every index up to the last write, every log holds the same entry.
    for id in NODES {
        cluster.stop(id).await?;
    }
    let mut logs = Vec::new();
    for m in &cluster.members {
        let log = Log::open(m.dir.join(LOG_DIR), log_options(&m.fs, cluster.epoch))?;
        let records = log
            .range(log.state().first_index, after + 1)?
            .collect::<Result<Vec<_>, _>>()?;
        logs.push((m.id, records));
    }
    let (id0, reference) = &logs[0];
    for (id, records) in &logs[1..] {
        ensure!(
            records.len() == reference.len(),
            "nodes {id0} and {id} hold {} and {} entries up to index {after}",
            reference.len(),
            records.len()
        );
        for (a, b) in reference.iter().zip(records) {
            if (a.index, &a.payload) != (b.index, &b.payload) {
                bail!(
                    "nodes {id0} and {id} hold different entries at index {}",
                    a.index
                );
            }
        }
    }
    // And why: the restarted node did not lead its old term again.
    ensure!(
        new_term > term,
        "node {new_leader} led term {new_term} after node {leader}, leader of term {term}, \
         restarted without its entry at {lost_at}"
    );
    Ok(())
}
