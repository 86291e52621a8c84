//! The active segment keeps zeros prepared ahead of its records, so that a
//! batch overwrites allocated blocks instead of extending the file: the
//! zeros are there after appends, grow in steps, survive a clean reopen
//! (which reads them as the end of the log, not a torn tail), and are cut
//! when the segment is sealed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use missive_log::format::{SEGMENT_HEADER_LEN, segment_file_name};
use missive_log::fs::SimFs;
use missive_log::{Log, Options, Record};

const DIR: &str = "/log";
const PREPARE: u64 = 64 << 10;

fn options(fs: &SimFs, prepare_bytes: u64) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: 1 << 20,
        prepare_bytes,
        ..Options::default()
    }
}

fn segment(first: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(first))
}

fn append(log: &Log, n: usize) {
    let payload = [7u8; 1000];
    let records: Vec<_> = (0..n)
        .map(|_| Record {
            timestamp: 1,
            payload: &payload,
        })
        .collect();
    log.append(&records).expect("append");
}

/// The active segment's record bytes and its file.
fn active(fs: &SimFs, log: &Log) -> (u64, Vec<u8>) {
    let seg = log.segments().pop().expect("an active segment");
    (
        seg.bytes,
        fs.read_file(&seg.path).expect("the active segment"),
    )
}

#[test]
fn zeros_stay_prepared_ahead_of_the_records_and_a_clean_reopen_keeps_them() {
    let fs = SimFs::new();
    let log = Log::open(DIR, options(&fs, PREPARE)).expect("open");
    let (end, file) = active(&fs, &log);
    assert_eq!(end, SEGMENT_HEADER_LEN as u64);
    assert_eq!(
        file.len() as u64,
        end + PREPARE,
        "a new segment is prepared"
    );

    let mut lengths = Vec::new();
    for _ in 0..100 {
        append(&log, 3);
        let (end, file) = active(&fs, &log);
        assert!(
            file.len() as u64 >= end + PREPARE / 2,
            "at least half the prepared space stays ahead: {end} of {}",
            file.len()
        );
        assert!(file[end as usize..].iter().all(|b| *b == 0));
        lengths.push(file.len());
    }
    lengths.dedup();
    assert!(lengths.len() > 2, "the file grew in steps: {lengths:?}");

    let (end, file) = active(&fs, &log);
    drop(log);
    fs.crash();
    let log = Log::open(DIR, options(&fs, PREPARE)).expect("reopen");
    assert_eq!(
        log.recovery_report().torn_tail,
        None,
        "zeros are no torn tail"
    );
    assert_eq!(log.state().next_index, 300);
    assert_eq!(active(&fs, &log), (end, file), "nothing was cut");
}

#[test]
fn a_sealed_segment_holds_exactly_its_records() {
    let fs = SimFs::new();
    let log = Log::open(DIR, options(&fs, PREPARE)).expect("open");
    // 1 MiB segments of ~1 KiB records: several rolls.
    for _ in 0..40 {
        append(&log, 100);
    }
    let segs = log.segments();
    assert!(segs.len() > 2, "the log rolled: {segs:?}");
    for s in segs.iter().filter(|s| s.sealed) {
        let len = fs.read_file(&s.path).expect("sealed segment").len() as u64;
        assert_eq!(len, s.bytes, "{} holds only its records", s.path.display());
    }
    drop(log);
    let log = Log::open(DIR, options(&fs, PREPARE)).expect("reopen");
    assert_eq!(log.recovery_report().rebuilt_indexes, Vec::<PathBuf>::new());
    assert_eq!(log.state().next_index, 4000);
}

#[test]
fn with_nothing_to_prepare_the_file_ends_at_its_records() {
    let fs = SimFs::new();
    let log = Log::open(DIR, options(&fs, 0)).expect("open");
    append(&log, 5);
    let (end, file) = active(&fs, &log);
    assert_eq!(file.len() as u64, end);
    assert_eq!(
        fs.read_file(&segment(0)).expect("segment 0").len() as u64,
        end
    );
}
