//! A simulated network for clusters in one process: openraft's
//! `RaftNetworkV2` delivering each RPC by calling the target node's Raft
//! handlers directly, through faults a test controls.
//!
//! # Faults
//!
//! - **Cut links**: a set of directed `(from, to)` pairs that carry nothing.
//!   A link is checked when a request leaves, again when it arrives (after
//!   its delay) and again for the response, so nothing crosses a link after
//!   the instant it is cut — a partition is sharp, not leaky.
//! - **Down nodes**: a node that is not registered (crashed, restarting) is
//!   unreachable.
//! - **Drops**: each request and each response is lost with a probability
//!   (per mille); a lost message costs the sender a delay, then a network
//!   error, as a timeout would.
//! - **Delays**: each request and each response waits a random time up to a
//!   bound; concurrent RPCs can therefore overtake one another.
//!
//! Every random choice comes from one seeded [`Rng`]. Tasks still race on
//! real threads, so a seed fixes the fault schedule, not the interleaving.
//!
//! # Invariants it checks
//!
//! Every entry a leader sends carries its leader-assigned timestamp (the
//! `Entry` type's invariant). Requests are handed over as the values
//! themselves, so entries keep their timestamps across this network exactly
//! as the gRPC transport must; an entry without one is refused and recorded
//! as a violation the test reports.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use missive_raft::types::{LeaderId, Vote};
use missive_raft::{Node, NodeId, SnapshotFile, StateMachineStore, TypeConfig};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{Raft, Snapshot};

use super::kv::Kv;

/// A node of the test clusters: the key-value state machine over the
/// missive-log store.
pub type KvRaft = Raft<TypeConfig, StateMachineStore<Kv>>;

/// splitmix64: tiny, seedable, good enough to drive a test schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the network does to messages right now.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Directed links that carry nothing: `(from, to)`.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Chance, per mille, that a request or a response is lost.
    pub drop_per_mille: u32,
    /// Upper bound of the random delay of each request and response.
    pub max_delay: Duration,
}

/// Counts of what the network did, for the test's report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Requests and responses that arrived.
    pub delivered: u64,
    /// Requests and responses lost to the drop probability.
    pub dropped: u64,
    /// Messages refused at a cut link or a down node.
    pub refused: u64,
    /// Snapshots installed on a follower through this network.
    pub snapshots: u64,
}

#[derive(Default)]
struct State {
    /// What the network does to messages now.
    faults: Faults,
    /// The running nodes; an absent node is down.
    nodes: BTreeMap<NodeId, KvRaft>,
    /// Invariant violations seen in transit.
    violations: Vec<String>,
    /// What the network did.
    stats: Stats,
}

/// The network; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct SimNet {
    /// The fault plan, the node registry and what was seen. A std mutex,
    /// held only for a few field reads or writes and never across an
    /// `.await`.
    state: Arc<Mutex<State>>,
    /// The random source of drops and delays; its own lock for the same
    /// reason as `state`.
    rng: Arc<Mutex<Rng>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these is already a failed test.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a message did not get through.
enum Lost {
    /// The link is cut or the target is down: back off.
    Unreachable(String),
    /// The message was dropped: the sender sees a network error.
    Dropped,
}

impl Lost {
    fn rpc(self) -> RPCError<TypeConfig> {
        match self {
            Lost::Unreachable(why) => Unreachable::from_string(why).into(),
            Lost::Dropped => NetworkError::from_string("message dropped").into(),
        }
    }

    fn streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Lost::Unreachable(why) => Unreachable::from_string(why).into(),
            Lost::Dropped => NetworkError::from_string("message dropped").into(),
        }
    }
}

impl SimNet {
    /// A healed network with no nodes; `seed` drives its drops and delays.
    pub fn new(seed: u64) -> Self {
        SimNet {
            state: Arc::default(),
            rng: Arc::new(Mutex::new(Rng::new(seed))),
        }
    }

    /// Makes `id` reachable through `raft`.
    pub fn register(&self, id: NodeId, raft: KvRaft) {
        lock(&self.state).nodes.insert(id, raft);
    }

    /// Makes `id` unreachable (it crashed or is shutting down).
    pub fn unregister(&self, id: NodeId) {
        lock(&self.state).nodes.remove(&id);
    }

    /// The handle of `id` if it is up (what a client reaching it gets).
    pub fn raft(&self, id: NodeId) -> Option<KvRaft> {
        lock(&self.state).nodes.get(&id).cloned()
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// The fault plan in force.
    pub fn faults(&self) -> Faults {
        lock(&self.state).faults.clone()
    }

    /// Cuts every link between `node` and the others, both ways.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        let mut st = lock(&self.state);
        for &o in others.iter().filter(|&&o| o != node) {
            st.faults.cut.insert((node, o));
            st.faults.cut.insert((o, node));
        }
    }

    /// Restores every link; drops and delays go on.
    pub fn clear_cuts(&self) {
        lock(&self.state).faults.cut.clear();
    }

