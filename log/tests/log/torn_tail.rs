//! Recovery cuts a torn tail exactly, durably, and only when it is one.
//!
//! - A crash can leave the active segment cut at any byte. For every byte
//!   offset inside the last records, reopening keeps exactly the records
//!   wholly before the cut, reports the dropped bytes, shortens the file to
//!   the end of the last whole record, and the cut survives another crash.
//! - Garbage inside the last, unacknowledged batch is a torn write even when
//!   records of the same batch follow it intact (a crash may persist a
//!   batch's sectors in any order).
//! - A damaged record followed by a record of a *later* batch was
//!   acknowledged: that is corruption, reported with its segment and byte,
//!   and nothing is cut.
//! - A last segment whose header never became durable (an interrupted roll)
//!   is removed; a damaged header in front of acknowledged records is
//!   corruption, never mistaken for one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use missive_log::format::{SEGMENT_HEADER_LEN, SegmentHeader, decode_record, segment_file_name};
use missive_log::fs::{FileSystem, SimFs};
use missive_log::verify::{Problem, verify_dir};
use missive_log::{CorruptionKind, Error, Log, Options, Record, TornTail};

const DIR: &str = "/log";
const MAX_RECORD: u32 = 1 << 16;

fn options(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        max_record_bytes: MAX_RECORD,
        ..Options::default()
    }
}

fn open(fs: &SimFs) -> Log {
    Log::open(DIR, options(fs)).expect("open")
}

fn segment(first: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(first))
}

/// A payload that differs per index, of a length that varies (empty too).
fn payload(index: u64) -> Vec<u8> {
    let len = [0usize, 1, 17, 64, 200, 3][(index % 6) as usize];
    (0..len)
        .map(|k| (index as u8).wrapping_mul(13).wrapping_add(k as u8))
        .collect()
}

/// Writes a log of the given batch sizes (records numbered from 0) on a
/// fresh disk and returns that disk and the active segment's bytes up to
/// the end of its records (without the zeros prepared after them).
fn write_log(batches: &[usize]) -> (SimFs, Vec<u8>) {
    let fs = SimFs::new();
    let log = open(&fs);
    let mut index = 0u64;
    for &n in batches {
        let payloads: Vec<_> = (index..index + n as u64).map(payload).collect();
        let records: Vec<_> = payloads
            .iter()
            .zip(index..)
            .map(|(p, i)| Record {
                timestamp: 1_000 + i,
                payload: p,
            })
            .collect();
        assert_eq!(
            log.append(&records).expect("append"),
            index..index + n as u64
        );
        index += n as u64;
    }
    let records_end = log.segments().pop().expect("an active segment").bytes as usize;
    drop(log);
    let bytes = fs.read_file(&segment(0)).expect("segment 0 exists");
    assert!(
        bytes[records_end..].iter().all(|b| *b == 0),
        "only zeros follow the records"
    );
    (fs, bytes[..records_end].to_vec())
}

/// Byte positions of the records of a segment, plus its end.
fn record_bounds(bytes: &[u8]) -> Vec<usize> {
    let mut bounds = vec![SEGMENT_HEADER_LEN];
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let (h, _) = decode_record(&bytes[pos..], MAX_RECORD).expect("a whole record");
        pos += h.record_len();
        bounds.push(pos);
    }
    bounds
}

/// A fresh disk holding just this active segment.
fn disk_with(bytes: &[u8]) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DIR))
        .expect("create the log directory");
    fs.write_file(&segment(0), bytes);
    fs
}

fn assert_holds(log: &Log, records: u64) {
    assert_eq!(log.state().next_index, records);
    for i in 0..records {
        let e = log.read(i).unwrap_or_else(|err| panic!("read({i}): {err}"));
        assert_eq!(
            (e.timestamp, e.payload),
            (1_000 + i, payload(i)),
            "record {i}"
        );
    }
}

/// Appends record `index`, which must be the log's next.
fn append_next(log: &Log, index: u64) {
    let r = log.append(&[Record {
        timestamp: 1_000 + index,
        payload: &payload(index),
    }]);
    assert_eq!(r.expect("append after recovery"), index..index + 1);
}

