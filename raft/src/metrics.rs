//! Prometheus metrics of replication: how long durable appends and commits
//! take, and each partition's leadership and progress.
//!
//! Latencies are process-wide histograms, observed where the work happens
//! (the log writer thread, the write path); they cost an atomic add each.
//! Leadership and indexes are gauges set from [`NodeStatus`] when metrics
//! are scraped ([`observe_status`]), so the raft core does no extra work
//! between scrapes. A process runs one node; tests that run several in one
//! process see their observations summed, which is what a scrape of that
//! process should say.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::node::NodeStatus;

/// Latency buckets from 50 µs to about 3.3 s (17 doublings): an fdatasync
/// on a fast disk is tens of microseconds, a stalled commit seconds.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 17)
}

/// One group commit of the raft log: the write and its fdatasync.
pub(crate) static LOG_APPEND_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(latency_buckets()));

/// Entries per group commit: how much each fdatasync carries.
pub(crate) static LOG_APPEND_ENTRIES: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(1.0, 2.0, 13)));

/// Entries per group commit of a state machine: how many one flush of the
/// projections carries (see `sm_store`).
pub(crate) static APPLY_GROUP_ENTRIES: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(1.0, 2.0, 13)));

/// A write through this node, from the call to the state machine's reply
/// (replicated, committed and applied on the leader), forwards included.
pub(crate) static COMMIT_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(latency_buckets()));

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabel {
    partition: u32,
    follower: u64,
}

/// The gauges [`observe_status`] sets.
struct StatusGauges {
    partitions: Gauge,
    partitions_led: Gauge,
    leader: Family<PartitionLabel, Gauge>,
    term: Family<PartitionLabel, Gauge>,
    committed: Family<PartitionLabel, Gauge>,
    applied: Family<PartitionLabel, Gauge>,
    apply_lag: Family<PartitionLabel, Gauge>,
    follower_lag: Family<FollowerLabel, Gauge>,
}

static STATUS: LazyLock<StatusGauges> = LazyLock::new(|| StatusGauges {
    partitions: Gauge::default(),
    partitions_led: Gauge::default(),
    leader: Family::default(),
    term: Family::default(),
    committed: Family::default(),
    applied: Family::default(),
    apply_lag: Family::default(),
    follower_lag: Family::default(),
});

/// Adds replication's series to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "missive_log_append_seconds",
        "Raft log group commits: the write and its fdatasync",
        LOG_APPEND_SECONDS.clone(),
    );
    registry.register(
        "missive_log_append_entries",
        "Entries made durable by one raft log group commit",
        LOG_APPEND_ENTRIES.clone(),
    );
    registry.register(
        "missive_apply_group_entries",
        "Entries applied and made visible by one flush of a state machine",
        APPLY_GROUP_ENTRIES.clone(),
    );
    registry.register(
        "missive_raft_commit_seconds",
        "Writes through this node, from the call to the applied reply",
        COMMIT_SECONDS.clone(),
    );
    let s = &*STATUS;
    registry.register(
        "missive_raft_partitions",
        "Partitions this node replicates",
        s.partitions.clone(),
    );
    registry.register(
        "missive_raft_partitions_led",
        "Partitions this node leads",
        s.partitions_led.clone(),
    );
    registry.register(
        "missive_raft_leader",
        "The partition's leader as this node knows it (0: none known)",
        s.leader.clone(),
    );
    registry.register("missive_raft_term", "The partition's term", s.term.clone());
    registry.register(
        "missive_raft_commit_index",
        "The last committed index this node knows",
        s.committed.clone(),
    );
    registry.register(
        "missive_raft_applied_index",
        "The last index applied to this node's state machine",
        s.applied.clone(),
    );
    registry.register(
        "missive_raft_apply_lag",
        "Committed entries not yet applied on this node",
        s.apply_lag.clone(),
    );
    registry.register(
        "missive_raft_follower_lag",
        "Entries a follower is behind the leader's log (on the leader only)",
        s.follower_lag.clone(),
    );
}

/// Sets the status gauges from `status` (a scrape calls this first).
pub fn observe_status(status: &NodeStatus) {
    let s = &*STATUS;
    s.partitions.set(status.partitions.len() as i64);
    let mut led = 0;
    // A follower whose lag was reported by an earlier leadership must not
    // linger with a stale value: the family is rebuilt on every scrape.
    s.follower_lag.clear();
    for p in &status.partitions {
        let label = PartitionLabel {
            partition: p.partition,
        };
        if p.leader == Some(status.node_id) {
            led += 1;
        }
        let committed = p.committed.unwrap_or(0);
        let applied = p.applied.unwrap_or(0);
        s.leader
            .get_or_create(&label)
            .set(gauge(p.leader.unwrap_or(0)));
        s.term.get_or_create(&label).set(gauge(p.term));
        s.committed.get_or_create(&label).set(gauge(committed));
        s.applied.get_or_create(&label).set(gauge(applied));
        s.apply_lag
            .get_or_create(&label)
            .set(gauge(committed.saturating_sub(applied)));
        for f in &p.followers {
            s.follower_lag
                .get_or_create(&FollowerLabel {
                    partition: p.partition,
                    follower: f.id,
                })
                .set(gauge(f.lag));
        }
    }
    s.partitions_led.set(led);
}

/// Gauges are signed 64-bit; indexes and ids never reach 2^63.
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
