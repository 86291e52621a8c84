//! Checks of the bench's own machinery: the log is reproducible from its
//! seed, both engines hold exactly the model after a load and a reopen,
//! and the checker notices a store that holds more than its applied index.

use crate::apply::apply_batch;
use crate::check::{compare, replay_to};
use crate::model::Model;
use crate::workload::Workload;
use crate::{Engine, open_store};

const SEED: u64 = 7;
const EVENTS: u64 = 3_000;

#[test]
fn the_same_seed_gives_the_same_log() {
    let (mut a, mut b) = (Workload::new(SEED, EVENTS), Workload::new(SEED, EVENTS));
    while let Some(batch) = a.next_batch() {
        let other = b.next_batch().expect("both logs have the same length");
        assert_eq!(format!("{batch:?}"), format!("{other:?}"));
    }
    assert!(b.next_batch().is_none());
}

#[test]
fn both_engines_hold_the_model_after_a_load_and_a_reopen() -> anyhow::Result<()> {
    for engine in [Engine::Sled, Engine::Redb] {
        let dir = tempfile::tempdir()?;
        let mut store = open_store(engine, dir.path())?;
        let mut workload = Workload::new(SEED, EVENTS);
        let mut model = Model::default();
        while let Some(batch) = workload.next_batch() {
            store.write(&mut |txn| apply_batch(txn, &batch))?;
            model.write(&mut |txn| apply_batch(txn, &batch))?;
        }
        store.close()?;
        let store = open_store(engine, dir.path())?;
        let comparison = compare(store.as_ref(), &model)?;
        assert_eq!(comparison.first_difference, None, "{}", engine.name());
        assert!(comparison.rows > EVENTS);
    }
    Ok(())
}

#[test]
fn the_checker_finds_a_batch_beyond_the_applied_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open_store(Engine::Redb, dir.path())?;
    let mut workload = Workload::new(SEED, EVENTS);
    let mut last = None;
    for _ in 0..40 {
        let batch = workload.next_batch().expect("the log has 40 batches");
        store.write(&mut |txn| apply_batch(txn, &batch))?;
        last = Some(batch.last_index());
    }
    let mut model = Model::default();
    // The model stops one batch short of the store.
    let mut replay = Workload::new(SEED, EVENTS);
    let mut short = None;
    for _ in 0..39 {
        short = replay.next_batch().map(|b| b.last_index());
    }
    replay_to(&mut Workload::new(SEED, EVENTS), &mut model, short)?;
    assert_ne!(short, last);
    let comparison = compare(store.as_ref(), &model)?;
    assert!(comparison.first_difference.is_some());
    Ok(())
}
