//! The state machine store's group commit: batches queued while the apply
//! thread is busy are applied together and flushed once, and what they
//! wrote becomes visible — to `wait_applied`, `read` and the applied state —
//! only with that flush.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream;
use missive_raft::kv::{self, Kv, KvView};
use missive_raft::types::{LeaderId, LogId, Payload};
use missive_raft::{
    AppliedState, BoxError, CommandEntry, Entry, Reply, StateMachine, StateMachineStore,
};
use openraft::storage::RaftStateMachine;

/// The test's hold on the first apply.
#[derive(Default)]
struct Gate {
    /// An apply has started and waits for `open`.
    entered: bool,
    open: bool,
}

type Shared<T> = Arc<(Mutex<T>, Condvar)>;

/// The key-value state machine, with every apply held until the gate opens
/// and the commands of each flush recorded.
struct Gated {
    kv: Kv,
    gate: Shared<Gate>,
    /// Commands applied per flush, in order.
    flushes: Arc<Mutex<Vec<usize>>>,
    since_flush: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateMachine for Gated {
    type Snapshot = KvView;

    fn applied_state(&self) -> Result<AppliedState, BoxError> {
        self.kv.applied_state()
    }

    fn apply(
        &mut self,
        commands: &[CommandEntry<'_>],
        after: &AppliedState,
    ) -> Result<Vec<Reply>, BoxError> {
        let (m, changed) = &*self.gate;
        let mut gate = lock(m);
        gate.entered = true;
        changed.notify_all();
        while !gate.open {
            gate = changed.wait(gate).unwrap_or_else(PoisonError::into_inner);
        }
        drop(gate);
        self.since_flush += commands.len();
        self.kv.apply(commands, after)
    }

    fn flush(&mut self) -> Result<(), BoxError> {
        lock(&self.flushes).push(std::mem::take(&mut self.since_flush));
        Ok(())
    }

    fn begin_snapshot(&mut self) -> Result<KvView, BoxError> {
        self.kv.begin_snapshot()
    }

    fn install_snapshot(
        &mut self,
        state: &AppliedState,
        data: &mut dyn Read,
    ) -> Result<(), BoxError> {
        self.kv.install_snapshot(state, data)
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ),
        timestamp_ms: Some(1_700_000_000_000 + index),
        payload: Payload::Normal(kv::set(&format!("k{index}"), &index.to_string())),
    }
}

/// Hands `entry(index)` to the store as openraft does: one apply call.
async fn queue(store: &mut StateMachineStore<Gated>, index: u64) {
    store
        .apply(stream::iter([Ok((entry(index), None))]))
        .await
        .expect("queue a batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_queued_behind_a_busy_apply_are_flushed_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate: Shared<Gate> = Arc::default();
    let flushes = Arc::new(Mutex::new(Vec::new()));
    let mut store = StateMachineStore::open(
        dir.path(),
        Gated {
            kv: Kv::default(),
            gate: gate.clone(),
            flushes: flushes.clone(),
            since_flush: 0,
        },
    )
    .await
    .expect("open");

    // Batch 1 reaches the state machine and is held there.
    queue(&mut store, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lock(&gate.0).entered {
        assert!(Instant::now() < deadline, "batch 1 never reached apply");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ten more queue behind it, one apply call each.
    for i in 2..=11 {
        queue(&mut store, i).await;
    }
    assert!(
        !store.wait_applied(1, Duration::from_millis(50)).await,
        "batch 1 counts as visible before its flush"
    );
    assert_eq!(store.applied().last_applied, None);

    {
        let (m, changed) = &*gate;
        lock(m).open = true;
        changed.notify_all();
    }
    assert!(
        store.wait_applied(11, Duration::from_secs(10)).await,
        "the queued batches were not applied"
    );
    // Batch 1 alone, then the ten that waited, in one flush.
    assert_eq!(*lock(&flushes), vec![1, 10]);
    let map = store.read(|g| g.kv.map.clone());
    assert_eq!(map.len(), 11);
    assert_eq!(map.get("k11").map(String::as_str), Some("11"));
    assert_eq!(store.applied().last_applied.map(|l| l.index), Some(11));
}
