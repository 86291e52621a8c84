//! Damage to a sealed segment is reported where it is, and never repaired.
//!
//! One byte is flipped at every position of a sealed segment in turn (header
//! and records). Each time:
//!
//! - `verify_dir` reports `Problem::Corruption` naming that segment and the
//!   start of the damaged record (0 for the segment header);
//! - `Log::open` with `Recovery::Full` fails with `Error::Corruption` naming
//!   the same segment and position;
//! - with the default `Recovery::TailOnly` open may succeed (a damaged header
//!   still fails it, at position 0), but reading the damaged record fails
//!   with the same segment and position, while the records before it still
//!   read back;
//! - the segment's bytes are unchanged afterwards: nothing is truncated.
//!
//! The sparse `.idx` files are only a cache: deleted, torn, garbage or
//! belonging to another segment, they are rebuilt on open — to the same bytes
//! — and reads work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use missive_log::format::{SEGMENT_HEADER_LEN, decode_record, index_file_name};
use missive_log::fs::{FileSystem, SimFs};
use missive_log::verify::{Problem, verify_dir};
use missive_log::{Error, Log, Options, Record, Recovery};

const DIR: &str = "/log";
const MAX_RECORD: u32 = 4096;
const RECORDS: u64 = 40;

fn options(fs: &SimFs, recovery: Recovery) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: 700,
        max_record_bytes: MAX_RECORD,
        recovery,
        ..Options::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 90) as usize;
    (0..len)
        .map(|k| (i as u8) ^ (k as u8).wrapping_mul(7))
        .collect()
}

fn path(name: String) -> PathBuf {
    Path::new(DIR).join(name)
}

/// A log of `RECORDS` records in several sealed segments and an active one.
fn write_log() -> SimFs {
    let fs = SimFs::new();
    let log = Log::open(DIR, options(&fs, Recovery::TailOnly)).expect("open");
    for i in 0..RECORDS {
        let p = payload(i);
        log.append(&[Record {
            timestamp: 5_000 + i,
            payload: &p,
        }])
        .expect("append");
    }
    let sealed = log.segments().iter().filter(|s| s.sealed).count();
    assert!(
        sealed >= 3,
        "the test wants several sealed segments, got {sealed}"
    );
    fs
}

/// The segments as the log lists them: (first index, next index, path).
fn segments(fs: &SimFs) -> Vec<(u64, u64, PathBuf)> {
    let log = Log::open(DIR, options(fs, Recovery::TailOnly)).expect("open");
    log.segments()
        .into_iter()
        .map(|s| (s.first_index, s.next_index, s.path))
        .collect()
}

/// Start positions of a segment's records.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        starts.push(pos);
        let (h, _) = decode_record(&bytes[pos..], MAX_RECORD).expect("an intact record");
        pos += h.record_len();
    }
    starts
}

fn assert_corruption_at<T: std::fmt::Debug>(
    r: missive_log::Result<T>,
    seg: &Path,
    pos: u64,
    what: &str,
) {
    match r {
        Err(Error::Corruption {
            segment, position, ..
        }) => {
            assert_eq!((segment.as_path(), position), (seg, pos), "{what}");
        }
        other => panic!(
            "{what}: expected corruption of {} at {pos}, got {other:?}",
            seg.display()
        ),
    }
}

