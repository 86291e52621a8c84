//! A purge at or beyond the end of the log — what a replica does after it
//! installs a snapshot newer than its log — leaves an empty log that
//! continues right after the purge point, survives reopen and crashes
//! (including a crash between the durable purge point and the new segment),
//! and keeps the older segments on disk as verifiable history.
//!
//! With the chain hash of the purge point carried in (`purge_with_hash`),
//! the log continues that chain: after the same records follow, it has the
//! same chain hash at every index as a log that held everything. Before
//! this, a replica that caught up by snapshot restarted its chain at the
//! genesis hash and disagreed with its peers at every later index.

use std::path::Path;
use std::sync::Arc;

use missive_log::fs::{Fault, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{ChainHash, Error, GENESIS_HASH, Log, Options, Record, Retention};

fn opts(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: 512,
        ..Options::default()
    }
}

fn append_n(log: &Log, n: u64) {
    for i in 0..n {
        let payload = format!("record {i}");
        log.append(&[Record {
            timestamp: 1000 + i,
            payload: payload.as_bytes(),
        }])
        .expect("append");
    }
}

#[test]
fn purge_beyond_end_continues_after_the_purge_point() {
    let fs = SimFs::new();
    let dir = Path::new("/log");
    let log = Log::open(dir, opts(&fs)).expect("open");
    append_n(&log, 12);
    log.purge(40).expect("purge beyond the end");
    let state = log.state();
    assert_eq!((state.first_index, state.next_index), (41, 41));
    assert!(matches!(
        log.read(5),
        Err(Error::Purged {
            index: 5,
            first: 41
        })
    ));
    let range = log
        .append(&[Record {
            timestamp: 5,
            payload: b"after",
        }])
        .expect("append");
    assert_eq!(range, 41..42);
    drop(log);

    let log = Log::open(dir, opts(&fs)).expect("reopen");
    assert_eq!(log.state().first_index, 41);
    assert_eq!(log.state().next_index, 42);
    assert_eq!(log.read(41).expect("read").payload, b"after");
    let report = verify_dir(&fs, dir, 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.records(), 13, "the purged history stays on disk");
}

