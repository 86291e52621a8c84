//! Three Raft nodes in one process — each the missive-log store on its own
//! simulated disk and the key-value state machine — over a simulated network
//! that drops, delays and partitions, while nodes lose power (unsynced bytes
//! gone, torn tails kept at random), see an fdatasync fail, or restart
//! cleanly, and rejoin from their directories. A client writes unique keys
//! through whichever node leads.
//!
//! Each seed draws one schedule of faults. After every schedule, healed and
//! converged, the test proves:
//!
//! - **no acknowledged write is lost**: every acknowledged key is in every
//!   node's state machine with its value, and its entry sits at the index it
//!   was acknowledged at in every log that still holds that index;
//! - **committed prefixes are identical**: up to the common committed index,
//!   every node's log holds the same records (index, timestamp, payload) and
//!   the same chain hash, so the same head hash at the committed index —
//!   including a node that caught up by snapshot, whose log starts with the
//!   chain hash the snapshot carried; timestamps never go backwards along a
//!   log;
//! - **a minority side commits nothing**: while the leader is cut off alone,
//!   writes sent to it are never acknowledged, its commit index does not move,
//!   and none of those writes survives the heal;
//! - **replicas converge**: after healing, all state machines are equal;
//! - every entry crossing the network carries its leader timestamp.
//!
//! Odd seeds also snapshot and purge often, so nodes that come back behind
//! catch up by snapshot plus log: their log jumps past its end and continues
//! the chain from the hash the snapshot carries. Chain hashes are compared
//! at every index two logs both know, the purge points included (a log
//! knows the hash at its purge point), so a jumped log is checked against
//! the records its peers hold there.
//!
//! Regressions it caught (see `LogStore::read_committed`,
//! `PartitionLog::failed_write` and `LogStore::raft_config`): a follower
//! whose fdatasync failed, or that lost power, after openraft had saved a
//! committed log id beyond its flushed log could not restart ("Failed to get
//! log entries" while re-applying); after a failed write, reads past the
//! log's end came back silently short, so openraft's apply stream ended
//! early; a replica that jumped past a snapshot restarted its hash chain at
//! the genesis hash, so its chain hash differed from its peers' at every
//! later index (the snapshot now carries the hash); and a leader whose
//! fdatasync failed came back from power loss as leader of the same term
//! and wrote a new entry under the log id of one it had lost but its
//! followers held, so it acknowledged a write no follower applied (see
//! `restarted_leader_never_reuses_a_log_id.rs`).
//!
//! `MISSIVE_CHAOS_SEEDS=N` runs seeds 1..=N (default 8); `MISSIVE_CHAOS_SEED=S`
//! runs seed S alone. A failing seed prints the command that reruns it. A
//! seed fixes the fault schedule, not thread interleavings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use missive_log::fs::{Fault, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{ChainHash, Clock, Log, Options};
use missive_raft::types::LogId;
use missive_raft::{LOG_DIR, LogStore, Node, NodeId, SNAPSHOT_DIR, StateMachineStore};
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, Raft, ServerState, SnapshotPolicy};

use crate::support::kv::{self, Kv};
use crate::support::sim_net::{self, Faults, KvRaft, Rng, SimNet};

/// The members of every test cluster.
const NODES: [NodeId; 3] = [1, 2, 3];

/// Seeds run when no environment variable says otherwise.
const DEFAULT_SEEDS: u64 = 8;

/// Fault steps per schedule.
const STEPS: u64 = 10;

/// How long one client write may take before the client tries elsewhere.
const WRITE_TIMEOUT: Duration = Duration::from_millis(400);

/// Attempts the client makes for one key before moving on (unacknowledged).
const WRITE_ATTEMPTS: u32 = 20;

/// Bound on every wait for the cluster to do something (elect, converge,
/// close a log).
const WAIT: Duration = Duration::from_secs(10);

/// Timestamps start here (ms since the epoch), plus each node's skew.
const BASE_MS: u64 = 1_700_000_000_000;

/// A node that is up.
struct Running {
    /// The node; clients and the network reach it through clones.
    raft: KvRaft,
    /// Its state machine, read directly by the final checks.
    sm: StateMachineStore<Kv>,
    /// Resolves once the node's log is closed after shutdown; awaited before
    /// the directory is reopened.
    closed: tokio::task::JoinHandle<()>,
}

