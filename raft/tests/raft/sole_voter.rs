//! A partition whose node is its only voter: its log holds the committed
//! log id, so saving it costs no fdatasync, and a restart after a power
//! loss starts from the log's last entry. Whatever could leave a durable
//! entry uncommitted ends that first, durably.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::Arc;

use missive_log::fs::SimFs;
use missive_log::{Clock, Options};
use missive_raft::types::{ClusterMembership, LeaderId, LogId, Vote};
use missive_raft::{Entry, LogStore, Node, TypeConfig};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;

use crate::support::kv;

const OWN: u64 = 1;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: OWN }, index)
}

fn membership(voters: &[u64]) -> ClusterMembership {
    let nodes: BTreeMap<u64, Node> = [1, 2, 3]
        .into_iter()
        .map(|id| (id, Node::new(format!("127.0.0.1:700{id}"))))
        .collect();
    ClusterMembership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
        .expect("valid membership")
}

fn normal(term: u64, index: u64) -> Entry {
    Entry::new_normal(log_id(term, index), kv::set(&format!("k{index}"), "v"))
}

fn options(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        clock: Clock::new(|| 1_000),
        ..Options::default()
    }
}

async fn open(fs: &SimFs, dir: &Path, own: Option<u64>) -> LogStore {
    let store = LogStore::open(dir, options(fs)).await.expect("open");
    if let Some(id) = own {
        store.set_own_id(id);
    }
    store
}

async fn append(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.map_err(|_| io::Error::other("callback dropped"))?
}

/// A one-voter log: its membership at 0, then `n` normal entries.
async fn sole_voter_log(fs: &SimFs, dir: &Path, n: u64) -> LogStore {
    let mut store = open(fs, dir, Some(OWN)).await;
    store
        .save_vote(&Vote::new_committed(1, OWN))
        .await
        .expect("vote");
    append(
        &mut store,
        vec![Entry::new_membership(log_id(1, 0), membership(&[OWN]))],
    )
    .await
    .expect("membership");
    for i in 1..=n {
        append(&mut store, vec![normal(1, i)])
            .await
            .expect("append");
    }
    store
}

/// Loses power, reopens the store (only what was fdatasynced is left) and
/// returns the committed log id it starts from.
async fn committed_after_crash(fs: &SimFs, dir: &Path, store: LogStore) -> Option<LogId> {
    fs.crash();
    drop(store);
    let mut store = open(fs, dir, Some(OWN)).await;
    store.read_committed().await.expect("read committed")
}

/// Saves `committed` as the committed log id.
async fn save(store: &mut LogStore, committed: LogId) {
    store
        .save_committed(Some(committed))
        .await
        .expect("save committed");
}

/// Saves `committed` and returns how many fdatasyncs that cost.
async fn syncs_of_save(fs: &SimFs, store: &mut LogStore, committed: LogId) -> u64 {
    let before = fs.counters().syncs;
    save(store, committed).await;
    fs.counters().syncs - before
}

/// Saves `committed`, checks that it cost `syncs` fdatasyncs (`why`), then
/// loses power and checks that the reopened store starts from it.
async fn save_and_crash(
    fs: &SimFs,
    dir: &Path,
    mut store: LogStore,
    committed: LogId,
    syncs: u64,
    why: &str,
) {
    assert_eq!(
        syncs_of_save(fs, &mut store, committed).await,
        syncs,
        "{why}"
    );
    assert_eq!(committed_after_crash(fs, dir, store).await, Some(committed));
}

#[tokio::test]
async fn a_sole_voter_saves_committed_without_fdatasync_and_restarts_from_its_log() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/saves");
    let mut store = sole_voter_log(&fs, dir, 5).await;
    let syncs = fs.counters().syncs;
    let writes = fs.counters().writes;
    for i in 1..=5 {
        save(&mut store, log_id(1, i)).await;
    }
    assert_eq!(fs.counters().syncs, syncs, "no fdatasync for a sole voter");
    assert_eq!(fs.counters().writes, writes, "no write either");

    // One more entry durable but never reported committed: the sole voter
    // commits it anyway, by the first thing it does as leader.
    append(&mut store, vec![normal(1, 6)])
        .await
        .expect("append");
    assert_eq!(
        committed_after_crash(&fs, dir, store).await,
        Some(log_id(1, 6)),
        "a restart starts from the log's last entry"
    );
}

