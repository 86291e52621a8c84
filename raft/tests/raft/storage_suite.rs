//! openraft's own storage conformance suite, run over the missive-log store
//! (real directories, real fdatasync) and the key-value state machine with
//! file-backed snapshots. Every test of the suite gets a fresh partition
//! directory.

use missive_raft::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

use crate::support::ManualClock;
use crate::support::kv::Kv;

/// Builds a store on a fresh temporary partition directory, removed when the
/// returned guard drops.
struct MissiveStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<Kv>, TempDir> for MissiveStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore<Kv>), StorageError<TypeConfig>> {
        let open_err = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
        };
        let dir = tempfile::tempdir().map_err(open_err)?;
        let clock = ManualClock::at(1_700_000_000_000);
        let log = LogStore::open(dir.path(), clock.options())
            .await
            .map_err(|e| open_err(e.into()))?;
        let sm =
            StateMachineStore::open(dir.path().join(missive_raft::SNAPSHOT_DIR), Kv::default())
                .await
                .map_err(|e| open_err(e.into()))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_the_missive_log_store() {
    Suite::test_all(MissiveStoreBuilder)
        .await
        .expect("openraft's storage suite");
}
