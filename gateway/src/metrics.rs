//! The gateway's Prometheus series, read from its [`Stats`] counters when
//! metrics are scraped: the session code only bumps atomics.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::outbox::{Stats, StatsSnapshot};

/// Encodes a gateway's counters (see [`crate::Gateway::register_metrics`]).
#[derive(Debug)]
pub(crate) enum StatsCollector {
    /// This process's counters, read at each scrape.
    Live(Arc<Stats>),
    /// Counters gathered already: a gateway of several processes adds up
    /// theirs before it renders them.
    Fixed(StatsSnapshot),
}

/// Adds the gateway's series (`missive_ws_*`) to `registry`, with the
/// values of `snapshot`.
pub fn register_snapshot(
    registry: &mut prometheus_client::registry::Registry,
    snapshot: StatsSnapshot,
) {
    registry.register_collector(Box::new(StatsCollector::Fixed(snapshot)));
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = match self {
            StatsCollector::Live(stats) => stats.snapshot(),
            StatsCollector::Fixed(snapshot) => *snapshot,
        };
        let gauges = [
            (
                "missive_ws_connections",
                "WebSocket connections open now",
                s.connections as i64,
            ),
            (
                "missive_ws_queue_high_water",
                "The most frames one connection has had queued at once",
                s.queue_high_water as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "missive_ws_refused",
                "WebSocket connections refused at the connection cap",
                s.refused,
            ),
            (
                "missive_ws_slow_consumers",
                "WebSocket connections closed because their send queue was full",
                s.slow_consumers,
            ),
            (
                "missive_ws_requests",
                "Request frames read from authenticated WebSocket connections",
                s.requests,
            ),
            (
                "missive_ws_rate_limited",
                "WebSocket requests refused by the per-connection rate limit",
                s.rate_limited,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}
