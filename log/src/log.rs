//! The log: group-committed appends, reads, truncation, purge and retention.
//!
//! # Concurrency
//!
//! Three locks, always taken in this order when nested:
//!
//! - `writer` (Mutex): held by whoever changes the files — the commit leader
//!   of a batch, `truncate_after`, `purge`, retention. One mutator at a time
//!   means the bytes on disk are only ever extended, cut or replaced by one
//!   thread, in the order the durability argument below assumes.
//! - `queue` (Mutex): appenders enqueue their records here, each with a
//!   wake-up slot of its own (Mutex + Condvar). The first one to find no
//!   leader becomes the leader, takes the whole queue as one batch, writes it
//!   with one `write` and one `fdatasync`, hands the lead to the oldest
//!   appender that queued meanwhile (so the next batch starts at once), and
//!   wakes its own batch's appenders one by one: group commit without a
//!   dedicated thread, and no appender is woken for nothing. A slot's lock is
//!   taken under `queue` only to hand over the lead, never the other way.
//! - `view` (RwLock): what readers see — only durable records. The writer
//!   updates it after the bytes are durable, so a reader never sees a record
//!   that a crash could take back. Readers hold it only to copy `Arc`s and
//!   positions; no I/O happens under it.
//!
//! No lock is held across a wait for another lock's holder except `writer`,
//! which the leader holds across its I/O on purpose.
//!
//! # Durability
//!
//! An append is acknowledged only after the fdatasync of its batch returns.
//! A segment file is created with its header, fdatasynced, and its directory
//! entry fsynced before any record is written to it. A batch never spans two
//! segments. Any failed write or sync poisons the log: what reached the disk
//! is unknown, and retrying an fsync can report success for data that was
//! dropped (the "fsyncgate" lesson), so every later call fails until reopen
//! lets recovery look at what is really there.

use std::any::Any;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::format::{
    self, ChainHash, RECORD_HEADER_LEN, RecordHeader, SegmentHeader, chain_hash, segment_file_name,
};
use crate::fs::{FileSystem, LogFile, replace_durably};
use crate::index::{SegmentIndex, SparseBuilder};
use crate::meta;
use crate::options::{Options, SyncMode};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{ActiveView, Entries, Entry, Part, Sealed, raced, read_active};

/// One record to append.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch, chosen by the caller (replicas of a
    /// log must agree on it, so the log does not read its own clock here).
    pub timestamp: u64,
    /// The bytes to store.
    pub payload: &'a [u8],
}

/// The visible extent of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    /// First index that can be read (everything below is purged).
    pub first_index: u64,
    /// Index the next appended record gets.
    pub next_index: u64,
    /// Chain hash of the last record (of the record before the first
    /// segment's first one if the log holds none).
    pub head_hash: ChainHash,
}

/// A summary of one segment file, for tools and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its first index.
    pub first_index: u64,
    /// Its next index (first index + record count).
    pub next_index: u64,
    /// Bytes of its records (the active segment's file also holds the
    /// zeros prepared after them; see [`Options::prepare_bytes`]).
    pub bytes: u64,
    /// Whether it is sealed (false for the one active segment).
    pub sealed: bool,
}

/// A segmented, checksummed, hash-chained append-only log in one directory.
pub struct Log {
    /// The log's directory.
    dir: PathBuf,
    /// Options it was opened with (the file system among them).
    opts: Options,
    /// What readers see; see the module docs.
    view: RwLock<View>,
    /// Held by the single mutator of the files.
    writer: Mutex<Writer>,
    /// Appends waiting for a commit leader.
    queue: Mutex<Queue>,
    /// Set by the first failed write or sync; every later call fails.
    poison: RwLock<Option<Arc<str>>>,
    /// Counts truncations, so readers can tell a record cut under them from
    /// damage (see `segment::raced`).
    truncations: Arc<AtomicU64>,
    /// Retention deletes no segment holding a record above this index
    /// (`u64::MAX`: no bound): the last index a completed backup holds, so
    /// that the next incremental backup still finds every record after it.
    retention_floor: AtomicU64,
    /// What recovery found when the log was opened.
    report: RecoveryReport,
    /// The directory lock, released when the log is dropped.
    _lock: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("state", &self.state())
            .finish()
    }
}

/// The durable state readers see.
#[derive(Debug)]
pub(crate) struct View {
    /// Sealed segments in index order.
    pub sealed: Vec<Arc<Sealed>>,
    /// The segment appends go to.
    pub active: ActiveView,
    /// The purge point: the first readable index.
    pub first_visible: u64,
    /// Chain hash of the last durable record.
    pub head: ChainHash,
}

impl View {
    fn next(&self) -> u64 {
        self.active.next()
    }
}

/// State only the writer touches.
#[derive(Debug, Default)]
struct Writer {
    /// Reused buffer for encoding a batch.
    buf: Vec<u8>,
    /// Segments removed from the log while readers still mapped them, renamed
    /// aside and unlinked once the last reader lets go.
    retired: Vec<(PathBuf, Arc<Sealed>)>,
}

