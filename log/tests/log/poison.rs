//! After a failed write or sync the log refuses every call until reopened,
//! and reopening after a crash gives back exactly the acknowledged records.
//!
//! What reached the disk after a failed write or fdatasync is unknown, and
//! retrying an fsync can report success for data the kernel dropped, so the
//! log must not go on. For a fault injected into an append's write, its
//! fdatasync, the directory sync of a roll, a truncation's sync and a purge's
//! metadata sync:
//!
//! - the call in flight fails with a fatal error naming the cause;
//! - every later call — append, append_at, read, read_recent, range,
//!   truncate_after, truncate_from, purge, apply_retention — fails with
//!   `Error::Poisoned`, and readers never saw the failed batch;
//! - after a crash and reopen nothing of the failed operation is visible
//!   (it was never synced), every acknowledged record is, and the log works
//!   again.

use std::path::Path;
use std::sync::Arc;

use missive_log::fs::{Fault, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{Error, Log, LogState, Options, Record};

const DIR: &str = "/log";

fn options(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: 1024,
        ..Options::default()
    }
}

fn open(fs: &SimFs) -> Log {
    Log::open(DIR, options(fs)).expect("open")
}

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 7) as usize * 20)).into_bytes()
}

fn append(log: &Log, from: u64, n: u64) -> missive_log::Result<std::ops::Range<u64>> {
    let payloads: Vec<_> = (from..from + n).map(payload).collect();
    let records: Vec<_> = payloads
        .iter()
        .zip(from..)
        .map(|(p, i)| Record {
            timestamp: i,
            payload: p,
        })
        .collect();
    log.append(&records)
}

/// A log holding records `0..n`.
fn log_with(fs: &SimFs, n: u64) -> Log {
    let log = open(fs);
    for i in 0..n {
        assert_eq!(append(&log, i, 1).expect("append"), i..i + 1);
    }
    log
}

fn assert_holds(log: &Log, first: u64, next: u64) {
    let state = log.state();
    assert_eq!((state.first_index, state.next_index), (first, next));
    for i in first..next {
        assert_eq!(log.read(i).expect("read").payload, payload(i), "record {i}");
    }
}

fn assert_verified(fs: &SimFs, log: &Log) {
    let report = verify_dir(fs, Path::new(DIR), 1 << 20).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.head_hash(), Some(log.state().head_hash));
}

fn poisoned<T: std::fmt::Debug>(r: missive_log::Result<T>, what: &str) {
    match r {
        Err(Error::Poisoned { cause }) => {
            assert!(
                cause.contains("injected fault"),
                "{what}: the cause names the first error: {cause}"
            );
        }
        other => panic!("{what} on a poisoned log: {other:?}"),
    }
}

/// Every call but `state` fails.
fn assert_every_call_is_poisoned(log: &Log, before: LogState) {
    poisoned(append(log, 100, 1), "append");
    poisoned(
        log.append_at(
            before.next_index,
            &[Record {
                timestamp: 1,
                payload: b"p",
            }],
        ),
        "append_at",
    );
    poisoned(log.read(before.first_index), "read");
    poisoned(
        log.read_recent(before.next_index.saturating_sub(1)),
        "read_recent",
    );
    poisoned(
        log.range(before.first_index, before.next_index).map(|_| ()),
        "range",
    );
    poisoned(log.truncate_after(before.first_index), "truncate_after");
    poisoned(log.truncate_from(before.first_index), "truncate_from");
    poisoned(log.purge(before.first_index), "purge");
    poisoned(log.apply_retention(), "apply_retention");
}

/// Runs `op` with `fault` injected, checks the log is poisoned, crashes,
/// reopens, and returns the reopened log.
fn fail_then_crash(
    fs: &SimFs,
    log: Log,
    fault: Fault,
    op: impl FnOnce(&Log) -> missive_log::Result<()>,
) -> Log {
    let before = log.state();
    fs.inject(fault);
    let err = op(&log).expect_err("the injected fault makes the call fail");
    assert!(err.is_fatal(), "{err}");
    assert!(
        err.to_string().contains("injected fault"),
        "the error names its cause: {err}"
    );
    assert_every_call_is_poisoned(&log, before);
    // Appends and purges publish nothing before their I/O is durable (a
    // truncation does unpublish the dropped records before cutting them).
    let after = log.state();
    assert_eq!(
        after.first_index, before.first_index,
        "readers never saw a failed purge"
    );
    assert!(
        after.next_index <= before.next_index,
        "readers never saw a failed batch"
    );
    drop(log);
    fs.crash();
    let log = open(fs);
    assert_eq!(
        log.recovery_report().torn_tail,
        None,
        "nothing unsynced survived the crash"
    );
    log
}

