//! Retention deletes only whole sealed segments wholly below the purge point.
//!
//! Purge is logical; the retention policy (by total size, by age against the
//! injected clock) then deletes segments — oldest first, and only sealed
//! ones whose every record is purged. The segment holding the purge point
//! and the active segment stay, whatever the policy says. Reads at and above
//! the purge point keep working, reopening and crashing change nothing, and a
//! reader still holding a deleted segment keeps reading it: the file is only
//! renamed aside until that reader lets go.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use missive_log::fs::{FileSystem, SimFs, StdFs};
use missive_log::verify::verify_dir;
use missive_log::{Clock, Error, Log, Options, Record, Retention, SegmentInfo};

const DIR: &str = "/log";
const RECORDS: u64 = 30;

fn payload(i: u64) -> Vec<u8> {
    format!("record {i:03} {}", "r".repeat(80)).into_bytes()
}

/// Timestamps one second apart.
fn timestamp(i: u64) -> u64 {
    1_000 * i
}

fn options(fs: Arc<dyn FileSystem>, retention: Retention, clock: Clock) -> Options {
    Options {
        fs,
        segment_bytes: 512,
        retention,
        clock,
        ..Options::default()
    }
}

fn append_all(log: &Log, from: u64, to: u64) {
    for i in from..to {
        let p = payload(i);
        assert_eq!(
            log.append(&[Record {
                timestamp: timestamp(i),
                payload: &p
            }])
            .expect("append"),
            i..i + 1
        );
    }
}

/// The `.seg` and `.idx` files in the directory, sorted.
fn files(fs: &dyn FileSystem, dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs
        .list(dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".seg") || n.ends_with(".idx") || n.ends_with(".retired"))
        .collect();
    names.sort();
    names
}

fn seg_files(segs: &[SegmentInfo]) -> Vec<PathBuf> {
    segs.iter().map(|s| s.path.clone()).collect()
}

/// Visible records read back; the one below the purge point is refused.
fn assert_reads(log: &Log, first: u64, next: u64) {
    let state = log.state();
    assert_eq!((state.first_index, state.next_index), (first, next));
    for i in first..next {
        assert_eq!(log.read(i).expect("read").payload, payload(i), "record {i}");
    }
    let all: Vec<_> = log
        .range(first, next)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("reads");
    assert_eq!(all.len() as u64, next - first);
    if first > 0 {
        assert!(matches!(log.read(first - 1), Err(Error::Purged { .. })));
    }
}

/// Only sealed segments wholly below the purge point are gone, oldest first.
fn assert_only_purged_sealed_segments_deleted(
    before: &[SegmentInfo],
    after: &[SegmentInfo],
    first: u64,
) {
    let deleted = before.len() - after.len();
    assert_eq!(
        &before[deleted..],
        after,
        "the newest segments are untouched, in order"
    );
    for s in &before[..deleted] {
        assert!(s.sealed, "{s:?} was sealed");
        assert!(
            s.next_index <= first,
            "{s:?} lay wholly below the purge point {first}"
        );
    }
    assert!(
        !after.last().expect("active").sealed,
        "the active segment is kept"
    );
}

fn assert_verified(fs: &dyn FileSystem, log: &Log) {
    let report =
        verify_dir(fs, Path::new(DIR), Options::default().max_record_bytes).expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.head_hash(), Some(log.state().head_hash));
    assert_eq!(report.purge_point, Some(log.state().first_index));
}

fn size_retention(max_total_bytes: u64) -> Retention {
    Retention {
        max_age_ms: None,
        max_total_bytes: Some(max_total_bytes),
    }
}