/// One member: its disk outlives its processes.
struct Member {
    /// Its Raft node id.
    id: NodeId,
    /// The partition directory: the log and `raft-meta` live here on `fs`,
    /// the snapshots on the real disk (the snapshot store does not go
    /// through the log's file system).
    dir: PathBuf,
    /// The simulated disk of the log and the metadata file; a crash drops
    /// what was not synced.
    fs: SimFs,
    /// How far this node's clock is off (timestamps must stay monotone in
    /// the log whatever the leader's clock says).
    skew_ms: i64,
    /// The current process, `None` while the node is down.
    running: Option<Running>,
}

struct Cluster {
    /// The seed of this schedule (it picks the config and names keys).
    seed: u64,
    /// The network every node talks through.
    net: SimNet,
    /// The openraft config every node starts with.
    config: Arc<Config>,
    /// The three members, in `NODES` order.
    members: Vec<Member>,
    /// Real time the node clocks count from.
    epoch: Instant,
    /// Unsynced bytes power losses threw away (for the report: how much
    /// the crashes really cost).
    unsynced_lost: usize,
    /// Keeps the snapshot directories alive for the seed's run.
    _tmp: tempfile::TempDir,
}

/// Whether this seed snapshots and purges (odd seeds do).
fn snapshots(seed: u64) -> bool {
    seed % 2 == 1
}

fn config(seed: u64) -> anyhow::Result<Arc<Config>> {
    let mut config = Config {
        cluster_name: format!("chaos-{seed}"),
        heartbeat_interval: 25,
        election_timeout_min: 100,
        election_timeout_max: 200,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    };
    if snapshots(seed) {
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(25);
        config.max_in_snapshot_log_to_keep = 5;
        config.purge_batch_size = 1;
        // A follower further behind than this gets a snapshot.
        config.replication_lag_threshold = 40;
    }
    // What the store requires of openraft, as every node runs it: a
    // restarted leader stands for election again.
    Ok(Arc::new(LogStore::raft_config(config).validate()?))
}

impl Member {
    fn log_options(&self, epoch: Instant) -> Options {
        let skew = self.skew_ms;
        Options {
            fs: Arc::new(self.fs.clone()),
            // Small segments: rolls and sealed segments are part of the run.
            segment_bytes: 16 << 10,
            clock: Clock::new(move || {
                (BASE_MS + epoch.elapsed().as_millis() as u64).saturating_add_signed(skew)
            }),
            ..Options::default()
        }
    }

    fn running(&self) -> anyhow::Result<&Running> {
        self.running
            .as_ref()
            .with_context(|| format!("node {} is down", self.id))
    }
}

impl Cluster {
    async fn new(seed: u64, rng: &mut Rng) -> anyhow::Result<Cluster> {
        let tmp = tempfile::tempdir()?;
        let members = NODES
            .iter()
            .map(|&id| Member {
                id,
                dir: tmp.path().join(format!("node-{id}")),
                fs: SimFs::new(),
                skew_ms: rng.below(4001) as i64 - 2000,
                running: None,
            })
            .collect();
        let mut cluster = Cluster {
            seed,
            net: SimNet::new(rng.next_u64()),
            config: config(seed)?,
            members,
            epoch: Instant::now(),
            unsynced_lost: 0,
            _tmp: tmp,
        };
        for id in NODES {
            cluster.start(id).await?;
        }
        let voters = NODES
            .iter()
            .map(|&id| (id, Node::new(format!("sim-{id}"))))
            .collect::<BTreeMap<_, _>>();
        let first = cluster.member(1).running()?.raft.clone();
        first.initialize(voters).await?;
        Ok(cluster)
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("ids come from NODES")
    }

    /// Starts node `id` from its directory and makes it reachable.
    async fn start(&mut self, id: NodeId) -> anyhow::Result<()> {
        let (epoch, config, net) = (self.epoch, self.config.clone(), self.net.clone());
        let m = self.member(id);
        let log = LogStore::open(&m.dir, m.log_options(epoch))
            .await
            .with_context(|| format!("reopen the log store of node {id}"))?;
        // Taken before openraft owns the store: it drops readers from tasks
        // nobody waits for, so only this says when the directory is free.
        let closed = tokio::spawn(log.closed());
        let sm = StateMachineStore::open_with_log(m.dir.join(SNAPSHOT_DIR), Kv::default(), &log)
            .await
            .with_context(|| format!("reopen the state machine of node {id}"))?;
        let raft = Raft::new(id, config, net.factory(id), log, sm.clone()).await?;
        net.register(id, raft.clone());
        m.running = Some(Running { raft, sm, closed });
        Ok(())
    }