#[test]
fn a_failed_fdatasync_poisons_the_log_and_the_unsynced_batch_is_gone_after_a_crash() {
    let fs = SimFs::new();
    let log = log_with(&fs, 5);
    let log = fail_then_crash(&fs, log, Fault::SyncData, |log| append(log, 5, 3).map(drop));
    assert_holds(&log, 0, 5);
    assert_eq!(append(&log, 5, 3).expect("the reopened log appends"), 5..8);
    assert_holds(&log, 0, 8);
    assert_verified(&fs, &log);
}

#[test]
fn a_failed_write_poisons_the_log_and_the_half_written_batch_is_gone_after_a_crash() {
    let fs = SimFs::new();
    let log = log_with(&fs, 5);
    let log = fail_then_crash(&fs, log, Fault::Write, |log| append(log, 5, 3).map(drop));
    assert_holds(&log, 0, 5);
    assert_eq!(append(&log, 5, 1).expect("the reopened log appends"), 5..6);
    assert_holds(&log, 0, 6);
    assert_verified(&fs, &log);
}

#[test]
fn a_half_written_batch_is_cut_as_a_torn_tail_when_reopened_without_a_crash() {
    let fs = SimFs::new();
    let log = log_with(&fs, 3);
    let before = log.state();
    // The failing write stores the first half of the batch's bytes: all of
    // record 3 and part of record 4.
    let (len3, len4) = (64 + payload(3).len(), 64 + payload(4).len());
    assert!(
        len3 < (len3 + len4) / 2,
        "record 3 lies wholly in the written half"
    );
    fs.inject(Fault::Write);
    append(&log, 3, 2).expect_err("the write fails half-way");
    assert_every_call_is_poisoned(&log, before);
    assert_eq!(log.state(), before, "readers never saw the failed batch");
    drop(log);
    // The half batch is still in the (simulated) page cache. Recovery keeps
    // record 3, which is whole and valid — an unacknowledged append may or
    // may not survive — and cuts the torn record 4.
    let log = open(&fs);
    let torn = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("the torn record is cut");
    // Cut where record 4 starts: its written half and the zeros prepared
    // after the batch go.
    let active = log.segments().pop().expect("an active segment");
    assert_eq!(torn.position, active.bytes, "cut at record 4");
    assert!(torn.dropped_bytes >= ((len3 + len4) / 2 - len3) as u64);
    assert_holds(&log, 0, 4);
    assert_eq!(append(&log, 4, 1).expect("append"), 4..5);
    assert_holds(&log, 0, 5);
    assert_verified(&fs, &log);
}

#[test]
fn a_failed_directory_sync_while_rolling_poisons_the_log_and_the_new_segment_is_gone_after_a_crash()
{
    let fs = SimFs::new();
    let log = log_with(&fs, 2);
    let before = log.segments();
    // Too large for what is left of the active segment: the append rolls to
    // a new segment first, whose directory entry fails to sync.
    let big = vec![b'z'; 900];
    let log = fail_then_crash(&fs, log, Fault::SyncDir, |log| {
        log.append(&[Record {
            timestamp: 9,
            payload: &big,
        }])
        .map(drop)
    });
    assert_eq!(
        log.segments(),
        before,
        "the new segment is gone, the old one is active again"
    );
    assert_holds(&log, 0, 2);
    let r = log
        .append(&[Record {
            timestamp: 9,
            payload: &big,
        }])
        .expect("append after reopen");
    assert_eq!(r, 2..3);
    assert_eq!(log.segments().len(), before.len() + 1, "this time it rolls");
    assert_verified(&fs, &log);
}

#[test]
fn a_failed_truncation_poisons_the_log_and_a_crash_keeps_the_records_it_did_not_finish_dropping() {
    let fs = SimFs::new();
    let log = log_with(&fs, 6);
    let last_segment_first = log.segments().last().expect("active").first_index;
    assert!(
        last_segment_first < 5,
        "records 4 and 5 are in the active segment"
    );
    let log = fail_then_crash(&fs, log, Fault::SyncData, |log| log.truncate_after(4));
    assert_holds(&log, 0, 6);
    log.truncate_after(4).expect("the reopened log truncates");
    assert_holds(&log, 0, 5);
    assert_verified(&fs, &log);
}

#[test]
fn a_failed_purge_poisons_the_log_and_a_crash_keeps_the_old_purge_point() {
    let fs = SimFs::new();
    let log = log_with(&fs, 6);
    let log = fail_then_crash(&fs, log, Fault::SyncData, |log| log.purge(2));
    assert_holds(&log, 0, 6);
    log.purge(2).expect("the reopened log purges");
    assert_holds(&log, 3, 6);
    drop(log);
    fs.crash();
    assert_holds(&open(&fs), 3, 6);
}