    /// Restores every link and stops dropping and delaying.
    pub fn heal(&self) {
        lock(&self.state).faults = Faults::default();
    }

    /// Invariant violations seen in transit (empty when all is well).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// What the network did so far.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats
    }

    /// The client end `from` uses to reach `to`.
    pub fn client(&self, from: NodeId, to: NodeId) -> SimLink {
        SimLink {
            net: self.clone(),
            from,
            to,
        }
    }

    /// Draws whether a message is dropped and how long it travels.
    fn draw(&self) -> (bool, Duration) {
        let faults = lock(&self.state).faults.clone();
        let mut rng = lock(&self.rng);
        let dropped = rng.chance(faults.drop_per_mille);
        let max = faults.max_delay.as_micros() as u64;
        let delay = Duration::from_micros(rng.below(max + 1));
        (dropped, delay)
    }

    /// The target's handle if `from → to` carries messages now.
    fn link(&self, from: NodeId, to: NodeId) -> Result<KvRaft, Lost> {
        let mut st = lock(&self.state);
        if st.faults.cut.contains(&(from, to)) {
            st.stats.refused += 1;
            return Err(Lost::Unreachable(format!("link {from} -> {to} is cut")));
        }
        match st.nodes.get(&to) {
            Some(raft) => Ok(raft.clone()),
            None => {
                st.stats.refused += 1;
                Err(Lost::Unreachable(format!("node {to} is down")))
            }
        }
    }

    /// Carries one message over `from → to`: checks the link, maybe drops
    /// it, delays it, and checks the link again on arrival.
    async fn carry(&self, from: NodeId, to: NodeId) -> Result<KvRaft, Lost> {
        self.link(from, to)?;
        let (dropped, delay) = self.draw();
        tokio::time::sleep(delay).await;
        if dropped {
            lock(&self.state).stats.dropped += 1;
            return Err(Lost::Dropped);
        }
        let raft = self.link(from, to)?;
        lock(&self.state).stats.delivered += 1;
        Ok(raft)
    }

    /// One request-response exchange: the request over `from → to`, the
    /// handler `call` on the target, the response over `to → from`.
    async fn exchange<T, F, Fut>(&self, from: NodeId, to: NodeId, call: F) -> Result<T, Lost>
    where
        F: FnOnce(KvRaft) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let target = self.carry(from, to).await?;
        let resp = call(target).await.map_err(Lost::Unreachable)?;
        self.carry(to, from).await?;
        Ok(resp)
    }

    fn violation(&self, what: String) {
        lock(&self.state).violations.push(what);
    }
}

impl SimNet {
    /// The network factory of node `from`.
    pub fn factory(&self, from: NodeId) -> SimFactory {
        SimFactory {
            net: self.clone(),
            from,
        }
    }
}

/// The network factory one node is started with.
pub struct SimFactory {
    /// The network its clients send through.
    net: SimNet,
    /// The node whose messages this factory's clients send.
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for SimFactory {
    type Network = SimLink;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> SimLink {
        self.net.client(self.from, target)
    }
}

/// One node's connection to one peer.
pub struct SimLink {
    /// The network it sends through.
    net: SimNet,
    /// The sending node.
    from: NodeId,
    /// The peer.
    to: NodeId,
}

impl SimLink {
    /// Bounds a handler call by the RPC's hard deadline, as a real
    /// transport would.
    async fn within<T, E: std::fmt::Display>(
        option: &RPCOption,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("target failed: {e}")),
            Err(_) => Err("deadline exceeded".into()),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for SimLink {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if let Some(e) = rpc.entries.iter().find(|e| e.timestamp_ms.is_none()) {
            let what = format!(
                "{} -> {}: entry {} sent without its leader timestamp",
                self.from, self.to, e.log_id
            );
            self.net.violation(what.clone());
            return Err(Unreachable::from_string(what).into());
        }
        self.net
            .exchange(self.from, self.to, |raft| async move {
                Self::within(&option, raft.append_entries(rpc)).await
            })
            .await
            .map_err(Lost::rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .exchange(self.from, self.to, |raft| async move {
                Self::within(&option, raft.vote(rpc)).await
            })
            .await
            .map_err(Lost::rpc)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .exchange(self.from, self.to, |raft| async move {
                Self::within(&option, raft.pre_vote(rpc)).await
            })
            .await
            .map_err(Lost::rpc)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<LeaderId, NodeId, Node, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // The receiver copies the sender's file through the open handle,
        // which stays valid if the sender replaces its snapshot meanwhile.
        let send = self.net.exchange(self.from, self.to, |raft| async move {
            Self::within(&option, raft.install_full_snapshot(vote, snapshot)).await
        });
        let resp = tokio::select! {
            closed = cancel => Err(closed.into()),
            sent = send => sent.map_err(Lost::streaming),
        };
        if resp.is_ok() {
            lock(&self.net.state).stats.snapshots += 1;
        }
        resp
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .exchange(self.from, self.to, |raft| async move {
                Self::within(&option, raft.handle_transfer_leader(req)).await
            })
            .await
            .map_err(Lost::rpc)
    }
}