    /// Stops node `id`. With `power_loss` its disk first loses every unsynced
    /// byte except a random torn prefix of appends, while it runs.
    async fn stop(&mut self, id: NodeId, power_loss: Option<u64>) -> anyhow::Result<()> {
        self.net.unregister(id);
        let m = self.member(id);
        let Some(run) = m.running.take() else {
            return Ok(());
        };
        if let Some(seed) = power_loss {
            let mut torn = Rng::new(seed);
            let mut lost = 0;
            m.fs.crash_keeping(|_, unsynced| {
                let keep = torn.below(unsynced as u64 + 1) as usize;
                lost += unsynced - keep;
                keep
            });
            self.unsynced_lost += lost;
        }
        // A node whose disk vanished may already have stopped on a storage
        // error; either way it is gone after this.
        let _ = tokio::time::timeout(WAIT, run.raft.shutdown()).await;
        drop(run.raft);
        drop(run.sm);
        tokio::time::timeout(WAIT, run.closed)
            .await
            .with_context(|| format!("node {id}'s log still open {WAIT:?} after shutdown"))?
            .context("the task awaiting the log's close failed")?;
        Ok(())
    }

    /// The node that is leader in its own eyes, if exactly one is up and
    /// agreed on by itself.
    fn leader(&self) -> Option<NodeId> {
        self.members.iter().find_map(|m| {
            let run = m.running.as_ref()?;
            let metrics = run.raft.metrics().borrow_watched().clone();
            (metrics.state == ServerState::Leader && metrics.current_leader == Some(m.id))
                .then_some(m.id)
        })
    }

