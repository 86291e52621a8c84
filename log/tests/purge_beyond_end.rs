//! A purge at or beyond the end of the log — what a replica does after it
//! installs a snapshot newer than its log — leaves an empty log that
//! continues right after the purge point, survives reopen and crashes
//! (including a crash between the durable purge point and the new segment),
//! and keeps the older segments on disk as verifiable history.

use std::path::Path;
use std::sync::Arc;

use missive_log::fs::{Fault, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{Error, Log, Options, Record};

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