#[test]
fn size_retention_deletes_only_sealed_segments_wholly_below_the_purge_point() {
    let disk = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(disk.clone());
    let opts = || options(fs.clone(), size_retention(0), Clock::new(|| 0));
    let log = Log::open(DIR, opts()).expect("open");
    append_all(&log, 0, RECORDS);
    let before = log.segments();
    assert!(before.len() >= 6, "several segments: {before:?}");

    // The purge point in the middle of the fourth segment: the first three
    // go, the fourth (partly visible) and all later ones stay.
    let holder = &before[3];
    let first = holder.first_index + 1;
    log.purge(first - 1).expect("purge");
    let after = log.segments();
    assert_eq!(
        after[0], *holder,
        "the segment holding the purge point is kept"
    );
    assert_only_purged_sealed_segments_deleted(&before, &after, first);
    for s in &before[..3] {
        let name = s
            .path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            !files(&*fs, Path::new(DIR))
                .iter()
                .any(|f| f.starts_with(&name[..20])),
            "{name} and its index are gone"
        );
    }
    assert_reads(&log, first, RECORDS);
    assert_verified(&*fs, &log);

    // Purge point exactly at a segment boundary: that segment stays whole.
    let boundary = after[1].first_index;
    log.purge(boundary - 1).expect("purge");
    assert_eq!(seg_files(&log.segments()), seg_files(&after[1..]));
    assert_reads(&log, boundary, RECORDS);

    drop(log);
    let log = Log::open(DIR, opts()).expect("reopen");
    assert_eq!(seg_files(&log.segments()), seg_files(&after[1..]));
    assert_reads(&log, boundary, RECORDS);
    drop(log);
    disk.crash();
    let log = Log::open(DIR, opts()).expect("reopen after a crash");
    assert_eq!(seg_files(&log.segments()), seg_files(&after[1..]));
    assert_reads(&log, boundary, RECORDS);
    assert_verified(&*fs, &log);

    // Purge everything: every sealed segment goes, the active one stays
    // though none of its records is visible, and the log goes on.
    log.purge(RECORDS - 1).expect("purge all");
    let segs = log.segments();
    assert_eq!(segs.len(), 1, "only the active segment is left: {segs:?}");
    assert!(!segs[0].sealed && segs[0].first_index < RECORDS);
    assert_reads(&log, RECORDS, RECORDS);
    append_all(&log, RECORDS, RECORDS + 10);
    assert_reads(&log, RECORDS, RECORDS + 10);
    drop(log);
    let log = Log::open(DIR, opts()).expect("reopen");
    assert_reads(&log, RECORDS, RECORDS + 10);
    assert_verified(&*fs, &log);
}

#[test]
fn size_retention_stops_once_the_log_fits_and_never_deletes_unpurged_segments() {
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    let all = {
        let log = Log::open(
            "/measure",
            options(fs.clone(), Retention::KEEP_FOREVER, Clock::new(|| 0)),
        )
        .expect("open");
        append_all(&log, 0, RECORDS);
        log.segments()
    };
    let total: u64 = all.iter().map(|s| s.bytes).sum();
    // Room for all but the two oldest segments (and a little more).
    let max = total - all[0].bytes - all[1].bytes + 10;
    let opts = || options(fs.clone(), size_retention(max), Clock::new(|| 0));
    let log = Log::open(DIR, opts()).expect("open");
    append_all(&log, 0, RECORDS);
    let before = log.segments();
    let shape = |segs: &[SegmentInfo]| -> Vec<_> {
        segs.iter().map(|s| (s.first_index, s.bytes)).collect()
    };
    assert_eq!(
        shape(&before),
        shape(&all),
        "the same records make the same segments"
    );

    // Nothing is purged: the log is over its size, but nothing may go.
    log.apply_retention().expect("retention");
    assert_eq!(
        log.segments(),
        before,
        "unpurged segments are never deleted"
    );

    // Only the first segment is purged: it alone goes, though the log is
    // still too big.
    log.purge(before[0].next_index - 1).expect("purge");
    assert_eq!(log.segments(), before[1..]);

    // Purge far ahead: the oldest go until the log fits — exactly two here.
    let first = before[5].first_index + 1;
    log.purge(first - 1).expect("purge");
    assert_eq!(log.segments(), before[2..]);
    let size: u64 = log.segments().iter().map(|s| s.bytes).sum();
    assert!(size <= max);
    assert_reads(&log, first, RECORDS);
    drop(log);
    let log = Log::open(DIR, opts()).expect("reopen");
    assert_eq!(log.segments(), before[2..]);
    assert_reads(&log, first, RECORDS);
    assert_verified(&*fs, &log);
}

#[test]
fn age_retention_deletes_purged_segments_older_than_the_limit_by_the_injected_clock() {
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    let now = Arc::new(AtomicU64::new(0));
    let clock = {
        let now = now.clone();
        Clock::new(move || now.load(Ordering::SeqCst))
    };
    const MAX_AGE: u64 = 10_000;
    let retention = Retention {
        max_age_ms: Some(MAX_AGE),
        max_total_bytes: None,
    };
    let opts = || options(fs.clone(), retention, clock.clone());
    let log = Log::open(DIR, opts()).expect("open");
    append_all(&log, 0, RECORDS);
    let before = log.segments();
    // The newest timestamp of a segment is that of its last record.
    let newest = |s: &SegmentInfo| timestamp(s.next_index - 1);

    // Purge into the fifth segment; the clock says nothing is old yet.
    let first = before[4].first_index + 1;
    log.purge(first - 1).expect("purge");
    assert_eq!(log.segments(), before, "young segments stay, purged or not");

    // Time passes: the first two segments are now older than the limit.
    now.store(newest(&before[1]) + MAX_AGE, Ordering::SeqCst);
    log.apply_retention().expect("retention");
    assert_eq!(log.segments(), before[2..]);

    // Much later every segment is old, but only the purged ones go: the one
    // holding the purge point and everything after it stay.
    now.store(timestamp(RECORDS) + 100 * MAX_AGE, Ordering::SeqCst);
    log.apply_retention().expect("retention");
    assert_eq!(log.segments(), before[4..]);
    assert_reads(&log, first, RECORDS);

    drop(log);
    let log = Log::open(DIR, opts()).expect("reopen");
    assert_eq!(log.segments(), before[4..]);
    assert_reads(&log, first, RECORDS);
    assert_verified(&*fs, &log);
}

