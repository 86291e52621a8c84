//! Appends from many threads are each acknowledged exactly once, durably,
//! and group-committed.
//!
//! - On a real disk, 8 threads append 200 small batches each. After reopening,
//!   every acknowledged record is present exactly once with its payload at
//!   the index it was acknowledged with, the indexes run contiguously from 0,
//!   and `verify_dir` finds no problem and the same head hash.
//! - With small segments that roll all the time, readers running beside the
//!   writers only ever see whole, acknowledged records.
//! - Group commit: while one batch's fdatasync is held up, appends from 15
//!   other threads queue and then go to disk together — one write and one
//!   fdatasync for all of them. The test holds the first sync at a gate it
//!   controls, so the batching does not depend on scheduling luck.

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use missive_log::fs::{FileSystem, LogFile, Mapping, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{Log, Options, Record};

/// A payload naming who appended it: thread, sequence number of the append,
/// position in its batch, then filler of a varying length.
fn payload(thread: u32, seq: u32, k: u8) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&thread.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.push(k);
    p.resize(9 + (seq as usize * 7 + usize::from(k)) % 60, k ^ 0x5A);
    p
}

fn parse(p: &[u8]) -> (u32, u32, u8) {
    assert!(p.len() >= 9, "payload too short: {p:?}");
    let thread = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    let seq = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
    let k = p[8];
    assert_eq!(
        p,
        payload(thread, seq, k),
        "payload of ({thread}, {seq}, {k}) is intact"
    );
    (thread, seq, k)
}

fn batch_len(seq: u32) -> u8 {
    (seq % 3) as u8 + 1
}

/// Appends `appends` batches from `thread`; returns the acknowledged ranges
/// by sequence number.
fn append_batches(log: &Log, thread: u32, appends: u32) -> Vec<(u32, Range<u64>)> {
    (0..appends)
        .map(|seq| {
            let payloads: Vec<_> = (0..batch_len(seq))
                .map(|k| payload(thread, seq, k))
                .collect();
            let records: Vec<_> = payloads
                .iter()
                .map(|p| Record {
                    timestamp: u64::from(seq),
                    payload: p,
                })
                .collect();
            let range = log.append(&records).expect("append");
            assert_eq!(range.end - range.start, records.len() as u64);
            (seq, range)
        })
        .collect()
}

/// Every acknowledged record is in `log` exactly once, where it was
/// acknowledged, and the log holds nothing else.
fn assert_all_acknowledged_present(log: &Log, acked: &[Vec<(u32, Range<u64>)>]) {
    let total: u64 = acked.iter().flatten().map(|(_, r)| r.end - r.start).sum();
    assert_eq!(
        log.state().next_index,
        total,
        "the log holds exactly the acknowledged records"
    );
    let entries: Vec<_> = log
        .range(0, total)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("reads");
    let mut at: HashMap<(u32, u32, u8), u64> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.index, i as u64, "indexes are contiguous from 0");
        let who = parse(&e.payload);
        assert_eq!(e.timestamp, u64::from(who.1));
        assert!(at.insert(who, e.index).is_none(), "{who:?} is present once");
    }
    for (thread, ranges) in acked.iter().enumerate() {
        for (seq, range) in ranges {
            for (k, index) in range.clone().enumerate() {
                let who = (thread as u32, *seq, k as u8);
                assert_eq!(
                    at.get(&who),
                    Some(&index),
                    "{who:?} is where it was acknowledged"
                );
            }
        }
    }
}

fn assert_verified(log: &Log, dir: &Path) {
    let report = verify_dir(
        &missive_log::fs::StdFs,
        dir,
        Options::default().max_record_bytes,
    )
    .expect("verify");
    assert_eq!(report.problem, None);
    assert_eq!(report.head_hash(), Some(log.state().head_hash));
}

#[test]
fn appends_from_eight_threads_are_all_present_exactly_once_after_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, Options::default()).expect("open");
    let acked: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                s.spawn({
                    let log = &log;
                    move || append_batches(log, t, 200)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender"))
            .collect()
    });
    drop(log);
    let log = Log::open(&dir, Options::default()).expect("reopen");
    assert_eq!(log.recovery_report().torn_tail, None);
    assert_all_acknowledged_present(&log, &acked);
    assert_verified(&log, &dir);
}

