//! `missive_api::offline::rebuild_partition` on a stopped node's data
//! directory whose partition has a snapshot:
//!
//! - rebuilt to the end, it starts from the snapshot and equals the node's
//!   projections row for row;
//! - rebuilt to the snapshot's own index, the snapshot path and the
//!   log-only path (the same directory without its snapshot) agree;
//! - a stop point before the snapshot replays the log from its start, and
//!   refuses clearly when the log on disk cannot provide it;
//! - a time stops after the last entry at or before it.

use std::ops::ControlFlow;
use std::path::Path;

use missive_api::offline::{
    OfflineError, Progress, Source, StopAt, compare_stores, rebuild_partition,
};
use missive_log::fs::StdFs;
use missive_log::verify::read_dir;
use missive_raft::offline::read_snapshot_head;

use crate::support::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn no_progress(_: Progress) {}

/// Every record of partition `p` as (index, timestamp).
fn records(source: &Source, p: u32) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    read_dir(&StdFs, &source.log_dir(p), 16 << 20, |h, _| {
        out.push((h.index, h.timestamp));
        ControlFlow::Continue(())
    })
    .expect("read the log");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_starts_from_the_snapshot_when_it_can_and_from_the_log_when_it_must() {
    let mut cluster = Cluster::one().await;
    let mut alice = cluster.nodes[0].client("alice", "d1");
    let conv = direct(&mut alice, "bob").await;
    for k in 0..4 {
        send(&mut alice, &conv, &format!("a{k}"), "before the snapshot").await;
    }
    let chat = cluster.nodes[0].chat.clone();
    let p = chat.partition_of(&conv);
    let raft = chat.node().raft(p).expect("the partition").clone();
    raft.trigger().snapshot().await.expect("trigger a snapshot");
    eventually("the snapshot is built", || {
        let chat = chat.clone();
        async move {
            chat.node()
                .metrics(p)
                .ok()
                .and_then(|m| m.snapshot)
                .map(|_| ())
        }
    })
    .await;
    for k in 0..3 {
        send(&mut alice, &conv, &format!("b{k}"), "after the snapshot").await;
    }
    drop(alice);
    drop(chat);
    drop(raft);
    cluster.nodes[0].stop().await;
    let data = cluster.nodes[0].data.clone();
    // The node's stores close only when the node is dropped (redb locks
    // them while open); its directory stays with `_dir`.
    let Cluster { nodes, dir: _dir } = cluster;
    drop(nodes);
    let scratch = tempfile::tempdir().expect("tempdir");

    let source = Source::open(&data).expect("a data directory");
    let head = read_snapshot_head(&source.snapshot_path(p))
        .expect("read the snapshot")
        .expect("a snapshot");
    let s = head.state.last_applied.expect("a snapshot position").index;
    assert!(s > 0);

    // To the end: from the snapshot, equal to the node's store.
    let end = scratch.path().join("end.redb");
    let (sm, r) = rebuild_partition(&source, p, StopAt::End, &end, 3, &no_progress)
        .expect("rebuild to the end");
    drop(sm);
    assert_eq!(r.snapshot, Some(s));
    assert!(r.commands >= 3, "the sends after the snapshot were applied");
    let c = compare_stores(&end, &source.projections_path(p), 10).expect("compare");
    assert_eq!(c.count, 0, "{:#?}", c.differences);

    // At the snapshot's index: the snapshot and the log alone agree.
    let at_s = scratch.path().join("at-s.redb");
    let (sm, r) = rebuild_partition(&source, p, StopAt::Index(s), &at_s, 64, &no_progress)
        .expect("rebuild to the snapshot");
    drop(sm);
    assert_eq!((r.snapshot, r.entries), (Some(s), 0));
    let bare = scratch.path().join("bare");
    copy_dir(&data, &bare);
    std::fs::remove_file(Source::open(&bare).expect("copy").snapshot_path(p)).expect("rm");
    let bare = Source::open(&bare).expect("copy");
    let at_s_log = scratch.path().join("at-s-log.redb");
    let (sm, r) = rebuild_partition(&bare, p, StopAt::Index(s), &at_s_log, 64, &no_progress)
        .expect("rebuild from the log alone");
    drop(sm);
    assert_eq!((r.snapshot, r.entries), (None, s + 1));
    let c = compare_stores(&at_s, &at_s_log, 10).expect("compare");
    assert_eq!(c.count, 0, "{:#?}", c.differences);

    // Before the snapshot: the log from its start.
    let before = scratch.path().join("before.redb");
    let (sm, r) = rebuild_partition(&source, p, StopAt::Index(s - 1), &before, 64, &no_progress)
        .expect("rebuild before the snapshot");
    drop(sm);
    assert_eq!(r.snapshot, None);
    assert_eq!(r.last_applied.map(|id| id.index), Some(s - 1));

    // …which a log without those entries cannot give: a clear refusal.
    let gone = scratch.path().join("gone");
    copy_dir(&data, &gone);
    let gone = Source::open(&gone).expect("copy");
    std::fs::remove_dir_all(gone.log_dir(p)).expect("rm log");
    std::fs::create_dir_all(gone.log_dir(p)).expect("empty log");
    let err = rebuild_partition(
        &gone,
        p,
        StopAt::Index(s - 1),
        &scratch.path().join("gone.redb"),
        64,
        &no_progress,
    )
    .expect_err("no log before the snapshot");
    assert!(
        matches!(&err, OfflineError::Missing { partition, .. } if *partition == p),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("snapshot at index {s}")),
        "{err}"
    );

    // A time: after the last entry at or before it.
    let recs = records(&source, p);
    let (k, t) = recs[recs.len() / 2];
    let by_time = scratch.path().join("time.redb");
    let (sm, r) = rebuild_partition(&source, p, StopAt::Time(t), &by_time, 64, &no_progress)
        .expect("rebuild to a time");
    drop(sm);
    let last = r.last_applied.expect("a position").index;
    assert!(
        last >= k,
        "stopped at {last}, before entry {k} of that time"
    );
    let at = |i: u64| recs.iter().find(|(j, _)| *j == i).map(|(_, ts)| *ts);
    assert!(at(last).is_some_and(|ts| ts <= t));
    assert!(at(last + 1).is_none_or(|ts| ts > t));
}