#[test]
fn a_reader_keeps_reading_a_deleted_segment_whose_file_goes_once_it_lets_go() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let opts = || options(fs.clone(), size_retention(0), Clock::new(|| 0));
    let log = Log::open(&dir, opts()).expect("open");
    append_all(&log, 0, RECORDS);
    let before = log.segments();

    // A reader starts on the first segment, then everything below the third
    // segment is purged and deleted under it.
    let mut reader = log.range(0, before[1].next_index).expect("range");
    let e = reader.next().expect("a record").expect("reads");
    assert_eq!(e.payload, payload(0));
    log.purge(before[2].first_index - 1).expect("purge");
    assert_eq!(log.segments(), before[2..]);
    let on_disk = files(&*fs, &dir);
    for s in &before[..2] {
        let name = s
            .path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            on_disk.contains(&format!("{name}.retired")),
            "{name} is renamed aside: {on_disk:?}"
        );
        assert!(
            !on_disk.contains(&name),
            "{name} is out of the log: {on_disk:?}"
        );
    }

    // The reader reads on through both deleted segments.
    let rest: Vec<_> = reader
        .collect::<Result<_, _>>()
        .expect("the mappings still read");
    assert_eq!(rest.len() as u64, before[1].next_index - 1);
    for (i, e) in (1..).zip(rest) {
        assert_eq!((e.index, e.payload), (i, payload(i)));
    }

    // The next mutation unlinks the files nobody maps any more.
    log.apply_retention().expect("retention");
    let on_disk = files(&*fs, &dir);
    assert!(
        on_disk.iter().all(|f| !f.ends_with(".retired")),
        "{on_disk:?}"
    );
    assert_reads(&log, before[2].first_index, RECORDS);
    drop(log);

    // And a file left renamed aside by a crash is removed on open.
    std::fs::write(dir.join("00000000000000000000.seg.retired"), b"left over").expect("write");
    let log = Log::open(&dir, opts()).expect("reopen");
    assert_eq!(
        log.recovery_report().removed_leftovers,
        vec![dir.join("00000000000000000000.seg.retired")]
    );
    assert_reads(&log, before[2].first_index, RECORDS);
}

#[test]
fn retention_keeps_every_segment_above_the_floor_a_backup_set() {
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    // Any purged segment is too old for this policy.
    let policy = Retention {
        max_age_ms: Some(1),
        max_total_bytes: None,
    };
    let log = Log::open(
        DIR,
        options(fs.clone(), policy, Clock::new(|| u64::MAX / 2)),
    )
    .expect("open");
    append_all(&log, 0, RECORDS);
    let before = log.segments();
    assert!(before.len() > 4, "several segments: {before:?}");
    // A backup holds records up to the end of the second segment.
    let floor = before[1].next_index - 1;
    log.set_retention_floor(floor);
    // Everything but the active segment is purged; only the two segments
    // the backup has may go.
    log.purge(before[before.len() - 2].next_index - 1)
        .expect("purge");
    assert_eq!(log.segments(), before[2..]);
    // A later backup moves the floor: retention follows it.
    log.set_retention_floor(before[3].next_index - 1);
    log.apply_retention().expect("retention");
    assert_eq!(log.segments(), before[4..]);
    assert_verified(&*fs, &log);
}

/// What a snapshot policy reads: the bytes after an index agree with the
/// segments' own sizes, whole segments after the index and none before it.
#[test]
fn the_bytes_after_an_index_add_up_the_segments_after_it() {
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    let log = Log::open(DIR, options(fs, Retention::KEEP_FOREVER, Clock::new(|| 0))).expect("open");
    append_all(&log, 0, RECORDS);
    let segments = log.segments();
    assert!(segments.len() > 2, "the records span several segments");
    let all: u64 = segments.iter().map(|s| s.bytes).sum();
    assert_eq!(log.bytes_after(None), all);
    assert_eq!(log.bytes_after(Some(RECORDS - 1)), 0);
    // Just before a segment boundary: that segment and every later one.
    let second = &segments[1];
    let from_second: u64 = segments[1..].iter().map(|s| s.bytes).sum();
    assert_eq!(log.bytes_after(Some(second.first_index - 1)), from_second);
    // Inside it: less than that, more than the segments after it.
    let after_second: u64 = segments[2..].iter().map(|s| s.bytes).sum();
    let inside = log.bytes_after(Some(second.first_index));
    assert!(inside < from_second && inside > after_second, "{inside}");
}