#[test]
fn readers_beside_writers_see_only_whole_acknowledged_records_while_segments_roll() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let opts = || Options {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..Options::default()
    };
    let log = Log::open(&dir, opts()).expect("open");
    let done = AtomicBool::new(false);
    let (acked, seen) = thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (log, done) = (&log, &done);
                s.spawn(move || {
                    let mut seen = HashMap::new();
                    let mut round = 0u64;
                    while !done.load(Ordering::Acquire) {
                        round += 1;
                        let next = log.state().next_index;
                        if next == 0 {
                            continue;
                        }
                        let i = (round * 7919 + r) % next;
                        let e = if round.is_multiple_of(2) {
                            log.read(i)
                        } else {
                            log.read_recent(i)
                        };
                        let e =
                            e.unwrap_or_else(|err| panic!("read({i}) below next {next}: {err}"));
                        assert_eq!(e.index, i);
                        seen.insert(i, parse(&e.payload));
                        if round.is_multiple_of(50) {
                            let from = next.saturating_sub(40);
                            for e in log.range(from, next).expect("range") {
                                let e = e.expect("range reads");
                                seen.insert(e.index, parse(&e.payload));
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                s.spawn({
                    let log = &log;
                    move || append_batches(log, t, 150)
                })
            })
            .collect();
        let acked: Vec<_> = writers
            .into_iter()
            .map(|h| h.join().expect("appender"))
            .collect();
        done.store(true, Ordering::Release);
        let seen: Vec<_> = readers
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .collect();
        (acked, seen)
    });
    assert!(
        log.segments().len() > 10,
        "segments rolled while readers read"
    );
    drop(log);
    let log = Log::open(&dir, opts()).expect("reopen");
    assert_all_acknowledged_present(&log, &acked);
    // What the readers saw is what is in the log now.
    for seen in seen {
        assert!(!seen.is_empty(), "the reader read something");
        for (i, who) in seen {
            assert_eq!(
                parse(&log.read(i).expect("read").payload),
                who,
                "record {i}"
            );
        }
    }
    assert_verified(&log, &dir);
}

/// A gate the test closes to hold up fdatasync calls.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// How many syncs are waiting at the closed gate.
    waiting: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = closed;
        self.opened.notify_all();
    }
}

/// The simulated disk, with every fdatasync passing through the gate.
#[derive(Debug)]
struct GatedFs {
    disk: SimFs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    file: Arc<dyn LogFile>,
    gate: Arc<Gate>,
}

impl GatedFs {
    fn gated(&self, file: Arc<dyn LogFile>) -> Arc<dyn LogFile> {
        Arc::new(GatedFile {
            file,
            gate: self.gate.clone(),
        })
    }
}

impl FileSystem for GatedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        self.disk.create_new(path).map(|f| self.gated(f))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn LogFile>> {
        self.disk.open(path, write).map(|f| self.gated(f))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        self.disk.lock_dir(dir)
    }
}

impl LogFile for GatedFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.file.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn map(&self) -> io::Result<Mapping> {
        self.file.map()
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn appends_queued_behind_a_slow_fdatasync_share_one_write_and_one_fdatasync() {
    const FOLLOWERS: u32 = 15;
    let disk = SimFs::new();
    let gate = Arc::new(Gate::default());
    let fs = GatedFs {
        disk: disk.clone(),
        gate: gate.clone(),
    };
    let log = Log::open(
        "/log",
        Options {
            fs: Arc::new(fs),
            ..Options::default()
        },
    )
    .expect("open");
    let before = disk.counters();

    gate.set(true);
    let started = AtomicUsize::new(0);
    let acked: Vec<_> = thread::scope(|s| {
        // The first appender leads its batch and stops at the closed gate,
        // holding the writer.
        let first = s.spawn(|| append_batches(&log, 0, 1));
        wait_until("the first batch waits for its fdatasync", || {
            gate.waiting.load(Ordering::SeqCst) == 1
        });
        // Everyone else queues up behind it.
        let followers: Vec<_> = (1..=FOLLOWERS)
            .map(|t| {
                let (log, started) = (&log, &started);
                s.spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    append_batches(log, t, 1)
                })
            })
            .collect();
        wait_until("every follower is appending", || {
            started.load(Ordering::SeqCst) == FOLLOWERS as usize
        });
        // From calling `append` to waiting in the queue takes microseconds;
        // allow far more before letting the first batch finish. Even if only
        // two followers made it in time, they would still share a batch.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            gate.waiting.load(Ordering::SeqCst),
            1,
            "followers wait in the queue, not at the disk"
        );
        gate.set(false);
        let mut acked = vec![first.join().expect("first appender")];
        acked.extend(followers.into_iter().map(|h| h.join().expect("follower")));
        acked
    });

    let after = disk.counters();
    let appends = u64::from(FOLLOWERS) + 1;
    let syncs = after.syncs - before.syncs;
    let writes = after.writes - before.writes;
    // Typically 2: the first batch, then all followers in one batch.
    assert!(
        syncs < appends,
        "group commit: {syncs} fdatasyncs for {appends} appends"
    );
    assert_eq!(writes, syncs, "one write per batch");
    assert_all_acknowledged_present(&log, &acked);
}