fn flip_every_byte_of(sealed_segment: usize) {
    let fs = write_log();
    let segs = segments(&fs);
    let (first, next, seg) = segs[sealed_segment].clone();
    let original = fs.read_file(&seg).expect("segment");
    let starts = record_starts(&original);
    assert_eq!(starts.len() as u64, next - first);

    for at in 0..original.len() {
        let mut damaged = original.clone();
        damaged[at] ^= if at % 2 == 0 { 0x01 } else { 0x80 };
        fs.write_file(&seg, &damaged);
        // The damaged record (None for the header) and where it starts.
        let k = starts.iter().rposition(|&s| s <= at);
        let expected = k.map_or(0, |k| starts[k]) as u64;
        let what = format!("flip at byte {at} of {}", seg.display());

        let report = verify_dir(&fs, Path::new(DIR), MAX_RECORD).expect("verify");
        match &report.problem {
            Some(Problem::Corruption {
                segment, position, ..
            }) => {
                assert_eq!((segment, *position), (&seg, expected), "verify_dir, {what}");
            }
            other => panic!("verify_dir, {what}: {other:?}"),
        }

        assert_corruption_at(
            Log::open(DIR, options(&fs, Recovery::Full)),
            &seg,
            expected,
            &format!("Full open, {what}"),
        );

        match (Log::open(DIR, options(&fs, Recovery::TailOnly)), k) {
            (r, None) => assert_corruption_at(r, &seg, 0, &format!("TailOnly open, {what}")),
            (Ok(log), Some(k)) => {
                let index = first + k as u64;
                assert_corruption_at(
                    log.read(index),
                    &seg,
                    expected,
                    &format!("read({index}), {what}"),
                );
                for before in first..index {
                    let e = log
                        .read(before)
                        .unwrap_or_else(|e| panic!("read({before}), {what}: {e}"));
                    assert_eq!(e.payload, payload(before), "read({before}), {what}");
                }
                // A range over the damage yields the records before it, then
                // the corruption, then nothing.
                let mut got = Vec::new();
                match log.range(0, RECORDS) {
                    Err(e) => got.push(Err(e)),
                    Ok(it) => got.extend(it),
                }
                let last = got.pop().expect("the range yields something");
                assert_corruption_at(last, &seg, expected, &format!("range, {what}"));
                for (i, e) in got.into_iter().enumerate() {
                    assert_eq!(
                        e.expect("records before the damage read").payload,
                        payload(i as u64)
                    );
                }
            }
            (Err(e), Some(_)) => panic!("TailOnly open, {what}: {e}"),
        }

        assert_eq!(
            fs.read_file(&seg).expect("segment"),
            damaged,
            "{what}: the segment is untouched"
        );
    }
    fs.write_file(&seg, &original);
    let log = Log::open(DIR, options(&fs, Recovery::Full)).expect("the repaired log opens");
    assert_eq!(log.state().next_index, RECORDS);
}

#[test]
fn a_flipped_byte_anywhere_in_the_first_sealed_segment_is_reported_where_it_is() {
    flip_every_byte_of(0);
}

#[test]
fn a_flipped_byte_anywhere_in_a_middle_sealed_segment_is_reported_where_it_is() {
    flip_every_byte_of(1);
}

fn read_all(log: &Log) {
    let all: Vec<_> = log
        .range(0, RECORDS)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("reads");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.payload, payload(i as u64), "record {i}");
    }
    for i in 0..RECORDS {
        assert_eq!(log.read(i).expect("read").payload, payload(i));
    }
}

#[test]
fn a_deleted_index_is_rebuilt_on_open_to_the_same_bytes() {
    let fs = write_log();
    let segs = segments(&fs);
    let sealed: Vec<_> = segs[..segs.len() - 1]
        .iter()
        .map(|(first, _, p)| (*first, p.clone()))
        .collect();
    let originals: Vec<_> = sealed
        .iter()
        .map(|(first, _)| {
            fs.read_file(&path(index_file_name(*first)))
                .expect("an index per sealed segment")
        })
        .collect();
    for (first, _) in &sealed {
        fs.remove(&path(index_file_name(*first)))
            .expect("remove index");
    }
    let log = Log::open(DIR, options(&fs, Recovery::TailOnly)).expect("open without indexes");
    let rebuilt: Vec<_> = sealed.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(log.recovery_report().rebuilt_indexes, rebuilt);
    read_all(&log);
    for ((first, _), original) in sealed.iter().zip(&originals) {
        assert_eq!(
            &fs.read_file(&path(index_file_name(*first)))
                .expect("rebuilt index"),
            original
        );
    }
    drop(log);
    let log = Log::open(DIR, options(&fs, Recovery::TailOnly)).expect("reopen");
    assert!(
        log.recovery_report().rebuilt_indexes.is_empty(),
        "a rebuilt index is used next time"
    );
}

#[test]
fn a_garbage_torn_or_foreign_index_is_rebuilt_on_open() {
    let fs = write_log();
    let segs = segments(&fs);
    let (first, _, seg) = segs[1].clone();
    let idx = path(index_file_name(first));
    let original = fs.read_file(&idx).expect("index");
    let foreign = fs
        .read_file(&path(index_file_name(segs[0].0)))
        .expect("index of segment 0");
    let mut flipped = original.clone();
    flipped[40] ^= 0x04;
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", vec![0x5A; original.len()]),
        ("empty", Vec::new()),
        ("torn", original[..original.len() / 2].to_vec()),
        ("flipped", flipped),
        ("another segment's", foreign),
    ];
    for (what, bytes) in cases {
        fs.write_file(&idx, &bytes);
        let log = Log::open(DIR, options(&fs, Recovery::TailOnly)).expect("open");
        assert_eq!(
            log.recovery_report().rebuilt_indexes,
            vec![seg.clone()],
            "{what} index"
        );
        read_all(&log);
        assert_eq!(
            fs.read_file(&idx).expect("rebuilt index"),
            original,
            "{what} index"
        );
    }
}
