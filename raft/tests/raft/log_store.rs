//! The missive-log store beyond openraft's suite: durability across reopen,
//! identical records on replicas, leader timestamps, and refusal of
//! misplaced appends.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use missive_log::Options;
use missive_log::fs::{FileSystem, LogFile, Mapping, StdFs};

use missive_raft::types::{ClusterMembership, LeaderId, LogId, Vote};
use missive_raft::{Entry, LogStore, META_FILE, Node, TypeConfig};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;

use crate::support::{ManualClock, kv, open_log};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: 1 }, index)
}

/// Entries as a leader of `term` creates them: no timestamp yet.
fn leader_entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry> {
    indexes
        .map(|i| match i % 3 {
            0 => Entry::new_blank(log_id(term, i)),
            1 => Entry::new_normal(log_id(term, i), kv::set(&format!("k{i}"), "v")),
            _ => Entry::new_membership(
                log_id(term, i),
                ClusterMembership::new(
                    vec![BTreeSet::from([1, 2, 3])],
                    BTreeMap::from([
                        (1, Node::new("127.0.0.1:7001")),
                        (2, Node::new("127.0.0.1:7002")),
                        (3, Node::new("127.0.0.1:7003")),
                    ]),
                )
                .expect("valid membership"),
            ),
        })
        .collect()
}

/// Appends and waits for the flush callback.
async fn append(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.map_err(|_| io::Error::other("callback dropped"))?
}

async fn read_all(store: &LogStore) -> Vec<Entry> {
    store
        .reader()
        .try_get_log_entries(..)
        .await
        .expect("read entries")
}

#[tokio::test]
async fn vote_committed_and_purged_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_000);
    let mut store = open_log(dir.path(), &clock).await;
    append(&mut store, leader_entries(2, 0..10))
        .await
        .expect("append");
    let vote = Vote::new_committed(3, 2);
    store.save_vote(&vote).await.expect("save vote");
    store
        .save_committed(Some(log_id(2, 8)))
        .await
        .expect("save committed");
    store.purge(log_id(2, 4)).await.expect("purge");
    let before = read_all(&store).await;
    store.close().await;

    let mut store = open_log(dir.path(), &clock).await;
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(log_id(2, 8))
    );
    assert_eq!(store.reader().read_vote().await.expect("vote"), Some(vote));
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
    let after = read_all(&store).await;
    assert_eq!(after, before, "entries 5..=9 come back as they were");
    assert_eq!(after.first().map(|e| e.log_id.index), Some(5));
}

#[tokio::test]
async fn a_purge_cut_short_by_a_crash_is_finished_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_000);
    let mut store = open_log(dir.path(), &clock).await;
    append(&mut store, leader_entries(1, 0..10))
        .await
        .expect("append");
    store.purge(log_id(1, 6)).await.expect("purge");
    store.close().await;
    // The crash: raft-meta already says "purged up to 6", but the log's own
    // purge point never reached the disk.
    std::fs::remove_file(dir.path().join(missive_raft::LOG_DIR).join("meta"))
        .expect("remove the log's purge point");

    let mut store = open_log(dir.path(), &clock).await;
    assert_eq!(store.log_state().first_index, 7);
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 6)));
    assert_eq!(
        read_all(&store).await.first().map(|e| e.log_id.index),
        Some(7)
    );
}

#[tokio::test]
async fn replicas_that_append_the_same_entries_hold_identical_records() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let leader_clock = ManualClock::at(1_700_000_000_000);
    // The follower's clock is far off: it must never be read for these.
    let follower_clock = ManualClock::at(42);
    let mut leader = open_log(dirs[0].path(), &leader_clock).await;
    let mut follower = open_log(dirs[1].path(), &follower_clock).await;

    for batch in [0..4, 4..9, 9..20] {
        leader_clock.set(leader_clock.now() + 7);
        append(&mut leader, leader_entries(1, batch.clone()))
            .await
            .expect("leader append");
        // What replication sends: the entries as the leader's store reads
        // them back, timestamps included.
        let sent = leader
            .reader()
            .try_get_log_entries(batch)
            .await
            .expect("leader read");
        append(&mut follower, sent).await.expect("follower append");
    }

    let (l, f) = (read_all(&leader).await, read_all(&follower).await);
    assert_eq!(l, f);
    assert!(l.iter().all(|e| e.timestamp_ms >= Some(1_700_000_000_000)));
    assert_eq!(leader.log_state().head_hash, follower.log_state().head_hash);
    assert_eq!(leader.log_state().next_index, 20);
}

#[tokio::test]
async fn a_restarted_leader_whose_clock_went_back_never_stamps_an_earlier_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(50_000);
    let mut store = open_log(dir.path(), &clock).await;
    append(&mut store, leader_entries(1, 0..3))
        .await
        .expect("append");
    store.close().await;

    clock.set(10_000);
    let mut store = open_log(dir.path(), &clock).await;
    append(&mut store, leader_entries(2, 3..6))
        .await
        .expect("append");
    let stamps: Vec<_> = read_all(&store)
        .await
        .iter()
        .map(|e| e.timestamp_ms.expect("stored entries carry timestamps"))
        .collect();
    assert_eq!(stamps, [50_000; 6]);
}

