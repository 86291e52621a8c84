//! Structured logs on stderr through `tracing`: human-readable lines, or one
//! JSON object per line (`--log-format json`) for log collectors. Levels come
//! from `MISSIVE_LOG` in `tracing`'s target syntax (`info`,
//! `warn,missive_raft=debug`); the default is `info` for missive's own crates
//! and `warn` for the libraries under them (openraft narrates every
//! election at `info`). Request ids travel as
//! span fields (`request_id` on every ChatService call), so every line a call
//! logs carries the id of the call.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's subscriber. A bad `MISSIVE_LOG` is reported and
/// replaced by the default rather than silencing the logs.
pub fn init(format: LogFormat) {
    let filter = match std::env::var("MISSIVE_LOG") {
        Ok(spec) => Targets::from_str(&spec).unwrap_or_else(|e| {
            eprintln!("MISSIVE_LOG={spec:?} is not a filter ({e}); logging at info");
            default_filter()
        }),
        Err(_) => default_filter(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    // A second subscriber (a test harness's) is left in place.
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// `info` for missive's crates (targets `missive`, `missive_raft`, …: a
/// target matches by prefix), `warn` for the rest.
fn default_filter() -> Targets {
    Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("missive", tracing::Level::INFO)
}