/// Appends waiting to be written.
#[derive(Debug, Default)]
struct Queue {
    pending: Vec<Pending>,
    /// Whether an appender leads: commits a batch now, or has been handed
    /// the next one. While set, new arrivals only queue and wait.
    leader: bool,
}

/// Why a waiting appender is woken.
#[derive(Debug)]
enum Wake {
    /// Its records are committed (or failed).
    Done(Result<Range<u64>>),
    /// The previous leader handed it the next batch.
    Lead,
}

/// Where one waiting appender is woken, alone: waking every appender on a
/// shared condvar after each batch (most of them for nothing) costs more
/// than the fdatasync once hundreds of threads append.
#[derive(Debug, Default)]
struct Slot {
    wake: Mutex<Option<Wake>>,
    cv: Condvar,
}

impl Slot {
    fn wake(&self, why: Wake) {
        *lock(&self.wake) = Some(why);
        self.cv.notify_one();
    }

    fn wait(&self) -> Wake {
        let mut w = lock(&self.wake);
        loop {
            if let Some(why) = w.take() {
                return why;
            }
            w = self.cv.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One caller's records, pre-encoded with the fields the leader cannot know
/// (index, batch offset, chain hash, CRC) left blank.
#[derive(Debug)]
struct Pending {
    slot: Arc<Slot>,
    expected_first: Option<u64>,
    count: u64,
    bytes: Vec<u8>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding one of these locks leaves data that is still
    // consistent (every update is a single assignment after the I/O), so a
    // poisoned std lock is not a reason to stop serving.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from whatever
    /// a crash left: a torn tail is cut and fsynced; corruption anywhere else
    /// is an error naming the segment and byte.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        let dir = dir.as_ref().to_owned();
        if opts.segment_bytes < (format::SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64 {
            return Err(Error::InvalidOption(
                "segment_bytes is smaller than one record",
            ));
        }
        if opts.index_interval_bytes == 0 {
            return Err(Error::InvalidOption(
                "index_interval_bytes must be positive",
            ));
        }
        let fs = opts.fs.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create dir", &dir, e))?;
        let lock = fs.lock_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked(dir.clone())
            } else {
                Error::io("lock", &dir, e)
            }
        })?;
        let (view, report) = recovery::recover(&dir, &opts)?;
        Ok(Log {
            dir,
            opts,
            view: RwLock::new(view),
            writer: Mutex::new(Writer::default()),
            queue: Mutex::new(Queue::default()),
            poison: RwLock::new(None),
            truncations: Arc::new(AtomicU64::new(0)),
            retention_floor: AtomicU64::new(u64::MAX),
            report,
            _lock: lock,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery found and did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// First readable index, next index and head hash.
    pub fn state(&self) -> LogState {
        let v = read(&self.view);
        LogState {
            first_index: v.first_visible,
            next_index: v.next(),
            head_hash: v.head,
        }
    }

    /// Bytes of the records after entry `index` (all of them for `None`):
    /// the segments after it whole, the one holding it in proportion to its
    /// records after it. Visits only those segments and copies nothing, so
    /// asking often costs little however long the log.
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        let from = index.map_or(0, |i| i + 1);
        let v = read(&self.view);
        let active = share_after(v.active.first(), v.active.next(), v.active.end, from);
        let sealed: u64 = v
            .sealed
            .iter()
            .rev()
            .map(|s| (s.first(), s.last() + 1, s.index.segment_len))
            .take_while(|(_, next, _)| *next > from)
            .map(|(first, next, bytes)| share_after(first, next, bytes, from))
            .sum();
        active + sealed
    }

    /// The segments on disk that belong to the log, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let v = read(&self.view);
        let mut out: Vec<SegmentInfo> = v
            .sealed
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                first_index: s.first(),
                next_index: s.last() + 1,
                bytes: s.index.segment_len,
                sealed: true,
            })
            .collect();
        out.push(SegmentInfo {
            path: v.active.path.clone(),
            first_index: v.active.first(),
            next_index: v.active.next(),
            bytes: v.active.end,
            sealed: false,
        });
        out
    }

    fn check_poison(&self) -> Result<()> {
        match &*read(&self.poison) {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records `err` as the poison cause (the first one wins) and returns it.
    fn poisoned(&self, err: Error) -> Error {
        let mut p = write(&self.poison);
        if p.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %err, "log poisoned");
            *p = Some(Arc::from(err.to_string()));
        }
        err
    }

    /// Appends records and returns their indexes once they are durable.
    ///
    /// Concurrent callers are committed together: one write and one
    /// fdatasync for all of them.
    pub fn append(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.submit(None, records)
    }

    /// Like [`Log::append`], but fails with [`Error::IndexMismatch`] (and
    /// writes nothing) unless the first record gets index `first`. For
    /// replication, where the index is decided elsewhere.
    pub fn append_at(&self, first: u64, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.submit(Some(first), records)
    }

    fn submit(&self, expected_first: Option<u64>, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.check_poison()?;
        let max = self.opts.max_record_bytes;
        let mut bytes = Vec::with_capacity(
            records
                .iter()
                .map(|r| RECORD_HEADER_LEN + r.payload.len())
                .sum(),
        );
        for r in records {
            if r.payload.len() > max as usize {
                return Err(Error::RecordTooLarge {
                    len: r.payload.len(),
                    max,
                });
            }
            let header = RecordHeader {
                payload_len: r.payload.len() as u32,
                index: 0,
                timestamp: r.timestamp,
                batch_offset: 0,
                chain_hash: [0; 32],
            };
            format::encode_record(&mut bytes, &header, r.payload);
        }
        if records.is_empty() {
            let next = read(&self.view).next();
            return match expected_first {
                Some(e) if e != next => Err(Error::IndexMismatch { expected: e, next }),
                _ => Ok(next..next),
            };
        }

        let slot = Arc::new(Slot::default());
        let pending = Pending {
            slot: slot.clone(),
            expected_first,
            count: records.len() as u64,
            bytes,
        };
        let lead = {
            let mut q = lock(&self.queue);
            q.pending.push(pending);
            !std::mem::replace(&mut q.leader, true)
        };
        if lead {
            self.lead();
        }
        loop {
            match slot.wait() {
                Wake::Done(result) => return result,
                Wake::Lead => self.lead(),
            }
        }
    }

    /// Commits everything queued by now as one batch (later arrivals queue
    /// for the next), hands the lead to the oldest appender that queued
    /// meanwhile — so the next fdatasync starts at once — and only then
    /// wakes the appenders of this batch, each through its own slot.
    fn lead(&self) {
        let mut w = lock(&self.writer);
        let batch = std::mem::take(&mut lock(&self.queue).pending);
        let results = self.commit(&mut w, batch);
        drop(w);
        {
            let mut q = lock(&self.queue);
            match q.pending.first() {
                Some(next) => next.slot.wake(Wake::Lead),
                None => q.leader = false,
            }
        }
        for (slot, result) in results {
            slot.wake(Wake::Done(result));
        }
    }

    /// Writes one batch: assigns indexes, chains hashes, one write, one
    /// fdatasync, then publishes the records to readers.
    fn commit(&self, w: &mut Writer, batch: Vec<Pending>) -> Vec<(Arc<Slot>, Result<Range<u64>>)> {
        let mut results = Vec::with_capacity(batch.len());
        if let Err(e) = self.check_poison() {
            let cause = match e {
                Error::Poisoned { cause } => cause,
                other => Arc::from(other.to_string()),
            };
            return batch
                .into_iter()
                .map(|p| {
                    (
                        p.slot.clone(),
                        Err(Error::Poisoned {
                            cause: cause.clone(),
                        }),
                    )
                })
                .collect();
        }
        self.sweep_retired(w);

        // Decide which pendings go in, so the size (and a roll) is known
        // before bytes are placed.
        let mut next = read(&self.view).next();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut batch_bytes = 0u64;
        for p in batch {
            match p.expected_first {
                Some(e) if e != next => {
                    results.push((
                        p.slot.clone(),
                        Err(Error::IndexMismatch { expected: e, next }),
                    ));
                }
                _ => {
                    next += p.count;
                    batch_bytes += p.bytes.len() as u64;
                    accepted.push(p);
                }
            }
        }
        if accepted.is_empty() {
            return results;
        }

        let outcome = self.write_batch(w, &accepted, batch_bytes);
        match outcome {
            Ok(first) => {
                let mut at = first;
                for p in &accepted {
                    results.push((p.slot.clone(), Ok(at..at + p.count)));
                    at += p.count;
                }
            }
            Err(e) => {
                let cause: Arc<str> = Arc::from(self.poisoned(e).to_string());
                for p in &accepted {
                    results.push((
                        p.slot.clone(),
                        Err(Error::Poisoned {
                            cause: cause.clone(),
                        }),
                    ));
                }
            }
        }
        results
    }

    /// Places, writes and syncs the accepted pendings; returns the first
    /// index assigned.
    fn write_batch(&self, w: &mut Writer, accepted: &[Pending], batch_bytes: u64) -> Result<u64> {
        {
            let v = read(&self.view);
            let full = v.active.end + batch_bytes > self.opts.segment_bytes;
            let nonempty = !v.active.positions.is_empty();
            drop(v);
            if full && nonempty {
                self.roll(w)?;
            }
        }
        let (first, mut hash, file, path, base, prepared) = {
            let v = read(&self.view);
            (
                v.next(),
                v.head,
                v.active.file.clone(),
                v.active.path.clone(),
                v.active.end,
                v.active.prepared,
            )
        };

        let buf = &mut w.buf;
        buf.clear();
        buf.reserve(batch_bytes as usize);
        for p in accepted {
            buf.extend_from_slice(&p.bytes);
        }
        let mut positions = Vec::new();
        let mut max_ts = 0;
        let mut pos = 0usize;
        let mut index = first;
        while pos < buf.len() {
            // The record was encoded by `submit`; re-read its header to
            // patch in the fields assigned here.
            let header = format::decode_record_header(&buf[pos..], u32::MAX)
                .expect("invariant: submit encoded a valid record header");
            let end = pos + header.record_len();
            let payload = &buf[pos + RECORD_HEADER_LEN..end];
            hash = chain_hash(&hash, index, header.timestamp, payload);
            format::seal_record(&mut buf[pos..end], index, (index - first) as u32, &hash);
            positions.push(base + pos as u64);
            max_ts = max_ts.max(header.timestamp);
            pos = end;
            index += 1;
        }

        file.write_all_at(buf, base)
            .map_err(|e| Error::io("write", &path, e))?;
        let end = base + buf.len() as u64;
        let prepared = self.prepare(&*file, &path, end, prepared)?;
        if self.opts.sync == SyncMode::Fdatasync {
            // The acknowledgement below promises these bytes survive a crash.
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }

        let mut v = write(&self.view);
        v.active.positions.extend_from_slice(&positions);
        v.active.end = end;
        v.active.prepared = prepared;
        v.active.max_timestamp = v.active.max_timestamp.max(max_ts);
        v.head = hash;
        Ok(first)
    }

    /// Keeps the active segment `file`, whose records end at `end` and
    /// whose zeros reach `prepared`, at least half of
    /// [`Options::prepare_bytes`] ahead of its records: when it is not,
    /// writes zeros up to a full `prepare_bytes` past `end`. The caller's
    /// fdatasync makes them durable with its batch. Returns the new
    /// prepared length.
    ///
    /// Why: a batch written over blocks that are already allocated and
    /// written changes no file metadata, so its fdatasync flushes data
    /// alone; one that extends the file must also commit the journal
    /// (new blocks and a new length), which costs more and queues behind
    /// every other file's journal commit (docs/log-design.md).
    fn prepare(&self, file: &dyn LogFile, path: &Path, end: u64, prepared: u64) -> Result<u64> {
        let from = prepared.max(end);
        let target = prepared_end(&self.opts, end);
        if from >= end + self.opts.prepare_bytes / 2 || from >= target {
            return Ok(from);
        }
        let zeros = vec![0u8; (target - from) as usize];
        file.write_all_at(&zeros, from)
            .map_err(|e| Error::io("write", path, e))?;
        Ok(target)
    }

    /// Seals the active segment and starts a new one at the next index.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let (old, next, head) = {
            let v = read(&self.view);
            (v.active.clone(), v.next(), v.head)
        };
        let fs = &*self.opts.fs;
        let sealed = seal(fs, &self.dir, &self.opts, old, head).map_err(|e| self.poisoned(e))?;
        let active = create_segment(fs, &self.dir, &self.opts, next, head, false)
            .map_err(|e| self.poisoned(e))?;
        let mut v = write(&self.view);
        v.sealed.push(Arc::new(sealed));
        v.active = active;
        drop(v);
        self.apply_retention_locked(w)
    }

    /// Reads the record at `index`.
    pub fn read(&self, index: u64) -> Result<Entry> {
        let mut it = self.range(index, index.saturating_add(1))?;
        it.next().unwrap_or(Err(Error::BeyondEnd {
            index,
            next: self.state().next_index,
        }))
    }

    /// Reads the records `from..to` in order. The iterator reads lazily from
    /// a snapshot; it holds no lock.
    pub fn range(&self, from: u64, to: u64) -> Result<Entries> {
        self.check_poison()?;
        if from > to {
            return Err(Error::InvalidRange { from, to });
        }
        let v = read(&self.view);
        // Truncations count themselves under the view's write lock, so this
        // value matches the snapshot taken below.
        let epoch = self.truncations.load(Ordering::Acquire);
        if from < v.first_visible {
            return Err(Error::Purged {
                index: from,
                first: v.first_visible,
            });
        }
        if to > v.next() {
            return Err(Error::BeyondEnd {
                index: to - 1,
                next: v.next(),
            });
        }
        let max_payload = self.opts.max_record_bytes;
        let mut parts = VecDeque::new();
        if from < to {
            let start = v.sealed.partition_point(|s| s.last() < from);
            for seg in &v.sealed[start..] {
                if seg.first() >= to {
                    break;
                }
                let at = from.max(seg.first());
                let pos = seg.locate(at, max_payload)?;
                parts.push_back(Part::Sealed {
                    seg: seg.clone(),
                    pos,
                    last: seg.last().min(to - 1),
                });
            }
            let a = &v.active;
            if to > a.first() {
                let lo = (from.max(a.first()) - a.first()) as usize;
                let hi = (to - a.first()) as usize;
                let mut positions = a.positions[lo..hi].to_vec();
                positions.push(a.positions.get(hi).copied().unwrap_or(a.end));
                parts.push_back(Part::Active {
                    path: a.path.clone(),
                    file: a.file.clone(),
                    first: a.first() + lo as u64,
                    positions,
                });
            }
        }
        Ok(Entries {
            parts,
            next: from,
            to,
            max_payload,
            buf: Vec::new(),
            buf_at: 0,
            truncations: self.truncations.clone(),
            epoch,
        })
    }

    /// Reads one record of the active segment without an iterator: the
    /// common case of replication reading what was just written.
    pub fn read_recent(&self, index: u64) -> Result<Entry> {
        self.check_poison()?;
        let (file, path, span, epoch) = {
            let v = read(&self.view);
            if index < v.active.first() || index >= v.next() || index < v.first_visible {
                drop(v);
                return self.read(index);
            }
            (
                v.active.file.clone(),
                v.active.path.clone(),
                v.active.span(index),
                self.truncations.load(Ordering::Acquire),
            )
        };
        read_active(&*file, &path, span, index, self.opts.max_record_bytes)
            .map_err(|e| raced(e, &self.truncations, epoch, index))
    }

    /// Drops every record after `index` (an uncommitted suffix that lost a
    /// replication conflict). Durable before it returns. Records at or below
    /// the purge point cannot be dropped.
    pub fn truncate_after(&self, index: u64) -> Result<()> {
        self.truncate_from(index.saturating_add(1))
    }

    /// Drops the record at `index` and every record after it; with `index`
    /// equal to the first visible index, every visible record. Durable
    /// before it returns.
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        self.check_poison()?;
        let mut w = lock(&self.writer);
        self.check_poison()?;
        self.sweep_retired(&mut w);
        let (next, first_visible, active_first) = {
            let v = read(&self.view);
            (v.next(), v.first_visible, v.active.first())
        };
        let keep_to = index; // the new next index
        if keep_to >= next {
            return Ok(());
        }
        if keep_to < first_visible {
            return Err(Error::Purged {
                index: keep_to,
                first: first_visible,
            });
        }
        if keep_to >= active_first {
            self.truncate_active(keep_to).map_err(|e| self.poisoned(e))
        } else {
            self.truncate_sealed(&mut w, keep_to)
                .map_err(|e| self.poisoned(e))
        }
    }

    /// Cuts the active segment in place; it is never mapped, so this is safe
    /// for readers (who get an error for records that vanish under them).
    fn truncate_active(&self, keep_to: u64) -> Result<()> {
        let a = read(&self.view).active.clone();
        let k = (keep_to - a.first()) as usize;
        let new_end = a.positions[k];
        let head = if k == 0 {
            a.header.prev_hash
        } else {
            let mut h = [0u8; RECORD_HEADER_LEN];
            a.file
                .read_exact_at(&mut h, a.positions[k - 1])
                .map_err(|e| Error::io("pread", &a.path, e))?;
            format::decode_record_header(&h, self.opts.max_record_bytes)
                .map_err(|kind| Error::corruption(&a.path, a.positions[k - 1], kind))?
                .chain_hash
        };
        // Unpublish first so no reader is handed a position past the new end.
        {
            let mut v = write(&self.view);
            // Counted with the view change, before any byte is cut: a reader
            // whose snapshot predates it sees the count move (see `raced`).
            self.truncations.fetch_add(1, Ordering::Release);
            v.active.positions.truncate(k);
            v.active.end = new_end;
            v.active.prepared = new_end;
            v.head = head;
        }
        a.file
            .set_len(new_end)
            .map_err(|e| Error::io("truncate", &a.path, e))?;
        // A shorter length is metadata fdatasync must persist: after this a
        // crash cannot bring the dropped records back.
        a.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &a.path, e))
    }

    /// Drops the active segment and sealed segments after the cut, and
    /// replaces the segment holding the cut with a copy of its prefix, which
    /// becomes the active segment.
    fn truncate_sealed(&self, w: &mut Writer, keep_to: u64) -> Result<()> {
        let fs = &*self.opts.fs;
        let (active, mut sealed) = {
            let v = read(&self.view);
            (v.active.clone(), v.sealed.clone())
        };
        let s = sealed.partition_point(|seg| seg.last() < keep_to);
        let target = sealed[s].clone();
        let later: Vec<_> = sealed.drain(s..).skip(1).collect();

        // Newest first, each removal durable before the next, so a crash
        // anywhere leaves a contiguous log (some suffix not yet dropped,
        // which is the state before the truncation — still valid).
        {
            // Readers meanwhile see the log end at the target's last record,
            // which its (still valid) mapping serves.
            let mut v = write(&self.view);
            self.truncations.fetch_add(1, Ordering::Release);
            v.sealed.truncate(s + 1);
            v.active = ActiveView {
                header: SegmentHeader {
                    first_index: target.last() + 1,
                    prev_hash: target.index.last_hash,
                    carried: false,
                },
                positions: Vec::new(),
                end: 0,
                prepared: 0,
                ..active.clone()
            };
            v.head = target.index.last_hash;
        }
        fs.remove(&active.path)
            .map_err(|e| Error::io("remove", &active.path, e))?;
        fs.sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync dir", &self.dir, e))?;
        for seg in later.into_iter().rev() {
            self.retire(w, seg)?;
            fs.sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync dir", &self.dir, e))?;
        }

        // Copy the kept prefix to a temporary file and rename it over the
        // segment: the replacement is atomic, and the old file — which
        // readers may still have mapped — is never truncated; its inode lives
        // until the last mapping goes.
        let cut = if keep_to == target.first() {
            format::SEGMENT_HEADER_LEN
        } else {
            target.locate(keep_to, self.opts.max_record_bytes)?
        };
        let prefix = &target.map.bytes()[..cut];
        let name = segment_file_name(target.first());
        let file = replace_durably(fs, &self.dir, &name, prefix)?;
        remove_if_exists(fs, &self.dir.join(format::index_file_name(target.first())))?;

        let mut positions = Vec::new();
        let mut head = target.header.prev_hash;
        let mut max_timestamp = 0;
        let mut pos = format::SEGMENT_HEADER_LEN;
        while pos < cut {
            let h = format::decode_record_header(&prefix[pos..], self.opts.max_record_bytes)
                .map_err(|kind| Error::corruption(&target.path, pos as u64, kind))?;
            positions.push(pos as u64);
            head = h.chain_hash;
            max_timestamp = max_timestamp.max(h.timestamp);
            pos += h.record_len();
        }
        let new_active = ActiveView {
            path: target.path.clone(),
            header: target.header,
            file,
            positions,
            end: cut as u64,
            prepared: cut as u64,
            max_timestamp,
        };
        let mut v = write(&self.view);
        v.sealed.truncate(s);
        v.active = new_active;
        v.head = head;
        drop(v);
        // The old mapping of the target is released with this handle.
        drop(target);
        Ok(())
    }

    /// Moves the first visible index to `up_to + 1`. Logical: the records
    /// stay on disk until the retention policy deletes their segments.
    ///
    /// `up_to` may lie at or beyond the end. The log then continues at
    /// `up_to + 1` in a new segment whose chain starts afresh (its previous
    /// hash is the genesis hash): the records in between were never here. A
    /// replica that knows the chain hash of record `up_to` — carried in the
    /// snapshot that took it past its log — uses [`Log::purge_with_hash`]
    /// instead, so that its chain stays the one its peers have.
    pub fn purge(&self, up_to: u64) -> Result<()> {
        self.purge_inner(up_to, None)
    }

    /// Like [`Log::purge`], but when `up_to` lies at or beyond the end the
    /// log continues from `hash_at_up_to`, the chain hash of record `up_to`
    /// in the history this log replicates: the next record chains on it
    /// exactly as on the replicas that hold the records in between, so
    /// every replica has the same chain hash at the same index. The hash is
    /// durable in the metadata before the purge point moves and in the new
    /// segment's header after.
    ///
    /// When the log holds record `up_to`, its own chain already covers it
    /// and `hash_at_up_to` is not used.
    pub fn purge_with_hash(&self, up_to: u64, hash_at_up_to: ChainHash) -> Result<()> {
        self.purge_inner(up_to, Some(hash_at_up_to))
    }

    fn purge_inner(&self, up_to: u64, hash_at_up_to: Option<ChainHash>) -> Result<()> {
        self.check_poison()?;
        let mut w = lock(&self.writer);
        self.check_poison()?;
        self.sweep_retired(&mut w);
        let (first_visible, next) = {
            let v = read(&self.view);
            (v.first_visible, v.next())
        };
        if up_to < first_visible {
            return Ok(());
        }
        let beyond_end = up_to >= next;
        let meta = meta::Meta {
            first_visible: up_to + 1,
            // Only a jump needs the hash after a crash (to finish it); a
            // purge inside the log writes the version 1 file, as before.
            carried: hash_at_up_to.filter(|_| beyond_end),
        };
        // Durable before the view moves: a crash after this point leaves a
        // purge point that recovery honours (finishing a jump with the
        // carried hash), never readers served records a restart would hide.
        meta::write(&*self.opts.fs, &self.dir, meta).map_err(|e| self.poisoned(e))?;
        if beyond_end {
            // Readers wait for this rare step (a replica jumping past a
            // snapshot) rather than see a view half-way through it.
            let mut v = write(&self.view);
            let prev = hash_at_up_to.unwrap_or(format::GENESIS_HASH);
            jump(
                &*self.opts.fs,
                &self.dir,
                &self.opts,
                &mut v,
                up_to + 1,
                prev,
            )
            .map_err(|e| self.poisoned(e))?;
        }
        write(&self.view).first_visible = up_to + 1;
        self.apply_retention_locked(&mut w)
    }

    /// The chain hash of record `index`, for any index from the one just
    /// before the first visible index (the purge point) to the last record.
    ///
    /// At the purge point the answer comes from what stays on disk: a
    /// purged record is kept until retention deletes its whole segment, and
    /// then the next segment's header holds the hash of the record before
    /// it; after a purge beyond the end it is the hash carried in. So a
    /// replica can always tell the chain hash its visible records start
    /// from.
    pub fn chain_hash_at(&self, index: u64) -> Result<ChainHash> {
        self.check_poison()?;
        let (first_visible, next) = {
            let v = read(&self.view);
            (v.first_visible, v.next())
        };
        if index >= next {
            return Err(Error::BeyondEnd { index, next });
        }
        if index >= first_visible {
            return Ok(self.read(index)?.chain_hash);
        }
        if index + 1 < first_visible {
            return Err(Error::Purged {
                index,
                first: first_visible,
            });
        }
        // `index` is the purge point, below what `read` serves.
        let v = read(&self.view);
        let after = index + 1;
        if v.active.first() == after {
            return Ok(v.active.header.prev_hash);
        }
        if let Some(seg) = v.sealed.iter().find(|s| s.first() == after) {
            return Ok(seg.header.prev_hash);
        }
        if let Some(seg) = v
            .sealed
            .iter()
            .find(|s| s.first() <= index && index <= s.last())
        {
            if seg.last() == index {
                return Ok(seg.index.last_hash);
            }
            let pos = seg.locate(index, self.opts.max_record_bytes)?;
            let entry = crate::segment::decode_entry(
                &seg.map.bytes()[pos..],
                &seg.path,
                pos as u64,
                index,
                self.opts.max_record_bytes,
            )?;
            return Ok(entry.chain_hash);
        }
        if v.active.first() <= index {
            let span = v.active.span(index);
            let (file, path) = (v.active.file.clone(), v.active.path.clone());
            let epoch = self.truncations.load(Ordering::Acquire);
            drop(v);
            return read_active(&*file, &path, span, index, self.opts.max_record_bytes)
                .map(|e| e.chain_hash)
                .map_err(|e| raced(e, &self.truncations, epoch, index));
        }
        // Retention keeps every segment from the one holding the purge
        // point on, so this is a log whose files were changed under it.
        Err(Error::Purged {
            index,
            first: first_visible,
        })
    }

    /// Bounds retention: from now on it deletes only segments whose
    /// records all lie at or below `index` (besides below the purge
    /// point). Set to the last index a completed backup holds, so that
    /// no record leaves the disk before a backup has it. Not durable: the
    /// caller sets it again after a reopen.
    pub fn set_retention_floor(&self, index: u64) {
        self.retention_floor.store(index, Ordering::Release);
    }

    /// Deletes the purged segments the retention policy no longer keeps.
    pub fn apply_retention(&self) -> Result<()> {
        self.check_poison()?;
        let mut w = lock(&self.writer);
        self.check_poison()?;
        self.sweep_retired(&mut w);
        self.apply_retention_locked(&mut w)
    }

    fn apply_retention_locked(&self, w: &mut Writer) -> Result<()> {
        let policy = self.opts.retention;
        if policy.max_age_ms.is_none() && policy.max_total_bytes.is_none() {
            return Ok(());
        }
        let now = self.opts.clock.now_ms();
        let floor = self.retention_floor.load(Ordering::Acquire);
        loop {
            let (oldest, total) = {
                let v = read(&self.view);
                let total: u64 =
                    v.sealed.iter().map(|s| s.index.segment_len).sum::<u64>() + v.active.end;
                match v.sealed.first() {
                    Some(s) if s.last() < v.first_visible && s.last() <= floor => {
                        (s.clone(), total)
                    }
                    _ => return Ok(()),
                }
            };
            let too_old = policy
                .max_age_ms
                .is_some_and(|age| oldest.index.max_timestamp.saturating_add(age) <= now);
            let too_big = policy.max_total_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                return Ok(());
            }
            write(&self.view).sealed.remove(0);
            tracing::info!(segment = %oldest.path.display(), "retention deletes segment");
            let fs = &*self.opts.fs;
            let res = self.retire(w, oldest).and_then(|()| {
                // Oldest first and durable one at a time, so a crash never
                // leaves a gap between the segments that remain.
                fs.sync_dir(&self.dir)
                    .map_err(|e| Error::io("fsync dir", &self.dir, e))
            });
            res.map_err(|e| self.poisoned(e))?;
        }
    }

    /// Takes a sealed segment (already out of the view) off the disk. If a
    /// reader still maps it, it is only renamed aside — out of the log's
    /// namespace, so a restart ignores it — and unlinked by `sweep_retired`
    /// once the last mapping is gone: a mapped file is never deleted.
    fn retire(&self, w: &mut Writer, seg: Arc<Sealed>) -> Result<()> {
        let fs = &*self.opts.fs;
        remove_if_exists(fs, &self.dir.join(format::index_file_name(seg.first())))?;
        if Arc::strong_count(&seg) == 1 {
            fs.remove(&seg.path)
                .map_err(|e| Error::io("remove", &seg.path, e))
        } else {
            let aside = retired_path(&seg.path);
            fs.rename(&seg.path, &aside)
                .map_err(|e| Error::io("rename", &seg.path, e))?;
            w.retired.push((aside, seg));
            Ok(())
        }
    }

    /// Unlinks retired segments no reader maps any more. Failures are left
    /// for the next sweep or the next open, which removes leftovers.
    fn sweep_retired(&self, w: &mut Writer) {
        let fs = &*self.opts.fs;
        w.retired.retain(|(path, seg)| {
            if Arc::strong_count(seg) > 1 {
                return true;
            }
            if let Err(e) = fs.remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove retired segment");
            }
            false
        });
    }
}

