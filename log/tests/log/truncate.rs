//! Truncating back into a sealed segment works, and survives reopen and
//! crash.
//!
//! When `truncate_after` cuts inside an earlier, sealed segment, the later
//! segments (and their indexes) are deleted, the segment holding the cut is
//! replaced by its prefix and becomes the active one, the head hash goes back
//! to that of the last kept record, and new appends continue from the cut.
//! All of it is durable: reopening and crashing the disk change nothing. A
//! reader that was iterating over the dropped sealed segments keeps reading
//! its snapshot from the old files it maps.

use std::path::Path;
use std::sync::Arc;

use missive_log::fs::{FileSystem, SimFs, StdFs};
use missive_log::verify::verify_dir;
use missive_log::{Error, Log, Options, Record};

const DIR: &str = "/log";
const RECORDS: u64 = 30;

fn payload(i: u64, generation: u8) -> Vec<u8> {
    format!("record {i} of generation {generation} {}", "t".repeat(70)).into_bytes()
}

fn options(fs: Arc<dyn FileSystem>) -> Options {
    Options {
        fs,
        segment_bytes: 512,
        ..Options::default()
    }
}

fn append(log: &Log, from: u64, to: u64, generation: u8) {
    for i in from..to {
        let p = payload(i, generation);
        assert_eq!(
            log.append(&[Record {
                timestamp: i,
                payload: &p
            }])
            .expect("append"),
            i..i + 1
        );
    }
}

/// Records `0..next` read back: generation 0 up to `cut`, `generation` after.
fn assert_holds(log: &Log, cut: u64, next: u64, generation: u8) {
    assert_eq!(log.state().next_index, next);
    for i in 0..next {
        let want = payload(i, if i <= cut { 0 } else { generation });
        assert_eq!(log.read(i).expect("read").payload, want, "record {i}");
    }
    assert!(matches!(log.read(next), Err(Error::BeyondEnd { .. })));
    let entries: Vec<_> = log
        .range(0, next)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("reads");
    assert_eq!(entries.len() as u64, next);
    assert_eq!(
        log.state().head_hash,
        entries.last().map_or([0; 32], |e| e.chain_hash)
    );
}

fn assert_verified(fs: &dyn FileSystem, dir: &Path, log: &Log) {
    let report = verify_dir(fs, dir, Options::default().max_record_bytes).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.head_hash(), Some(log.state().head_hash));
    assert_eq!(report.records(), log.state().next_index);
}

fn segment_names(fs: &dyn FileSystem, dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs
        .list(dir)
        .expect("list")
        .into_iter()
        .filter(|n| n != "LOCK")
        .collect();
    names.sort();
    names
}

/// Cuts after `cut` and checks the result, then reopens, crashes, appends.
fn truncate_into_sealed(cut: u64) {
    let disk = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(disk.clone());
    let log = Log::open(DIR, options(fs.clone())).expect("open");
    append(&log, 0, RECORDS, 0);
    let before = log.segments();
    let holder = before
        .iter()
        .position(|s| (s.first_index..s.next_index).contains(&(cut + 1)))
        .expect("a segment holds the record after the cut");
    assert!(
        holder + 2 < before.len(),
        "the cut lies in a sealed segment with sealed ones after it"
    );
    let head_at_cut = log.read(cut).expect("read").chain_hash;

    log.truncate_after(cut).expect("truncate");
    assert_eq!(
        log.state().head_hash,
        head_at_cut,
        "the head goes back to the last kept record"
    );
    let after = log.segments();
    assert_eq!(after.len(), holder + 1, "later segments are gone");
    assert_eq!(
        after[..holder],
        before[..holder],
        "earlier segments are untouched"
    );
    let active = &after[holder];
    assert!(
        !active.sealed,
        "the segment holding the cut is the active one"
    );
    assert_eq!(
        (active.first_index, active.next_index),
        (before[holder].first_index, cut + 1)
    );
    let names = segment_names(&*fs, Path::new(DIR));
    for s in &before[holder + 1..] {
        let name = s
            .path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            !names.iter().any(|n| n.starts_with(&name[..20])),
            "{name} and its index are gone: {names:?}"
        );
    }
    let holder_idx = format!(
        "{}.idx",
        &active.path.file_name().expect("name").to_string_lossy()[..20]
    );
    assert!(
        !names.contains(&holder_idx),
        "the now active segment has no index: {names:?}"
    );
    assert_holds(&log, cut, cut + 1, 0);
    assert_verified(&*fs, Path::new(DIR), &log);

    // Durable: the same after reopening and after a crash.
    drop(log);
    let log = Log::open(DIR, options(fs.clone())).expect("reopen");
    assert_eq!(log.segments(), after);
    assert_holds(&log, cut, cut + 1, 0);
    drop(log);
    disk.crash();
    let log = Log::open(DIR, options(fs.clone())).expect("reopen after a crash");
    assert_eq!(log.recovery_report().torn_tail, None);
    assert_eq!(log.segments(), after);
    assert_holds(&log, cut, cut + 1, 0);

    // The log continues from the cut with new records, through new rolls.
    append(&log, cut + 1, RECORDS + 5, 1);
    assert_holds(&log, cut, RECORDS + 5, 1);
    drop(log);
    disk.crash();
    let log = Log::open(DIR, options(fs.clone())).expect("reopen after a crash");
    assert_holds(&log, cut, RECORDS + 5, 1);
    assert_verified(&*fs, Path::new(DIR), &log);
}

