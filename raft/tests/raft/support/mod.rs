//! What raft's integration tests share: a small, real state machine and
//! ways to open stores on temporary directories with an injected clock.

pub use missive_raft::kv;

pub mod sim_net;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use missive_log::{Clock, Options};
use missive_raft::{LogStore, SNAPSHOT_DIR, StateMachineStore};

/// A clock the test sets by hand.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Log options that read this clock.
    pub fn options(&self) -> Options {
        let now = self.0.clone();
        Options {
            clock: Clock::new(move || now.load(Ordering::SeqCst)),
            ..Options::default()
        }
    }
}

/// Opens the log store of the partition in `dir`.
pub async fn open_log(dir: &Path, clock: &ManualClock) -> LogStore {
    LogStore::open(dir, clock.options())
        .await
        .expect("open log store")
}

/// Opens a key-value state machine with its snapshots in `dir`.
pub async fn open_kv(dir: &Path) -> StateMachineStore<kv::Kv> {
    StateMachineStore::open(dir.join(SNAPSHOT_DIR), kv::Kv::default())
        .await
        .expect("open state machine")
}