fn every_cut_keeps_exactly_the_whole_records_before_it(batches: &[usize]) {
    let (_, full) = write_log(batches);
    let bounds = record_bounds(&full);
    let total = bounds.len() - 1;
    let from = bounds[total - 3];
    for cut in from..=full.len() {
        let whole = bounds
            .iter()
            .rposition(|&b| b <= cut)
            .expect("the header is whole");
        let boundary = bounds[whole];
        let fs = disk_with(&full[..cut]);

        let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
        let expected_problem = (cut != boundary).then(|| Problem::TornTail {
            segment: segment(0),
            position: boundary as u64,
            kind: CorruptionKind::ShortRecord,
        });
        assert_eq!(
            verified.problem, expected_problem,
            "verify_dir, cut at {cut}"
        );

        let log = open(&fs);
        let expected_torn = (cut != boundary).then(|| TornTail {
            segment: segment(0),
            position: boundary as u64,
            dropped_bytes: (cut - boundary) as u64,
            kind: CorruptionKind::ShortRecord,
        });
        assert_eq!(
            log.recovery_report().torn_tail,
            expected_torn,
            "cut at {cut}"
        );
        assert_holds(&log, whole as u64);
        let len = fs.read_file(&segment(0)).expect("segment").len();
        assert_eq!(
            len, boundary,
            "cut at {cut}: the file ends at the last whole record"
        );

        // The cut was fdatasynced: a crash right after open keeps it, and the
        // torn bytes never come back.
        drop(log);
        fs.crash();
        let log = open(&fs);
        assert_eq!(
            log.recovery_report().torn_tail,
            None,
            "cut at {cut}: nothing left to cut"
        );
        assert_holds(&log, whole as u64);
        assert_eq!(fs.read_file(&segment(0)).expect("segment").len(), boundary);

        // And the log goes on from there.
        append_next(&log, whole as u64);
        assert_holds(&log, whole as u64 + 1);

        // The same cut inside space prepared for appends: the torn bytes
        // are followed by zeros. Zeros right after a whole record are the
        // end of the log, not a torn tail; anything else is cut as before.
        let mut prepared = full[..cut].to_vec();
        prepared.resize(cut + 4096, 0);
        let fs = disk_with(&prepared);
        let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
        let log = open(&fs);
        let torn = log.recovery_report().torn_tail.clone();
        if cut == boundary {
            assert_eq!(verified.problem, None, "zeros at {cut}");
            assert_eq!(torn, None, "zeros at {cut}: nothing to cut");
        } else {
            assert!(
                matches!(verified.problem, Some(Problem::TornTail { position, .. }) if position == boundary as u64),
                "zeros after a cut at {cut}: {:?}",
                verified.problem
            );
            let torn = torn.expect("the torn record is cut");
            assert_eq!(torn.position, boundary as u64, "cut at {cut}");
            assert_eq!(torn.dropped_bytes, (cut + 4096 - boundary) as u64);
        }
        assert_holds(&log, whole as u64);
        append_next(&log, whole as u64);
        drop(log);
        fs.crash();
        assert_holds(&open(&fs), whole as u64 + 1);
    }
}

#[test]
fn every_cut_in_the_last_three_single_record_batches_keeps_the_whole_records_before_it() {
    every_cut_keeps_exactly_the_whole_records_before_it(&[1; 8]);
}

#[test]
fn every_cut_in_a_last_batch_of_three_records_keeps_the_whole_records_before_it() {
    every_cut_keeps_exactly_the_whole_records_before_it(&[2, 1, 2, 3]);
}

/// Overwrites `len` bytes at `at` with garbage.
fn smash(bytes: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for (k, byte) in b[at..at + len].iter_mut().enumerate() {
        *byte ^= 0xA5 ^ k as u8;
    }
    b
}

#[test]
fn garbage_inside_the_last_batch_is_torn_even_with_valid_records_of_that_batch_after_it() {
    // Batches [0], [1, 2], [3, 4, 5]: the last one is unacknowledged.
    let (_, full) = write_log(&[1, 2, 3]);
    let bounds = record_bounds(&full);
    for bad in [3usize, 4] {
        // Damage the header and, separately, the payload of record `bad`;
        // record 5 after it stays valid and belongs to the same batch.
        for (at, len) in [(bounds[bad] + 8, 16), (bounds[bad + 1] - 2, 2)] {
            let damaged = smash(&full, at, len);
            let fs = disk_with(&damaged);
            let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
            assert!(
                matches!(verified.problem, Some(Problem::TornTail { position, .. }) if position == bounds[bad] as u64),
                "record {bad}, garbage at {at}: {:?}",
                verified.problem
            );
            let log = open(&fs);
            let torn = log
                .recovery_report()
                .torn_tail
                .clone()
                .expect("a torn tail was cut");
            assert_eq!(torn.segment, segment(0));
            assert_eq!(torn.position, bounds[bad] as u64);
            assert_eq!(torn.dropped_bytes, (full.len() - bounds[bad]) as u64);
            assert_holds(&log, bad as u64);
            drop(log);
            fs.crash();
            let log = open(&fs);
            assert_holds(&log, bad as u64);
            assert_eq!(
                fs.read_file(&segment(0)).expect("segment").len(),
                bounds[bad]
            );
        }
    }
}