#[test]
fn crash_between_purge_point_and_new_segment_is_finished_by_recovery() {
    let fs = SimFs::new();
    let dir = Path::new("/log");
    let log = Log::open(dir, opts(&fs)).expect("open");
    append_n(&log, 3);
    // The purge point's own fdatasync succeeds; the new segment's fails.
    fs.inject_after(Fault::SyncData, 1);
    assert!(log.purge(99).is_err());
    assert!(matches!(
        log.append(&[Record {
            timestamp: 1,
            payload: b"x"
        }]),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    fs.crash();
    let log = Log::open(dir, opts(&fs)).expect("reopen after crash");
    let state = log.state();
    assert_eq!((state.first_index, state.next_index), (100, 100));
    assert_eq!(
        log.append(&[Record {
            timestamp: 1,
            payload: b"x"
        }])
        .expect("append"),
        100..101
    );
    drop(log);
    let report = verify_dir(&fs, dir, 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.records(), 4);
}

#[test]
fn purge_beyond_end_of_an_empty_log() {
    let fs = SimFs::new();
    let dir = Path::new("/log");
    let log = Log::open(dir, opts(&fs)).expect("open");
    log.purge(7).expect("purge");
    assert_eq!(
        log.append(&[Record {
            timestamp: 1,
            payload: b"x"
        }])
        .expect("append"),
        8..9
    );
    drop(log);
    let log = Log::open(dir, opts(&fs)).expect("reopen");
    assert_eq!((log.state().first_index, log.state().next_index), (8, 9));
}

fn payload(i: u64) -> Vec<u8> {
    format!("replicated record {i}").into_bytes()
}

/// Appends records `range` of the shared history (same timestamps and
/// payloads on every log), each at its own index.
fn append_history(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        let p = payload(i);
        log.append_at(
            i,
            &[Record {
                timestamp: 5000 + i,
                payload: &p,
            }],
        )
        .expect("append at");
    }
}

/// A log that holds the whole history `0..n`.
fn full_log(fs: &SimFs, n: u64) -> Log {
    let log = Log::open("/full", opts(fs)).expect("open full");
    append_history(&log, 0..n);
    log
}

fn hashes(log: &Log, range: std::ops::RangeInclusive<u64>) -> Vec<ChainHash> {
    range
        .map(|i| log.chain_hash_at(i).expect("chain hash"))
        .collect()
}

#[test]
fn a_log_that_jumps_with_the_carried_hash_has_the_same_chain_as_one_that_holds_everything() {
    let fs = SimFs::new();
    let full = full_log(&fs, 40);
    let dir = Path::new("/replica");
    let replica = Log::open(dir, opts(&fs)).expect("open replica");
    append_history(&replica, 0..6);
    let carried = full.chain_hash_at(24).expect("hash at 24");
    replica
        .purge_with_hash(24, carried)
        .expect("purge beyond the end");
    let state = replica.state();
    assert_eq!((state.first_index, state.next_index), (25, 25));
    assert_eq!(state.head_hash, carried, "the log continues from the hash");
    assert_eq!(replica.chain_hash_at(24).expect("purge point"), carried);
    append_history(&replica, 25..40);
    assert_eq!(hashes(&replica, 24..=39), hashes(&full, 24..=39));
    assert_eq!(replica.state().head_hash, full.state().head_hash);
    drop(replica);

    let replica = Log::open(dir, opts(&fs)).expect("reopen");
    assert_eq!(replica.state().head_hash, full.state().head_hash);
    assert_eq!(replica.chain_hash_at(24).expect("purge point"), carried);
    drop(replica);
    let report = verify_dir(&fs, dir, 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.head_hash(), Some(full.state().head_hash));
    let carried_segments: Vec<u64> = report
        .segments
        .iter()
        .filter(|s| s.carried)
        .map(|s| s.first_index)
        .collect();
    assert_eq!(
        carried_segments,
        vec![25],
        "one segment continues a carried chain"
    );
    assert_eq!(report.records(), 6 + 15, "the purged history stays on disk");
}

#[test]
fn a_crash_before_the_new_segment_is_finished_with_the_carried_hash() {
    let fs = SimFs::new();
    let full = full_log(&fs, 30);
    let dir = Path::new("/replica");
    let replica = Log::open(dir, opts(&fs)).expect("open");
    append_history(&replica, 0..3);
    let carried = full.chain_hash_at(19).expect("hash at 19");
    // The metadata's fdatasync succeeds; the new segment's fails.
    fs.inject_after(Fault::SyncData, 1);
    assert!(replica.purge_with_hash(19, carried).is_err());
    drop(replica);
    fs.crash();
    let replica = Log::open(dir, opts(&fs)).expect("reopen after crash");
    let state = replica.state();
    assert_eq!((state.first_index, state.next_index), (20, 20));
    assert_eq!(state.head_hash, carried);
    append_history(&replica, 20..30);
    assert_eq!(replica.state().head_hash, full.state().head_hash);
    drop(replica);
    let report = verify_dir(&fs, dir, 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
}

#[test]
fn a_log_that_starts_past_a_purge_with_a_carried_hash_opens_and_verifies() {
    let fs = SimFs::new();
    let full = full_log(&fs, 30);
    let dir = Path::new("/replica");
    // Retention deletes every purged segment it may: the replica's history
    // from before the jump goes, and the log starts at the carried segment.
    let options = Options {
        retention: Retention {
            max_age_ms: None,
            max_total_bytes: Some(1),
        },
        ..opts(&fs)
    };
    let replica = Log::open(dir, options.clone()).expect("open");
    append_history(&replica, 0..8);
    let carried = full.chain_hash_at(14).expect("hash at 14");
    replica.purge_with_hash(14, carried).expect("purge");
    append_history(&replica, 15..30);
    assert_eq!(
        replica.segments()[0].first_index,
        15,
        "older segments deleted"
    );
    drop(replica);

    let replica = Log::open(dir, options).expect("reopen");
    assert_eq!(replica.chain_hash_at(14).expect("purge point"), carried);
    assert_eq!(replica.state().head_hash, full.state().head_hash);
    drop(replica);
    let report = verify_dir(&fs, dir, 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
    assert!(report.segments[0].carried);
    assert_eq!(report.head_hash(), Some(full.state().head_hash));
}

#[test]
fn a_plain_purge_beyond_the_end_still_restarts_the_chain() {
    let fs = SimFs::new();
    let log = Log::open("/log", opts(&fs)).expect("open");
    append_n(&log, 4);
    log.purge(9).expect("purge");
    assert_eq!(log.state().head_hash, GENESIS_HASH);
    assert_eq!(log.chain_hash_at(9).expect("purge point"), GENESIS_HASH);
}

#[test]
fn the_chain_hash_is_known_from_the_purge_point_to_the_end_and_nowhere_else() {
    let fs = SimFs::new();
    let log = full_log(&fs, 30);
    let entries: Vec<_> = log
        .range(0, 30)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("read");
    log.purge(12).expect("purge inside the log");
    assert_eq!(
        log.chain_hash_at(12).expect("the purge point"),
        entries[12].chain_hash
    );
    for i in 13..30 {
        assert_eq!(
            log.chain_hash_at(i).expect("visible"),
            entries[i as usize].chain_hash
        );
    }
    assert!(matches!(
        log.chain_hash_at(11),
        Err(Error::Purged { index: 11, .. })
    ));
    assert!(matches!(
        log.chain_hash_at(30),
        Err(Error::BeyondEnd { index: 30, .. })
    ));
}