#[tokio::test]
async fn an_append_at_the_wrong_index_fails_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_000);
    let mut store = open_log(dir.path(), &clock).await;
    append(&mut store, leader_entries(1, 0..3))
        .await
        .expect("append");
    let head = store.log_state();

    let err = append(&mut store, leader_entries(1, 5..7))
        .await
        .expect_err("index 5 does not follow index 2");
    assert!(
        err.to_string().contains("expected to start at index 5"),
        "{err}"
    );
    assert_eq!(store.log_state(), head);
    assert_eq!(
        read_all(&store).await.len(),
        3,
        "the refused entries are not readable"
    );
}

#[tokio::test]
async fn appends_issued_without_waiting_all_become_durable_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_000);
    let mut store = open_log(dir.path(), &clock).await;
    // openraft submits appends back to back and waits for none of them:
    // the writer may group them into fewer fdatasyncs, but every callback
    // must fire, and only after its entries are durable.
    let mut flushed = Vec::new();
    for i in 0..200 {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(leader_entries(1, i..i + 1), IOFlushed::signal(tx))
            .await
            .expect("submit");
        flushed.push(rx);
    }
    // Readable before (or whether or not) they are flushed.
    assert_eq!(read_all(&store).await.len(), 200);
    for rx in flushed {
        rx.await.expect("callback fired").expect("flushed");
    }
    store.close().await;

    let store = open_log(dir.path(), &clock).await;
    let entries = read_all(&store).await;
    assert_eq!(entries.len(), 200);
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.log_id.index == i as u64)
    );
}

#[tokio::test]
async fn a_corrupt_metadata_file_stops_the_store_from_opening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(1_000);
    let mut store = open_log(dir.path(), &clock).await;
    store.save_vote(&Vote::new(5, 1)).await.expect("save vote");
    store.close().await;
    let path = dir.path().join(META_FILE);
    let mut bytes = std::fs::read(&path).expect("read raft-meta");
    // The vote is kept in both slots (at 0 and 512): damage both.
    bytes[24] ^= 0x01;
    bytes[512 + 24] ^= 0x01;
    std::fs::write(&path, bytes).expect("write raft-meta");

    let err = LogStore::open(dir.path(), clock.options())
        .await
        .expect_err("a node must not forget its vote silently");
    assert!(
        matches!(err, missive_raft::Error::CorruptMeta { .. }),
        "{err}"
    );
}

/// A real disk whose fdatasync is slow and counted.
#[derive(Debug)]
struct SlowSyncFs {
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct SlowSyncFile {
    inner: Arc<dyn LogFile>,
    syncs: Arc<AtomicU64>,
}

const SLOW_SYNC: Duration = Duration::from_millis(50);

impl SlowSyncFs {
    fn wrap(&self, inner: Arc<dyn LogFile>) -> Arc<dyn LogFile> {
        Arc::new(SlowSyncFile {
            inner,
            syncs: self.syncs.clone(),
        })
    }
}

impl FileSystem for SlowSyncFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        StdFs.create_new(path).map(|f| self.wrap(f))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn LogFile>> {
        StdFs.open(path, write).map(|f| self.wrap(f))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        StdFs.lock_dir(dir)
    }
}

impl LogFile for SlowSyncFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(SLOW_SYNC);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn map(&self) -> io::Result<Mapping> {
        self.inner.map()
    }
}

#[tokio::test]
async fn appends_are_readable_at_once_and_those_waiting_for_a_flush_share_the_next_fdatasync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let syncs = Arc::new(AtomicU64::new(0));
    let opts = Options {
        fs: Arc::new(SlowSyncFs {
            syncs: syncs.clone(),
        }),
        ..ManualClock::at(1_000).options()
    };
    let mut store = LogStore::open(dir.path(), opts).await.expect("open");
    let before = syncs.load(Ordering::SeqCst);

    // 100 appends, submitted while the first one's fdatasync takes 50 ms:
    // the writer thread finds the other 99 queued and commits them together.
    let mut flushed = Vec::new();
    for i in 0..100 {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(leader_entries(1, i..i + 1), IOFlushed::signal(tx))
            .await
            .expect("submit");
        flushed.push(rx);
    }
    // openraft replicates entries before they are flushed: all are
    // readable now, though the log has not made them durable yet.
    assert!(store.log_state().next_index < 100);
    assert_eq!(read_all(&store).await.len(), 100);
    for rx in flushed {
        rx.await.expect("callback fired").expect("flushed");
    }
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!(
        (1..=5).contains(&used),
        "100 appends took {used} fdatasyncs"
    );
    store.close().await;
}