/// Turns the active segment into a sealed one: cuts the zeros prepared
/// past its records, writes its sparse index and maps it. Its records are
/// already durable.
pub(crate) fn seal(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &Options,
    active: ActiveView,
    head: ChainHash,
) -> Result<Sealed> {
    if active.prepared > active.end {
        // A sealed segment is exactly its records, so that its cached index
        // (which records its length) stays valid and backups copy no zeros.
        // Made durable before the next segment exists; if a crash comes
        // first, the zeros are still read as prepared space.
        active
            .file
            .set_len(active.end)
            .map_err(|e| Error::io("truncate", &active.path, e))?;
        active
            .file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &active.path, e))?;
    }
    let mut sparse = SparseBuilder::new(opts.index_interval_bytes);
    for (k, pos) in active.positions.iter().enumerate() {
        sparse.push(active.first() + k as u64, *pos);
    }
    let index = SegmentIndex {
        first_index: active.first(),
        segment_len: active.end,
        last_index: active.next() - 1,
        max_timestamp: active.max_timestamp,
        last_hash: head,
        entries: sparse.finish(),
    };
    recovery::write_index(fs, dir, &index)?;
    let map = active
        .file
        .map()
        .map_err(|e| Error::io("mmap", &active.path, e))?;
    Ok(Sealed {
        path: active.path,
        header: active.header,
        index,
        map,
    })
}