    /// Each node's state, term, leader, last log and commit index, for a
    /// failure's message.
    fn views(&self) -> String {
        self.members
            .iter()
            .map(|m| match m.running.as_ref() {
                None => format!("{}: down", m.id),
                Some(run) => {
                    let x = run.raft.metrics().borrow_watched().clone();
                    format!(
                        "{}: {:?} term {} leader {:?} last log {:?} locally committed {:?}",
                        m.id,
                        x.state,
                        x.current_term,
                        x.current_leader,
                        x.last_log_index,
                        x.local_committed.map(|c| c.index)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn wait_leader(&self) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            ensure!(Instant::now() < deadline, "no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the client has seen acknowledged: key, value, index.
type Acked = Arc<Mutex<Vec<(String, String, u64)>>>;

/// Writes unique keys until told to stop, through whichever node leads,
/// following `ForwardToLeader` hints and moving on after timeouts; records
/// every acknowledged write.
async fn client(seed: u64, net: SimNet, stop: Arc<AtomicBool>, acked: Acked) {
    let mut rng = Rng::new(seed ^ 0x00c1_1e47);
    let mut target = rng.pick(&NODES);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{n:06}");
        let value = format!("v{seed}-{n}");
        for _ in 0..WRITE_ATTEMPTS {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(raft) = net.raft(target) else {
                target = rng.pick(&NODES);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(kv::set(&key, &value)))
                .await
            {
                Ok(Ok(resp)) => {
                    acked
                        .lock()
                        .expect("the acked list lock is never poisoned")
                        .push((key.clone(), value.clone(), resp.log_id.index));
                    break;
                }
                Ok(Err(e)) => {
                    target = match e.forward_to_leader().and_then(|f| f.leader_id) {
                        Some(l) if l != target => l,
                        _ => rng.pick(&NODES),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => target = rng.pick(&NODES),
            }
        }
        n += 1;
        // A small pause bounds the log's growth per seed.
        tokio::time::sleep(Duration::from_millis(1 + rng.below(3))).await;
    }
}

/// One fault step of a schedule.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Lossy, slow links everywhere.
    Flaky {
        drop_per_mille: u32,
        max_delay_ms: u64,
    },
    /// The leader cut off from both others.
    IsolateLeader,
    /// Any node cut off.
    IsolateOne(NodeId),
    /// One direction of one link cut.
    OneWay(NodeId, NodeId),
    /// A node loses power; it comes back after the next step.
    PowerLoss(NodeId),
    /// The leader loses power; it comes back after the next step.
    LeaderPowerLoss,
    /// A clean shutdown and immediate restart.
    Restart(NodeId),
    /// A node's disk fails its next fdatasync (the node must stop without
    /// acknowledging what it could not sync); at the end of the step it
    /// loses power and restarts.
    DiskFails(NodeId),
    /// Everything healed.
    Heal,
}

fn draw_step(rng: &mut Rng) -> Step {
    let node = rng.pick(&NODES);
    match rng.below(9) {
        0 => Step::Flaky {
            drop_per_mille: rng.below(200) as u32,
            max_delay_ms: rng.below(20),
        },
        1 => Step::IsolateLeader,
        2 => Step::IsolateOne(node),
        3 => {
            let other = NODES[(NODES.iter().position(|&n| n == node).unwrap_or(0)
                + 1
                + rng.below(2) as usize)
                % NODES.len()];
            Step::OneWay(node, other)
        }
        4 => Step::PowerLoss(node),
        5 => Step::LeaderPowerLoss,
        6 => Step::Restart(node),
        7 => Step::DiskFails(node),
        _ => Step::Heal,
    }
}

/// What one seed saw, for the log line of a passing seed.
struct SeedReport {
    /// The fault schedule drawn.
    steps: Vec<Step>,
    /// Writes the client saw acknowledged.
    acked: usize,
    /// The common committed index the logs were compared up to.
    committed: u64,
    /// Writes sent to the isolated leader (none acknowledged).
    minority_writes: usize,
    /// What the log comparison covered.
    logs: LogCheck,
    /// Unsynced bytes power losses threw away.
    unsynced_lost: usize,
    /// What the network did.
    net: sim_net::Stats,
}

/// What a node holds as committed: locally, and as the cluster's, as the
/// leader last reported it.
fn commit_point(raft: &KvRaft) -> (Option<LogId>, Option<LogId>) {
    let m = raft.metrics().borrow_watched().clone();
    (m.local_committed, m.cluster_committed)
}

/// The explicit minority check: the leader is isolated alone; writes sent
/// to it must not be acknowledged and its commit index must not move while
/// the other two elect a leader and commit. Returns the keys written to the
/// minority side (they must never appear anywhere).
async fn minority_commits_nothing(
    cluster: &mut Cluster,
    acked: &Acked,
) -> anyhow::Result<Vec<String>> {
    cluster.net.heal();
    for id in NODES {
        if cluster.member(id).running.is_none() {
            cluster.start(id).await?;
        }
    }
    let lonely = cluster.wait_leader().await?;
    cluster.net.isolate(lonely, &NODES);
    // Let messages that were already past the cut settle.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let raft = cluster.member(lonely).running()?.raft.clone();
    let committed_before = commit_point(&raft);
    let acked_before = acked.lock().expect("never poisoned").len();

    let keys: Vec<String> = (0..3)
        .map(|i| format!("minority-{}-{i}", cluster.seed))
        .collect();
    let writes: Vec<_> = keys
        .iter()
        .map(|k| {
            let raft = raft.clone();
            let cmd = kv::set(k, "must-not-commit");
            tokio::spawn(async move { raft.client_write(cmd).await.map(|r| r.log_id) })
        })
        .collect();

    // The majority side must move on: a new leader commits new writes.
    let deadline = Instant::now() + WAIT;
    loop {
        let progressed = acked.lock().expect("never poisoned").len() >= acked_before + 5;
        if progressed {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the majority committed nothing within {WAIT:?} while node {lonely} was isolated; \
             the nodes then: {}",
            cluster.views()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let committed_after = commit_point(&raft);
    ensure!(
        committed_after == committed_before,
        "isolated node {lonely} moved its commit index from {committed_before:?} to {committed_after:?}"
    );
    // Refused (a leader that stepped down answers so) is fine; pending is
    // what an isolated leader does; acknowledged is the bug.
    for (key, write) in keys.iter().zip(writes) {
        if !write.is_finished() {
            write.abort();
        } else if let Ok(Ok(log_id)) = write.await {
            bail!("isolated node {lonely} acknowledged {key} at {log_id} while it was alone");
        }
    }
    cluster.net.heal();
    Ok(keys)
}

async fn run_seed(seed: u64) -> anyhow::Result<SeedReport> {
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::new(seed, &mut rng).await?;
    cluster.wait_leader().await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(client(
        seed,
        cluster.net.clone(),
        stop.clone(),
        acked.clone(),
    ));

    let minority_at = rng.below(STEPS);
    let mut minority_keys = Vec::new();
    let mut steps = Vec::new();
    // A node that lost power, with when it comes back.
    let mut down: Option<NodeId> = None;
    for i in 0..STEPS {
        if i == minority_at {
            minority_keys = minority_commits_nothing(&mut cluster, &acked).await?;
            down = None;
        }
        let step = draw_step(&mut rng);
        steps.push(step);
        match step {
            Step::Flaky {
                drop_per_mille,
                max_delay_ms,
            } => {
                let cut = cluster.net.faults().cut;
                cluster.net.set_faults(Faults {
                    cut,
                    drop_per_mille,
                    max_delay: Duration::from_millis(max_delay_ms),
                });
            }
            // A new partition replaces the previous one; drops and delays
            // stay.
            Step::IsolateLeader => {
                if let Some(l) = cluster.leader() {
                    cluster.net.clear_cuts();
                    cluster.net.isolate(l, &NODES);
                }
            }
            Step::IsolateOne(n) => {
                cluster.net.clear_cuts();
                cluster.net.isolate(n, &NODES);
            }
            Step::OneWay(a, b) => {
                let mut faults = cluster.net.faults();
                faults.cut = BTreeSet::from([(a, b)]);
                cluster.net.set_faults(faults);
            }
            Step::PowerLoss(_) | Step::LeaderPowerLoss if down.is_some() => {}
            Step::PowerLoss(n) => {
                cluster.stop(n, Some(rng.next_u64())).await?;
                down = Some(n);
            }
            Step::LeaderPowerLoss => {
                if let Some(l) = cluster.leader() {
                    cluster.stop(l, Some(rng.next_u64())).await?;
                    down = Some(l);
                }
            }
            Step::Restart(n) => {
                if cluster.member(n).running.is_some() {
                    cluster.stop(n, None).await?;
                    cluster.start(n).await?;
                }
            }
            Step::DiskFails(n) => {
                if let Some(m) = cluster
                    .members
                    .iter()
                    .find(|m| m.id == n && m.running.is_some())
                {
                    m.fs.inject(Fault::SyncData);
                }
            }
            Step::Heal => cluster.net.heal(),
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(150))).await;
        if let Step::DiskFails(n) = step
            && down != Some(n)
        {
            cluster.stop(n, Some(rng.next_u64())).await?;
            cluster.start(n).await?;
        }
        // A node down for a whole step comes back now.
        if let Some(n) = down
            && !matches!(step, Step::PowerLoss(_) | Step::LeaderPowerLoss)
        {
            cluster.start(n).await?;
            down = None;
        }
    }

    // Heal, bring everyone back, stop writing.
    cluster.net.heal();
    for id in NODES {
        if cluster.member(id).running.is_none() {
            cluster.start(id).await?;
        }
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, writer)
        .await
        .context("the client did not stop")??;

    let barrier = converge(&mut cluster).await?;
    let acked = std::mem::take(&mut *acked.lock().expect("never poisoned"));
    check_state_machines(&cluster, &acked, &minority_keys)?;
    ensure!(
        cluster.net.violations().is_empty(),
        "network saw violations: {:?}",
        cluster.net.violations()
    );
    let net = cluster.net.stats();
    for id in NODES {
        cluster.stop(id, None).await?;
    }
    let logs = check_logs(&cluster, &acked, barrier)?;
    Ok(SeedReport {
        logs,
        unsynced_lost: cluster.unsynced_lost,
        steps,
        acked: acked.len(),
        committed: barrier,
        minority_writes: minority_keys.len(),
        net,
    })
}

/// Waits until a leader commits a barrier write and every node has applied
/// it; returns its index. Everything committed before it is then applied
/// everywhere.
async fn converge(cluster: &mut Cluster) -> anyhow::Result<u64> {
    let deadline = Instant::now() + WAIT;
    let index = loop {
        ensure!(
            Instant::now() < deadline,
            "no barrier write within {WAIT:?} after healing"
        );
        let leader = cluster.wait_leader().await?;
        let raft = cluster.member(leader).running()?.raft.clone();
        match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(kv::set("barrier", "up"))).await
        {
            Ok(Ok(resp)) => break resp.log_id.index,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    for id in NODES {
        let raft = cluster.member(id).running()?.raft.clone();
        raft.wait(Some(WAIT))
            .applied_index_at_least(Some(index), "barrier applied")
            .await
            .with_context(|| format!("node {id} did not apply the barrier at {index}"))?;
    }
    Ok(index)
}

/// Every acknowledged key on every node, the minority's keys nowhere, and
/// all maps equal.
fn check_state_machines(
    cluster: &Cluster,
    acked: &[(String, String, u64)],
    minority_keys: &[String],
) -> anyhow::Result<()> {
    let mut maps = Vec::new();
    for m in &cluster.members {
        let run = m.running()?;
        let map = run.sm.read(|kv| kv.map.clone());
        for (key, value, index) in acked {
            ensure!(
                map.get(key) == Some(value),
                "node {}: acknowledged write {key}={value} (index {index}) lost: found {:?}; \
                 state machine at {:?}, metrics {:?}",
                m.id,
                map.get(key),
                run.sm.applied().last_applied,
                run.raft.metrics().borrow_watched().clone()
            );
        }
        for key in minority_keys {
            ensure!(
                !map.contains_key(key),
                "node {}: {key}, written only to an isolated node, was committed",
                m.id
            );
        }
        maps.push((m.id, map));
    }
    for pair in maps.windows(2) {
        let ((a, ma), (b, mb)) = (&pair[0], &pair[1]);
        if ma != mb {
            let ka: BTreeSet<_> = ma.keys().collect();
            let kb: BTreeSet<_> = mb.keys().collect();
            bail!(
                "nodes {a} and {b} diverge: only on {a}: {:?}; only on {b}: {:?}",
                ka.difference(&kb).take(5).collect::<Vec<_>>(),
                kb.difference(&ka).take(5).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

/// What the log comparison of a seed covered.
struct LogCheck {
    /// Indexes at which at least two logs' chain hashes were compared.
    hashes_compared: usize,
    /// Logs purged at all, whose chain hash at their purge point was
    /// compared where a peer knew it.
    purge_points: usize,
    /// Logs with a segment that continues a chain carried in by a snapshot
    /// (a jump past the log's end).
    carried_chains: usize,
}

/// Reads node logs from their disks (the nodes are stopped) up to the
/// common committed index `committed` and compares them: records in the
/// range every log holds, and chain hashes at every index up to
/// `committed` that two logs know — each log's purge point included, so a
/// log that jumped past a snapshot is compared with the records its peers
/// hold there.
fn check_logs(
    cluster: &Cluster,
    acked: &[(String, String, u64)],
    committed: u64,
) -> anyhow::Result<LogCheck> {
    let mut logs = Vec::new();
    let mut opened = Vec::new();
    for m in &cluster.members {
        let log = Log::open(m.dir.join(LOG_DIR), m.log_options(cluster.epoch))
            .with_context(|| format!("open node {}'s log", m.id))?;
        let first = log.state().first_index;
        let records = log
            .range(first, committed + 1)
            .with_context(|| format!("node {}: read {first}..={committed}", m.id))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("node {}: read its log", m.id))?;
        for pair in records.windows(2) {
            ensure!(
                pair[0].timestamp <= pair[1].timestamp,
                "node {}: timestamp goes back from index {} to {}",
                m.id,
                pair[0].index,
                pair[1].index
            );
        }
        for (key, _, index) in acked {
            if let Some(r) = index
                .checked_sub(first)
                .and_then(|i| records.get(i as usize))
            {
                ensure!(
                    r.payload.windows(key.len()).any(|w| w == key.as_bytes()),
                    "node {}: index {index} does not hold the acknowledged write of {key}",
                    m.id
                );
            }
        }
        logs.push((m.id, first, records));
        opened.push((m.id, log));
    }

    // Chain hashes: every record up to `committed`, and each log's hash at
    // every log's purge point (a committed index: purges never pass what
    // is applied), which it knows if that index lies between its own purge
    // point and its end.
    let purge_points: BTreeSet<u64> = logs
        .iter()
        .filter_map(|(_, first, _)| first.checked_sub(1))
        .filter(|p| *p <= committed)
        .collect();
    let mut chains: Vec<(NodeId, BTreeMap<u64, ChainHash>)> = Vec::new();
    for ((id, _, records), (_, log)) in logs.iter().zip(&opened) {
        let mut chain: BTreeMap<u64, ChainHash> =
            records.iter().map(|r| (r.index, r.chain_hash)).collect();
        for &p in &purge_points {
            if let Ok(hash) = log.chain_hash_at(p) {
                chain.insert(p, hash);
            }
        }
        chains.push((*id, chain));
    }
    let mut compared = BTreeSet::new();
    for (i, (a, chain_a)) in chains.iter().enumerate() {
        for (b, chain_b) in &chains[i + 1..] {
            for (index, hash_a) in chain_a {
                if let Some(hash_b) = chain_b.get(index) {
                    ensure!(
                        hash_a == hash_b,
                        "nodes {a} and {b}: chain hash differs at committed index {index}"
                    );
                    compared.insert(*index);
                }
            }
        }
    }
    let purged_logs = logs.iter().filter(|(_, first, _)| *first > 0).count();
    drop(opened);
    let mut carried_chains = 0;
    for m in &cluster.members {
        let report = verify_dir(
            &m.fs,
            &m.dir.join(LOG_DIR),
            Options::default().max_record_bytes,
        )
        .with_context(|| format!("verify node {}'s log", m.id))?;
        ensure!(
            report.problem.is_none(),
            "node {}: verify found {:?}",
            m.id,
            report.problem
        );
        if report.segments.iter().any(|s| s.carried) {
            carried_chains += 1;
        }
    }
    let check = LogCheck {
        hashes_compared: compared.len(),
        purge_points: purged_logs,
        carried_chains,
    };

    let common_first = logs.iter().map(|(_, f, _)| *f).max().unwrap_or(0);
    if !snapshots(cluster.seed) {
        ensure!(
            common_first == 0,
            "a log was purged in a seed without snapshots"
        );
    } else if common_first > committed {
        // A node that caught up by a snapshot covering everything up to the
        // barrier holds none of these entries; the state machines were
        // compared already, and the chain hashes above.
        return Ok(check);
    }
    let tail = |first: u64, records: &[missive_log::Entry]| -> Vec<missive_log::Entry> {
        records[(common_first - first) as usize..].to_vec()
    };
    let (id0, first0, records0) = &logs[0];
    let reference = tail(*first0, records0);
    for (id, first, records) in &logs[1..] {
        let other = tail(*first, records);
        ensure!(
            reference.len() == other.len(),
            "nodes {id0} and {id} hold {} and {} records in {common_first}..={committed}",
            reference.len(),
            other.len()
        );
        for (a, b) in reference.iter().zip(&other) {
            ensure!(
                (a.index, a.timestamp, &a.payload) == (b.index, b.timestamp, &b.payload),
                "nodes {id0} and {id} differ at committed index {}",
                a.index
            );
        }
    }
    Ok(check)
}

/// The seeds to run: `MISSIVE_CHAOS_SEED`, else 1..=`MISSIVE_CHAOS_SEEDS`.
fn seeds() -> Vec<u64> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var("MISSIVE_CHAOS_SEED"), var("MISSIVE_CHAOS_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, n) => (1..=n.unwrap_or(DEFAULT_SEEDS)).collect(),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn acknowledged_writes_survive_partitions_drops_delays_and_crashes_and_replicas_converge() {
    let mut failures = Vec::new();
    let all = Instant::now();
    for seed in seeds() {
        // One runtime per seed: nothing a seed leaves behind reaches the next.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let started = Instant::now();
        let outcome = rt.block_on(async move { tokio::spawn(run_seed(seed)).await });
        rt.shutdown_timeout(Duration::from_secs(2));
        let took = started.elapsed();
        let failure = match outcome {
            Ok(Ok(r)) => {
                eprintln!(
                    "seed {seed}: ok in {took:.2?}: {} writes acknowledged, committed index {}, \
                     {} minority writes refused, chain hashes equal at {} indexes (purge points \
                     of {} logs among them, {} logs continuing a carried chain), {} unsynced \
                     bytes lost to power losses, net {:?}, steps {:?}",
                    r.acked,
                    r.committed,
                    r.minority_writes,
                    r.logs.hashes_compared,
                    r.logs.purge_points,
                    r.logs.carried_chains,
                    r.unsynced_lost,
                    r.net,
                    r.steps
                );
                continue;
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("panicked: {}", panic_message(e)),
        };
        eprintln!(
            "seed {seed}: FAILED after {took:.2?}: {failure}\n  rerun: \
             MISSIVE_CHAOS_SEED={seed} cargo test -p missive-raft --test raft chaos:: -- --nocapture"
        );
        failures.push(format!(
            "seed {seed}: {failure} (rerun: MISSIVE_CHAOS_SEED={seed} cargo test -p missive-raft --test raft chaos:: -- --nocapture)"
        ));
    }
    eprintln!("all seeds in {:.2?}", all.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