#[test]
fn a_damaged_record_followed_by_a_later_batch_is_corruption_and_nothing_is_cut() {
    // Batches [0], [1, 2], [3]: batches 1 and 2 were acknowledged before
    // batch 3 was written.
    let (_, full) = write_log(&[1, 2, 1]);
    let bounds = record_bounds(&full);
    for bad in [0usize, 1, 2] {
        for at in [
            bounds[bad],
            bounds[bad] + 5,
            bounds[bad] + 40,
            bounds[bad + 1] - 1,
        ] {
            let damaged = smash(&full, at, 1);
            let fs = disk_with(&damaged);
            let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
            assert!(
                matches!(&verified.problem, Some(Problem::Corruption { segment: s, position, .. })
                    if *s == segment(0) && *position == bounds[bad] as u64),
                "flip at {at} in record {bad}: {:?}",
                verified.problem
            );
            match Log::open(DIR, options(&fs)) {
                Err(Error::Corruption {
                    segment: s,
                    position,
                    ..
                }) => {
                    assert_eq!(
                        (s, position),
                        (segment(0), bounds[bad] as u64),
                        "flip at {at}"
                    );
                }
                other => panic!("flip at {at} in record {bad}: open gave {other:?}"),
            }
            assert_eq!(
                fs.read_file(&segment(0)).expect("segment"),
                damaged,
                "nothing was cut"
            );
        }
    }
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_removed() {
    // Records 0..3 in segment 0, then a roll to segment 3 that got no
    // further than part of its header (or not even that).
    let (_, full) = write_log(&[1, 1, 1]);
    let header = SegmentHeader {
        first_index: 3,
        prev_hash: [7; 32],
        carried: false,
    }
    .encode();
    for torn_len in [0usize, 1, 30, SEGMENT_HEADER_LEN - 1] {
        let fs = disk_with(&full);
        fs.write_file(&segment(3), &header[..torn_len]);
        // Nothing acknowledged is damaged: the verifier calls it a torn
        // tail, as recovery treats it.
        let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
        assert!(
            matches!(&verified.problem, Some(Problem::TornTail { segment: s, position: 0, .. }) if *s == segment(3)),
            "header of {torn_len} bytes: {:?}",
            verified.problem
        );
        let log = open(&fs);
        let report = log.recovery_report();
        assert_eq!(
            report.removed_unborn_segment,
            Some(segment(3)),
            "header of {torn_len} bytes"
        );
        assert!(
            fs.read_file(&segment(3)).is_err(),
            "the unborn segment is gone"
        );
        assert_holds(&log, 3);
        let r = log.append(&[Record {
            timestamp: 1_003,
            payload: &payload(3),
        }]);
        assert_eq!(r.expect("append"), 3..4);
        drop(log);
        fs.crash();
        assert_holds(&open(&fs), 4);
    }
}

#[test]
fn a_damaged_header_in_front_of_acknowledged_records_is_corruption_not_an_unborn_segment() {
    // One batch of two records is the whole log: no *later* batch follows the
    // header, but any record at all proves the header had been durable.
    for batches in [&[2usize][..], &[1, 1]] {
        let (_, full) = write_log(batches);
        for at in [0usize, 9, 20, 40, 63] {
            let damaged = smash(&full, at, 1);
            let fs = disk_with(&damaged);
            match Log::open(DIR, options(&fs)) {
                Err(Error::Corruption {
                    segment: s,
                    position: 0,
                    ..
                }) => assert_eq!(s, segment(0)),
                other => panic!("batches {batches:?}, header flip at {at}: open gave {other:?}"),
            }
            assert_eq!(
                fs.read_file(&segment(0)).expect("segment"),
                damaged,
                "nothing removed"
            );
            let verified = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
            assert!(
                matches!(
                    verified.problem,
                    Some(Problem::Corruption { position: 0, .. })
                ),
                "{:?}",
                verified.problem
            );
        }
    }
}