#[test]
fn truncating_into_the_middle_of_a_sealed_segment_survives_reopen_and_crash() {
    truncate_into_sealed(7);
}

#[test]
fn truncating_to_the_last_record_before_a_sealed_segment_leaves_it_empty_and_active() {
    // Find a segment boundary and cut right before it: the segment starting
    // there keeps only its header.
    let disk = SimFs::new();
    let log = Log::open(DIR, options(Arc::new(disk))).expect("open");
    append(&log, 0, RECORDS, 0);
    let boundary = log.segments()[2].first_index;
    drop(log);
    truncate_into_sealed(boundary - 1);
}

#[test]
fn truncating_into_the_first_segment_survives_reopen_and_crash() {
    truncate_into_sealed(0);
}

#[test]
fn truncate_from_the_first_visible_index_drops_every_visible_record() {
    let disk = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(disk.clone());
    let log = Log::open(DIR, options(fs.clone())).expect("open");
    append(&log, 0, RECORDS, 0);
    let head_at_9 = log.read(9).expect("read").chain_hash;
    log.purge(9).expect("purge");
    assert!(matches!(
        log.truncate_from(9),
        Err(Error::Purged {
            index: 9,
            first: 10
        })
    ));
    assert!(matches!(
        log.truncate_after(8),
        Err(Error::Purged {
            index: 9,
            first: 10
        })
    ));
    log.truncate_from(10).expect("truncate");
    let state = log.state();
    assert_eq!((state.first_index, state.next_index), (10, 10));
    assert_eq!(
        state.head_hash, head_at_9,
        "the head is that of the last purged record"
    );
    assert_eq!(state.head_hash, {
        drop(log);
        let log = Log::open(DIR, options(fs.clone())).expect("reopen");
        log.state().head_hash
    });
    disk.crash();
    let log = Log::open(DIR, options(fs.clone())).expect("reopen after a crash");
    assert_eq!(log.state(), state);
    append(&log, 10, 12, 1);
    assert_eq!(log.read(10).expect("read").payload, payload(10, 1));
    assert_verified(&*fs, Path::new(DIR), &log);
}

#[test]
fn a_reader_iterating_over_dropped_segments_keeps_its_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let log = Log::open(&dir, options(fs.clone())).expect("open");
    append(&log, 0, RECORDS, 0);
    let reader = log.range(0, 20).expect("range");
    log.truncate_after(4).expect("truncate");
    append(&log, 5, 25, 1);
    // The reader started on sealed segments only; it still maps their old
    // files (renamed aside or replaced, never truncated), so it reads the
    // records as they were when it started.
    let old: Vec<_> = reader
        .collect::<Result<_, _>>()
        .expect("the snapshot reads");
    assert_eq!(old.len(), 20);
    for (i, e) in (0..).zip(old) {
        assert_eq!((e.index, e.payload), (i, payload(i, 0)));
    }
    assert_holds(&log, 4, 25, 1);
    drop(log);
    let log = Log::open(&dir, options(fs.clone())).expect("reopen");
    assert_holds(&log, 4, 25, 1);
    assert_verified(&*fs, &dir, &log);
}

/// A reader whose snapshot predates a truncation of the active segment gets
/// the retryable `Truncated`, not an I/O or corruption error: the log is
/// fine, the records are just gone.
#[test]
fn reader_racing_a_truncation_gets_truncated_not_a_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), Options::default()).expect("open");
    // Records larger than the iterator's read-ahead, so each is read when
    // reached, after the truncation.
    let big = vec![7u8; 700 << 10];
    for t in 0..4 {
        log.append(&[Record {
            timestamp: t,
            payload: &big,
        }])
        .expect("append");
    }
    let mut it = log.range(0, 4).expect("range");
    assert!(it.next().expect("first").is_ok());
    log.truncate_after(0).expect("truncate");
    let err = it
        .find_map(Result::err)
        .expect("the cut records cannot be read");
    assert!(matches!(err, Error::Truncated { index: 1 }), "got {err}");
    assert!(!err.is_fatal());
    // The log itself carries on.
    assert_eq!(
        log.append(&[Record {
            timestamp: 9,
            payload: b"next"
        }])
        .expect("append"),
        1..2
    );
    assert_eq!(log.read(1).expect("read").payload, b"next");
}