/// Continues the log at `next`, beyond its end: the active segment is sealed
/// (or removed, if it holds no record) and a new one starts at `next`,
/// chaining on `prev_hash` (the hash carried in, or the genesis hash when
/// none was) and flagged as carried, which marks the gap before it as a jump
/// rather than lost segments. The caller has made the purge point `next`
/// (and the carried hash) durable first, so a crash in between is finished
/// by recovery.
pub(crate) fn jump(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &Options,
    view: &mut View,
    next: u64,
    prev_hash: ChainHash,
) -> Result<()> {
    let old = view.active.clone();
    if !old.positions.is_empty() {
        let sealed = seal(fs, dir, opts, old, view.head)?;
        view.sealed.push(Arc::new(sealed));
    } else {
        // An empty active segment is never mapped; its records-to-be now
        // belong to the new segment.
        fs.remove(&old.path)
            .map_err(|e| Error::io("remove", &old.path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("fsync dir", dir, e))?;
    }
    view.active = create_segment(fs, dir, opts, next, prev_hash, true)?;
    view.head = prev_hash;
    view.first_visible = next;
    Ok(())
}

/// Creates a segment file starting at `first` whose previous record has
/// chain hash `prev_hash` (`carried` when that hash came from outside the
/// log), durable (content and directory entry) before it returns, so no
/// record is ever acknowledged in a file a crash could lose.
pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &Options,
    first: u64,
    prev_hash: ChainHash,
    carried: bool,
) -> Result<ActiveView> {
    let path = dir.join(segment_file_name(first));
    let header = SegmentHeader {
        first_index: first,
        prev_hash,
        carried,
    };
    let file: Arc<dyn LogFile> = fs
        .create_new(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    // The header and the first prepared space share one fdatasync.
    let end = format::SEGMENT_HEADER_LEN as u64;
    let prepared = prepared_end(opts, end);
    let mut bytes = header.encode().to_vec();
    bytes.resize(prepared as usize, 0);
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync dir", dir, e))?;
    Ok(ActiveView {
        path,
        header,
        file,
        positions: Vec::new(),
        end,
        prepared,
        max_timestamp: 0,
    })
}

/// How far the active segment is prepared when its records end at `end`:
/// [`Options::prepare_bytes`] past them, but not past the size that seals
/// the segment.
fn prepared_end(opts: &Options, end: u64) -> u64 {
    (end + opts.prepare_bytes).min(opts.segment_bytes.max(end))
}

/// Where a file is written before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

/// Where a retired segment waits for its last reader.
fn retired_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".retired");
    PathBuf::from(p)
}

pub(crate) fn remove_if_exists(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// The bytes of a segment holding records `[first, next)` in `bytes` that
/// hold records from index `from` on, taking its records as of even size.
fn share_after(first: u64, next: u64, bytes: u64, from: u64) -> u64 {
    if from >= next {
        return 0;
    }
    if from <= first {
        return bytes;
    }
    // In u128: a large segment's bytes times its records can pass u64.
    (u128::from(bytes) * u128::from(next - from) / u128::from(next - first)) as u64
}

#[cfg(test)]
mod tests {
    use super::share_after;

    #[test]
    fn a_segment_counts_the_share_of_its_records_from_an_index_on() {
        assert_eq!(share_after(100, 200, 1_000, 0), 1_000);
        assert_eq!(share_after(100, 200, 1_000, 100), 1_000);
        assert_eq!(share_after(100, 200, 1_000, 150), 500);
        assert_eq!(share_after(100, 200, 1_000, 200), 0);
        assert_eq!(share_after(100, 200, 1_000, 501), 0);
    }

    #[test]
    fn an_empty_segment_has_nothing_from_any_index() {
        assert_eq!(share_after(7, 7, 64, 7), 0);
    }
}