#[tokio::test]
async fn without_its_own_id_a_store_never_counts_itself_the_sole_voter() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/anonymous");
    let mut store = open(&fs, dir, None).await;
    append(
        &mut store,
        vec![
            Entry::new_membership(log_id(1, 0), membership(&[OWN])),
            normal(1, 1),
            normal(1, 2),
        ],
    )
    .await
    .expect("append");
    save_and_crash(&fs, dir, store, log_id(1, 1), 1, "one fdatasync per save").await;
}

#[tokio::test]
async fn a_membership_with_other_voters_ends_the_sole_voter_before_it_is_durable() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/grows");
    let mut store = sole_voter_log(&fs, dir, 3).await;
    save(&mut store, log_id(1, 3)).await;
    append(
        &mut store,
        vec![
            Entry::new_membership(log_id(1, 4), membership(&[1, 2, 3])),
            normal(1, 5),
        ],
    )
    .await
    .expect("append");
    // Entries 4 and 5 now need a quorum of three: a restart must not take
    // them as committed, but keeps the committed log id saved last.
    save_and_crash(
        &fs,
        dir,
        store,
        log_id(1, 4),
        1,
        "saves are fdatasynced again",
    )
    .await;
}

#[tokio::test]
async fn a_membership_naming_this_node_alone_again_restores_the_sole_voter() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/shrinks");
    let mut store = sole_voter_log(&fs, dir, 1).await;
    append(
        &mut store,
        vec![Entry::new_membership(log_id(1, 2), membership(&[1, 2]))],
    )
    .await
    .expect("grow");
    save(&mut store, log_id(1, 2)).await;
    append(
        &mut store,
        vec![
            Entry::new_membership(log_id(1, 3), membership(&[OWN])),
            normal(1, 4),
        ],
    )
    .await
    .expect("shrink");
    save_and_crash(
        &fs,
        dir,
        store,
        log_id(1, 4),
        0,
        "no fdatasync once alone again",
    )
    .await;
}

#[tokio::test]
async fn a_truncation_ends_the_sole_voter() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/truncated");
    let mut store = sole_voter_log(&fs, dir, 4).await;
    save(&mut store, log_id(1, 2)).await;
    store
        .truncate_after(Some(log_id(1, 3)))
        .await
        .expect("truncate");
    assert_eq!(
        committed_after_crash(&fs, dir, store).await,
        Some(log_id(1, 2)),
        "the committed log id told last, written when the flag was cleared"
    );
}

#[tokio::test]
async fn a_vote_for_another_node_ends_the_sole_voter() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/votes");
    let mut store = sole_voter_log(&fs, dir, 4).await;
    save(&mut store, log_id(1, 3)).await;
    store
        .save_vote(&Vote::new(2, 2))
        .await
        .expect("vote for node 2");
    save_and_crash(
        &fs,
        dir,
        store,
        log_id(1, 4),
        1,
        "saves are fdatasynced again",
    )
    .await;
}

#[tokio::test]
async fn a_follower_handed_a_membership_naming_it_alone_waits_until_it_votes_for_itself() {
    let fs = SimFs::new();
    let dir = Path::new("/sole/handed");
    let mut store = open(&fs, dir, Some(OWN)).await;
    // Node 2 leads and hands over the partition to this node.
    store
        .save_vote(&Vote::new_committed(1, 2))
        .await
        .expect("vote for node 2");
    let led_by_2 = |index| {
        LogId::new(
            LeaderId {
                term: 1,
                node_id: 2,
            },
            index,
        )
    };
    append(
        &mut store,
        vec![
            Entry::new_membership(led_by_2(0), membership(&[OWN])),
            Entry::new_normal(led_by_2(1), kv::set("k", "v")),
        ],
    )
    .await
    .expect("append");
    assert_eq!(
        syncs_of_save(&fs, &mut store, led_by_2(1)).await,
        1,
        "still fdatasynced"
    );
}
