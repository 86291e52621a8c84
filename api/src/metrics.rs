//! Prometheus metrics of the chat: messages sent, events delivered and how
//! long delivery took, rate-limit rejections, push outcomes and backlog.
//!
//! Counters and histograms are process-wide and observed where the work
//! happens (an atomic add each). Levels that live in the projections or the
//! hub (push backlog, dead letters, subscriptions) are read when metrics are
//! scraped, by [`Chat::observe_metrics`], so nothing on the write path keeps
//! them up to date. [`render`] is the whole node's `/metrics` body:
//! replication's series (`missive_raft::metrics`) and these.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redb::ReadableTableMetadata;

use crate::chat::Chat;
use crate::error::Error;
use crate::store::{self, StoreError};

/// Messages accepted through this node's ChatService (retries that found
/// their `client_msg_id` already sent are not counted again).
pub(crate) static MESSAGES_SENT: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Events handed to a live subscription on this node.
pub(crate) static EVENTS_DELIVERED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// From an event's commit timestamp to its hand-off to this node's live
/// subscriptions: replication, apply and routing, as the server sees it.
pub(crate) static DELIVERY_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16)));

/// The count and sum of [`DELIVERY_SECONDS`]' observations, for
/// `ChatAdmin/Status` (the histogram does not give its own back).
static DELIVERIES_TIMED: AtomicU64 = AtomicU64::new(0);
static DELIVERY_MICROS: AtomicU64 = AtomicU64::new(0);

/// How long each durable commit of a projection store took: while it runs,
/// its partition applies nothing (docs/projection-store.md, "Durable
/// commits in the node").
pub(crate) static DURABLE_COMMIT_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_5, 2.0, 14)));

/// How long each fdatasync of a projection store's write-behind thread
/// took, the writes queued before it included: how far a durable commit's
/// durability trails its return.
pub(crate) static STORE_SYNC_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_5, 2.0, 14)));

/// Subscriptions closed because they could not keep up.
pub(crate) static SLOW_SUBSCRIBERS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Writes refused by the per-user rate limit.
pub(crate) static RATE_LIMITED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Webhook notifications that succeeded, and those dead-lettered.
pub(crate) static PUSH_DELIVERED: LazyLock<Counter> = LazyLock::new(Counter::default);
pub(crate) static PUSH_DEAD_LETTERED: LazyLock<Counter> = LazyLock::new(Counter::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u32,
}

/// Levels read at scrape time.
struct Levels {
    subscriptions: Gauge,
    push_backlog: Family<PartitionLabel, Gauge>,
    dead_letters: Family<PartitionLabel, Gauge>,
}

static LEVELS: LazyLock<Levels> = LazyLock::new(|| Levels {
    subscriptions: Gauge::default(),
    push_backlog: Family::default(),
    dead_letters: Family::default(),
});

/// Adds the chat's series to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "missive_messages_sent",
        "Messages accepted through this node's ChatService",
        MESSAGES_SENT.clone(),
    );
    registry.register(
        "missive_events_delivered",
        "Events handed to live subscriptions on this node",
        EVENTS_DELIVERED.clone(),
    );
    registry.register(
        "missive_delivery_seconds",
        "From an event's commit timestamp to its hand-off to subscriptions",
        DELIVERY_SECONDS.clone(),
    );
    registry.register(
        "missive_store_durable_commit_seconds",
        "Durable commits of the projection stores; the partition's applies wait for each",
        DURABLE_COMMIT_SECONDS.clone(),
    );
    registry.register(
        "missive_store_sync_seconds",
        "The projection stores' write-behind fdatasyncs, with the writes queued before each",
        STORE_SYNC_SECONDS.clone(),
    );
    registry.register(
        "missive_slow_subscribers",
        "Subscriptions closed because their queue was full",
        SLOW_SUBSCRIBERS.clone(),
    );
    registry.register(
        "missive_rate_limited",
        "Writes refused by ChatService's per-user rate limit",
        RATE_LIMITED.clone(),
    );
    registry.register(
        "missive_push_delivered",
        "Webhook notifications delivered",
        PUSH_DELIVERED.clone(),
    );
    registry.register(
        "missive_push_dead_lettered",
        "Webhook notifications dead-lettered after their last attempt",
        PUSH_DEAD_LETTERED.clone(),
    );
    let l = &*LEVELS;
    registry.register(
        "missive_subscriptions",
        "Live subscriptions on this node",
        l.subscriptions.clone(),
    );
    registry.register(
        "missive_push_backlog",
        "Committed messages the push notifier has not settled yet",
        l.push_backlog.clone(),
    );
    registry.register(
        "missive_push_dead_letters",
        "Dead letters waiting to be re-driven",
        l.dead_letters.clone(),
    );
}

