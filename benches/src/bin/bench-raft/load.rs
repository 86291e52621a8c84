//! The load generator both systems are driven by: N clients, each with one
//! write in flight, for a warm-up and then a measured window.
//!
//! A system gives a [`Writer`] for a case (its connections opened anew);
//! the generator knows nothing else of it, so both see exactly the same
//! load: the same clients, keys, value size, timing and bookkeeping.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use missive_benches::stats::quantile;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::{MAX_CONNECTIONS, Plan, VALUE_BYTES};
use missive_benches::cpu::{MachineTicks, cpu_seconds, own_cpu_seconds};

/// How long a client waits after a failed write before the next.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A system under load.
pub(crate) trait System {
    /// Its writer for one case.
    type Writer: Writer;

    /// Opens `connections` connections to the system for `clients`
    /// clients.
    fn writer(
        &self,
        clients: usize,
        connections: usize,
    ) -> impl Future<Output = Result<Self::Writer>> + Send;

    /// The ids of its processes, whose CPU time is measured.
    fn pids(&self) -> Vec<u32>;
}

/// Writes of one case.
pub(crate) trait Writer: Send + Sync + 'static {
    /// Writes the value to `client`'s key; resolves once the system has
    /// acknowledged it (committed).
    fn put(&self, client: usize) -> impl Future<Output = Result<()>> + Send;
}

/// The key of client `client`: each client overwrites its own key.
pub(crate) fn key_of(client: usize) -> String {
    format!("bench-raft/{client:05}")
}

/// The value every write carries: [`VALUE_BYTES`] bytes of printable ASCII
/// (missive's key-value commands carry UTF-8 strings).
pub(crate) fn value() -> String {
    (0..VALUE_BYTES)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// The connection of client `client` among `connections`: round-robin.
pub(crate) fn connection_of(client: usize, connections: usize) -> usize {
    client % connections.max(1)
}

/// What one case measured.
#[derive(Clone, Debug)]
pub(crate) struct LoadRun {
    /// Writes completed inside the measured window, per second of it.
    pub(crate) commits_per_s: f64,
    /// Latency quantiles of those writes.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Writes completed inside the window.
    pub(crate) commits: u64,
    /// Writes that failed (any time in the case).
    pub(crate) errors: u64,
    /// The first failure, to show what went wrong.
    pub(crate) first_error: Option<String>,
    /// CPU seconds the system's processes used in the window.
    pub(crate) server_cpu_s: f64,
    /// CPU seconds the load generator used in the window.
    pub(crate) client_cpu_s: f64,
    /// The share of all the machine's cores busy in the window: every
    /// process, the kernel's own work and the hypervisor's steal.
    pub(crate) machine_busy: f64,
}

/// Runs `clients` clients against `system` for the plan's warm-up and
/// measured window.
pub(crate) async fn run_load<S: System>(system: &S, clients: usize, plan: Plan) -> Result<LoadRun> {
    let connections = clients.min(MAX_CONNECTIONS);
    let writer = Arc::new(system.writer(clients, connections).await?);
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.measure;
    let pids = system.pids();
    let cpu = tokio::spawn(async move {
        sleep_until(window_start).await;
        let (server, client) = (cpu_seconds(&pids), own_cpu_seconds());
        let machine = MachineTicks::now();
        sleep_until(window_end).await;
        (
            cpu_seconds(&pids) - server,
            own_cpu_seconds() - client,
            MachineTicks::now().shares_since(&machine).0,
        )
    });
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let writer = writer.clone();
        tasks.spawn(async move { client_loop(&*writer, client, window_start, window_end).await });
    }
    let mut latencies_us = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        let client = joined.map_err(|e| anyhow!("a client task failed: {e}"))?;
        latencies_us.extend(client.latencies_us);
        errors += client.errors;
        first_error = first_error.or(client.first_error);
    }
    let (server_cpu_s, client_cpu_s, machine_busy) = cpu
        .await
        .map_err(|e| anyhow!("the CPU sampler failed: {e}"))?;
    let commits = latencies_us.len() as u64;
    if commits == 0 {
        bail!(
            "no write completed in the window ({errors} errors; first: {})",
            first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(LoadRun {
        commits_per_s: commits as f64 / plan.measure.as_secs_f64(),
        p50_us: quantile(&mut latencies_us, 0.5).unwrap_or(f64::NAN),
        p99_us: quantile(&mut latencies_us, 0.99).unwrap_or(f64::NAN),
        commits,
        errors,
        first_error,
        server_cpu_s,
        client_cpu_s,
        machine_busy,
    })
}

/// One client's record.
#[derive(Debug, Default)]
struct ClientRun {
    /// Latency of each write completed inside the window, in µs.
    latencies_us: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

/// One client: a write at a time until the window ends.
async fn client_loop<W: Writer>(
    writer: &W,
    client: usize,
    window_start: Instant,
    window_end: Instant,
) -> ClientRun {
    let mut run = ClientRun::default();
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            return run;
        }
        match writer.put(client).await {
            Ok(()) => {
                let done = Instant::now();
                if done >= window_start && done < window_end {
                    run.latencies_us
                        .push(done.duration_since(sent).as_secs_f64() * 1e6);
                }
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| format!("{e:#}"));
                // A system that refuses at once must not turn the client
                // into a busy loop that starves the others of the cores.
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_has_the_benchmark_size() {
        assert_eq!(value().len(), VALUE_BYTES);
    }

    #[test]
    fn clients_spread_evenly_over_connections() {
        let mut per_connection = [0; 16];
        for client in 0..256 {
            per_connection[connection_of(client, 16)] += 1;
        }
        assert!(per_connection.iter().all(|n| *n == 16));
        assert_eq!(connection_of(5, 0), 0);
    }
}