/// A registry with every series of a chat node: replication's and the
/// chat's. A binary adds its own (a gateway's) before serving it.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    missive_raft::metrics::register(&mut r);
    register(&mut r);
    r
}

/// Observes the delivery latency of an event committed at `timestamp_ms`.
pub(crate) fn observe_delivery(timestamp_ms: u64) {
    if timestamp_ms == 0 {
        return;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    // Clocks of the proposing leader and this node may differ a little: a
    // negative delay is recorded as zero rather than dropped.
    let secs = ((now_ms - timestamp_ms as f64) / 1000.0).max(0.0);
    DELIVERY_SECONDS.observe(secs);
    DELIVERIES_TIMED.fetch_add(1, Ordering::Relaxed);
    DELIVERY_MICROS.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
}

impl Chat {
    /// Sets the levels read at scrape time: replication status, live
    /// subscriptions, each partition's push backlog and dead letters.
    pub async fn observe_metrics(&self) -> Result<(), Error> {
        missive_raft::metrics::observe_status(&self.node().status());
        let l = &*LEVELS;
        l.subscriptions
            .set(i64::try_from(self.hub().subscriptions()).unwrap_or(i64::MAX));
        for (partition, backlog, dead) in levels(self).await? {
            let label = PartitionLabel { partition };
            l.push_backlog
                .get_or_create(&label)
                .set(i64::try_from(backlog).unwrap_or(i64::MAX));
            l.dead_letters
                .get_or_create(&label)
                .set(i64::try_from(dead).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// The node's `/metrics` body in the OpenMetrics text format, levels
    /// refreshed first.
    pub async fn render_metrics(&self, registry: &Registry) -> Result<String, Error> {
        self.observe_metrics().await?;
        Ok(render(registry))
    }
}

/// What `ChatAdmin/Status` reports of this node's chat.
pub(crate) async fn admin_status(
    chat: &Chat,
) -> Result<missive_proto::v1::AdminStatusResponse, Error> {
    let status = chat.node().status();
    let levels = levels(chat).await?;
    let timed = DELIVERIES_TIMED.load(Ordering::Relaxed);
    let mean_ms = if timed == 0 {
        0.0
    } else {
        DELIVERY_MICROS.load(Ordering::Relaxed) as f64 / 1000.0 / timed as f64
    };
    Ok(missive_proto::v1::AdminStatusResponse {
        cluster: Some(status.to_pb()),
        subscriptions: chat.hub().subscriptions() as u64,
        push_backlog: levels.iter().map(|l| l.1).collect(),
        dead_letters: levels.iter().map(|l| l.2).collect(),
        messages_sent: MESSAGES_SENT.get(),
        events_delivered: EVENTS_DELIVERED.get(),
        rate_limited: RATE_LIMITED.get(),
        deliveries_timed: timed,
        delivery_mean_ms: mean_ms,
    })
}

/// Each partition's push backlog and dead letters: `(partition, backlog,
/// dead letters)`.
async fn levels(chat: &Chat) -> Result<Vec<(u32, u64, u64)>, Error> {
    chat.read(|chat| {
        let mut out = Vec::new();
        for (p, s) in chat.stores().iter().enumerate() {
            let txn = s.read()?;
            let backlog = txn
                .open_table(store::PUSH_QUEUE)
                .map_err(StoreError::from)?
                .len()
                .map_err(StoreError::from)?;
            let dead = txn
                .open_table(store::DEAD_LETTERS)
                .map_err(StoreError::from)?
                .len()
                .map_err(StoreError::from)?;
            out.push((p as u32, backlog, dead));
        }
        Ok(out)
    })
    .await
}

/// `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail but for a metric whose encoder
    // reports an error, which none of ours does.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
