//! A redb storage backend that writes behind: redb's writes and fdatasyncs
//! are queued, in order, for a thread of the store's own, so a durable
//! commit no longer holds the partition's applies while its pages go to
//! disk.
//!
//! # Why
//!
//! redb keeps every page changed by a non-durable commit in memory and
//! writes them all at the next durable commit, one `pwrite` per page, then
//! fdatasyncs twice (pages, then the header that points at them). The
//! applies of the partition wait behind it: in bench-ws's soak at 5,000
//! msg/s each durable commit took 66–79 ms, and the messages caught behind
//! those pauses were about a third of all those over the latency goal
//! (docs/projection-store.md, "Writing behind").
//!
//! # What is kept
//!
//! redb's crash safety rests on one ordering: everything written before a
//! sync is on disk before anything written after it. The queue keeps that
//! order: the thread runs writes, syncs and resizes exactly in the order
//! redb asked for them, so the file on disk after a crash is what a
//! synchronous backend would have left had the crash come a little earlier
//! — redb opens it at its last commit that was fully synced, as always.
//! Writes between two syncs may reach the file in any order (the kernel's
//! writeback reorders them anyway); the thread sorts them by offset and
//! joins neighbours into one `pwrite`.
//!
//! What changes is *when* a durable commit is durable: when the thread
//! has caught up, a few tens of milliseconds after `commit` returns rather
//! than before. Nothing depends on the moment: the partition's log is
//! durable before anything is applied, a restart replays it from whatever
//! position the store reopens at, and the log is never purged past the
//! current snapshot, which is its own file. [`Flusher::drain`] waits for
//! the thread, for the callers that need the stronger promise (a clean
//! shutdown, an installed snapshot, an offline rebuild); closing the
//! database drains too.
//!
//! # Reads
//!
//! A read never waits for the thread's I/O in the cases redb makes: it
//! reads the file and lays the newest queued write of each page over it,
//! under the queue's lock, so the thread cannot finish a write (and drop
//! it from the queue) in between. It waits only where the queue cannot
//! say what the file will hold: bytes beyond a queued shrink or a growth
//! not yet made, or a page with two queued writes that each cover part of
//! it. Waiting there is correct but slow, and the read may be on a thread
//! others need: a read that waited behind a durable commit's fdatasync
//! would stall whoever made it.
//!
//! # Buffers
//!
//! A queued write is a copy of what redb asked to write. A durable commit
//! writes tens of MiB at once, and copies into freshly allocated memory
//! cost the apply thread more than the copying: the allocator, having given
//! the last commit's buffers back to the system, maps and zeroes every page
//! again (page faults were nearly all of a durable commit's time on the
//! apply thread; docs/benchmarks-ws.md, "The durable commit's buffers").
//! So written buffers go back to a pool, [`POOL_BYTES`] at most across the
//! node's stores, and the next writes copy into them.
//!
//! # Pacing
//!
//! A durable commit's pages would otherwise reach the disk in one burst at
//! its fdatasync, and every partition log's fdatasync on the same disk
//! would wait behind it. So after each MiB it writes ([`PACE_BYTES`]) the
//! thread hands it to the disk and keeps to the node's budget for
//! background writes ([`missive_raft::pace`], shared with snapshot
//! builds): a durable commit of 100 MiB reaches the disk over seconds,
//! not in one. The queue is sized for that: it holds a durable commit of a
//! busy partition whole.
//!
//! The thread stops pacing, and writes at memory speed, whenever somebody
//! waits on it: past half the queue's bound (redb's next write would soon
//! wait for room, and the partition's applies with it), a read that needs
//! the queue settled, a drain, or the close.
//!
//! # Bounds and failures
//!
//! At most [`MAX_QUEUED_BYTES`] of writes wait in the queue; redb's next
//! write waits for room. The first I/O error of the thread is kept, every
//! queued operation is dropped, and every later call fails with it: after a
//! failed fdatasync the file's contents are unknown, so the store stops
//! (its partition stops applying) rather than guess; a restart reopens it
//! at its last durable commit.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The most bytes of queued writes. A durable commit of a busy partition
/// writes 60–120 MiB (bench-ws at 5,000 msg/s, 10,000 users, one every
/// 200,000 entries), and the queue must hold it below half this bound to
/// pace it (see the module docs). The buffers beyond the pool's are given
/// back once written.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// Queued bytes past which the thread is woken without waiting for a sync,
/// so that writes redb makes outside a durable commit (evicting its write
/// buffer) do not sit in memory until the next one.
const WAKE_AT_BYTES: usize = 8 << 20;

/// The unit reads and writes are matched by: redb's smallest page.
const PAGE: u64 = 4096;

/// The most bytes of written buffers kept for reuse, all stores together:
/// one busy partition's durable commit (their turns are staggered).
pub const POOL_BYTES: usize = 48 << 20;

/// Buffers are pooled by size: a page, and redb's larger pages up to
/// `PAGE << (POOLED_ORDERS - 1)`. Other sizes (the header) are allocated
/// each time.
const POOLED_ORDERS: usize = 5;

/// Written buffers kept for the next writes (see the module docs).
static POOL: Pool = Pool::new();

#[derive(Debug)]
struct Pool {
    free: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    by_order: [Vec<Vec<u8>>; POOLED_ORDERS],
    bytes: usize,
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            free: Mutex::new(PoolState {
                by_order: [const { Vec::new() }; POOLED_ORDERS],
                bytes: 0,
            }),
        }
    }

    /// The pool's size class of a buffer of `len` bytes, if pooled.
    fn order(len: usize) -> Option<usize> {
        let pages = len / PAGE as usize;
        (len.is_multiple_of(PAGE as usize) && pages.is_power_of_two())
            .then(|| pages.trailing_zeros() as usize)
            .filter(|o| *o < POOLED_ORDERS)
    }

    /// A buffer holding a copy of `data`.
    fn copy(&self, data: &[u8]) -> Buf {
        let reused = Pool::order(data.len()).and_then(|o| {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let buf = free.by_order[o].pop()?;
            free.bytes -= buf.len();
            Some(buf)
        });
        Buf(match reused {
            Some(mut buf) => {
                buf.copy_from_slice(data);
                buf
            }
            None => data.to_vec(),
        })
    }

    /// Takes `buf` back, unless the pool is full or does not keep its size.
    fn put(&self, buf: Vec<u8>) {
        let Some(o) = Pool::order(buf.len()) else {
            return;
        };
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.bytes + buf.len() <= POOL_BYTES {
            free.bytes += buf.len();
            free.by_order[o].push(buf);
        }
    }
}

/// A queued write's bytes; back to the pool when the last reference goes.
#[derive(Debug)]
struct Buf(Vec<u8>);

impl std::ops::Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        POOL.put(std::mem::take(&mut self.0));
    }
}

/// The most bytes joined into one `pwrite`.
const JOIN_BYTES: usize = 1 << 20;

/// Bytes written between two waits for the disk to take them (see
/// [`hand_to_disk`]).
const PACE_BYTES: usize = 1 << 20;

/// One queued operation, in redb's order.
#[derive(Debug)]
enum Op {
    Write { offset: u64, data: Arc<Buf> },
    Sync,
    SetLen(u64),
}

/// The newest queued write touching a page.
#[derive(Debug)]
struct Newest {
    seq: u64,
    offset: u64,
    data: Arc<Buf>,
    /// An older queued write holds bytes of the page this one does not
    /// cover: the queue alone cannot say what the page will hold.
    mixed: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Queued operations with their sequence numbers, oldest first; the
    /// thread removes them once done.
    ops: VecDeque<(u64, Op)>,
    /// The sequence number of the next operation queued.
    next_seq: u64,
    /// Every operation numbered below this is done.
    done: u64,
    /// Bytes of the queued writes.
    bytes: usize,
    /// Per page number, the newest queued write touching it.
    pages: HashMap<u64, Newest, BuildHasherDefault<PageHasher>>,
    /// Queued resizes: sequence number and length, oldest first.
    resizes: VecDeque<(u64, u64)>,
    /// The file's length now, every resize done so far included.
    file_len: u64,
    /// The length of the storage as redb sees it.
    len: u64,
    /// The thread's first I/O error.
    failed: Option<(io::ErrorKind, String)>,
    /// Callers waiting on the thread (reads, drains): while there are any,
    /// it takes queued writes without waiting for a sync, and does not
    /// pace them.
    waiters: usize,
    /// Set once the database closes: the thread ends when the queue is empty.
    stop: bool,
}

impl State {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None if self.stop => Err(io::Error::other("the projection store is closed")),
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("an earlier write-behind of the projection store failed: {message}"),
            )),
        }
    }

    /// The newest queued operation a read of `offset..end` must wait for,
    /// if any (see the module docs).
    fn unsettled(&self, offset: u64, end: u64) -> Option<u64> {
        let mut wait = None;
        let mut settled = self.file_len;
        for &(seq, len) in &self.resizes {
            settled = settled.min(len);
            if end > settled {
                wait = Some(seq);
            }
        }
        for page in offset / PAGE..end.div_ceil(PAGE) {
            if let Some(n) = self.pages.get(&page)
                && n.mixed
            {
                wait = wait.max(Some(n.seq));
            }
        }
        wait
    }

    /// Whether the thread must write at memory speed: somebody waits on
    /// it, or soon will (see the module docs).
    fn hurried(&self, max_queued: usize) -> bool {
        self.waiters > 0 || self.bytes > max_queued / 2 || self.stop || self.failed.is_some()
    }

    fn push(&mut self, op: Op) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ops.push_back((seq, op));
        seq
    }
}

/// Hashes a page number with one multiplication: the queue's map takes an
/// insert for every page a durable commit writes (tens of thousands at
/// once, on the apply thread), and its keys come from redb, not from
/// anyone who could choose them to collide.
#[derive(Debug, Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, page: u64) {
        let h = page.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The table takes its buckets from the low bits and its tags from
        // the high ones: fold the well-mixed high half into the low.
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What the backend and its thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a barrier or enough bytes were queued, or stop.
    work: Condvar,
    /// Wakes waiters: the thread finished operations or failed.
    progress: Condvar,
    /// The thread's handle on the file.
    file: File,
    /// The most bytes of queued writes ([`MAX_QUEUED_BYTES`]).
    max_queued: usize,
    /// Tests: system calls the thread may still make before it acts as if
    /// the machine stopped there.
    #[cfg(test)]
    calls_left: std::sync::atomic::AtomicU64,
    /// Tests: held to keep the thread from its next system call.
    #[cfg(test)]
    gate: Mutex<()>,
}

impl Shared {
    /// The thread's next system call may go ahead.
    fn call(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering;
            drop(self.gate.lock().unwrap_or_else(PoisonError::into_inner));
            let left = self.calls_left.load(Ordering::Relaxed);
            if left == 0 {
                return Err(io::Error::other("stopped as if crashed"));
            }
            self.calls_left.store(left - 1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// After `bytes` written: hands them to the disk and keeps to the
    /// node's budget for background writes, unless the thread is hurried
    /// (see the module docs), which also cuts a wait short.
    fn pace(&self, bytes: usize) -> io::Result<()> {
        if self.lock().hurried(self.max_queued) {
            return Ok(());
        }
        missive_raft::pace::hand_to_disk(&self.file)?;
        let wait = missive_raft::pace::BACKGROUND.reserve(bytes);
        if !wait.is_zero() {
            let state = self.lock();
            // Whoever hurries the thread notifies `work`.
            let _ = self
                .work
                .wait_timeout_while(state, wait, |s| !s.hurried(self.max_queued))
                .unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.progress
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a sync and waits until it and everything before it is done.
    fn drain(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.check()?;
        let seq = state.push(Op::Sync);
        state.waiters += 1;
        self.work.notify_one();
        while state.done <= seq && state.failed.is_none() {
            state = self.wait(state);
        }
        state.waiters -= 1;
        state.check()
    }
}

/// Waits for a store's queued writes: see the module docs.
#[derive(Debug, Clone)]
pub struct Flusher(Arc<Shared>);

impl Flusher {
    /// Makes everything redb has written so far durable, and returns once
    /// it is, or with the thread's error.
    pub fn drain(&self) -> io::Result<()> {
        self.0.drain()
    }
}

/// The backend (see the module docs).
#[derive(Debug)]
pub struct WriteBehind {
    shared: Arc<Shared>,
    /// redb's own backend on the same file, for its locks.
    locks: FileBackend,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriteBehind {
    /// Opens (creating if needed) the file at `path` and starts its thread.
    pub fn open(path: &Path) -> io::Result<(WriteBehind, Flusher)> {
        WriteBehind::open_bounded(path, MAX_QUEUED_BYTES)
    }

    /// [`WriteBehind::open`] with at most `max_queued` bytes queued.
    fn open_bounded(path: &Path, max_queued: usize) -> io::Result<(WriteBehind, Flusher)> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let io = file.try_clone()?;
        WriteBehind::start(file, io, max_queued)
    }

    /// The backend over `file`, whose thread does its I/O through `io`
    /// (the same file).
    fn start(file: File, io: File, max_queued: usize) -> io::Result<(WriteBehind, Flusher)> {
        let len = file.metadata()?.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                len,
                file_len: len,
                ..State::default()
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            file: io,
            max_queued,
            #[cfg(test)]
            calls_left: u64::MAX.into(),
            #[cfg(test)]
            gate: Mutex::new(()),
        });
        let locks = FileBackend::new(file).map_err(io::Error::other)?;
        let thread = std::thread::Builder::new()
            .name("missive-store-io".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared)
            })?;
        let flusher = Flusher(Arc::clone(&shared));
        Ok((
            WriteBehind {
                shared,
                locks,
                thread: Mutex::new(Some(thread)),
            },
            flusher,
        ))
    }

    /// Drains the queue and ends the thread.
    fn finish(&self) -> io::Result<()> {
        let drained = self.shared.drain();
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        drained
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // redb closes the backend before dropping it; this is for a backend
        // that never reached redb. The thread writes what is queued, then
        // ends.
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
    }
}

impl StorageBackend for WriteBehind {
    fn len(&self) -> Result<u64, io::Error> {
        let state = self.shared.lock();
        state.check()?;
        Ok(state.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let end = offset + out.len() as u64;
        let mut state = self.shared.lock();
        loop {
            state.check()?;
            let Some(seq) = state.unsettled(offset, end) else {
                break;
            };
            state.waiters += 1;
            while state.done <= seq && state.failed.is_none() {
                self.shared.work.notify_one();
                state = self.shared.wait(state);
            }
            state.waiters -= 1;
        }
        // Under the lock: a queued write stays in `pages` until the thread
        // has finished it, so every byte is either final in the file or
        // laid over from the queue.
        self.shared.file.read_exact_at(out, offset)?;
        for page in offset / PAGE..end.div_ceil(PAGE) {
            if let Some(n) = state.pages.get(&page) {
                let from = n.offset.max(offset).max(page * PAGE);
                let to = (n.offset + n.data.len() as u64)
                    .min(end)
                    .min((page + 1) * PAGE);
                if from < to {
                    out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                        &n.data[(from - n.offset) as usize..(to - n.offset) as usize],
                    );
                }
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.shared.lock();
        state.check()?;
        let seq = state.push(Op::SetLen(len));
        state.resizes.push_back((seq, len));
        state.len = len;
        self.shared.work.notify_one();
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.shared.lock();
        state.check()?;
        state.push(Op::Sync);
        self.shared.work.notify_one();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let data = Arc::new(POOL.copy(data));
        let mut state = self.shared.lock();
        state.check()?;
        while state.bytes > 0 && state.bytes + data.len() > self.shared.max_queued {
            self.shared.work.notify_one();
            state = self.shared.wait(state);
            state.check()?;
        }
        let seq = state.next_seq;
        let end = offset + data.len() as u64;
        for page in offset / PAGE..end.div_ceil(PAGE) {
            let whole = offset <= page * PAGE && (page + 1) * PAGE <= end;
            let mixed = !whole && state.pages.contains_key(&page);
            state.pages.insert(
                page,
                Newest {
                    seq,
                    offset,
                    data: Arc::clone(&data),
                    mixed,
                },
            );
        }
        let before = state.bytes;
        state.bytes += data.len();
        state.push(Op::Write { offset, data });
        // Woken only as the queue crosses a mark (the thread looks at the
        // queue again before it waits): a durable commit queues tens of
        // thousands of pages, and a wake-up for each would have the thread
        // take the lock against this one as often.
        let half = self.shared.max_queued / 2;
        if (before < WAKE_AT_BYTES && state.bytes >= WAKE_AT_BYTES)
            || (before <= half && state.bytes > half)
        {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        let drained = self.finish();
        let released = self.locks.close();
        drained.and(released)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.locks.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.query_lock_range(start, end)
    }
}

/// What the thread takes from the queue in one go.
enum Batch {
    /// Consecutive writes: their sequence numbers and what they write.
    Writes(Vec<(u64, u64, Arc<Buf>)>),
    Sync(u64),
    SetLen(u64, u64),
}

/// The thread: takes operations in order, does them, reports progress.
fn run(shared: &Shared) {
    let mut scratch = Vec::with_capacity(JOIN_BYTES);
    // When the operations since the last sync began.
    let mut since_sync: Option<std::time::Instant> = None;
    loop {
        let batch = {
            let mut state = shared.lock();
            loop {
                if state.failed.is_some() {
                    return;
                }
                let barrier = state
                    .ops
                    .iter()
                    .any(|(_, op)| !matches!(op, Op::Write { .. }));
                let due =
                    barrier || state.waiters > 0 || state.bytes >= WAKE_AT_BYTES || state.stop;
                if due && !state.ops.is_empty() {
                    break;
                }
                if state.stop {
                    return;
                }
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            take(&state)
        };
        let started = *since_sync.get_or_insert_with(std::time::Instant::now);
        let (last, result) = match &batch {
            Batch::Writes(writes) => (
                writes.last().map_or(0, |w| w.0),
                write_all(shared, writes, &mut scratch),
            ),
            Batch::Sync(seq) => (*seq, shared.call().and_then(|()| shared.file.sync_data())),
            Batch::SetLen(seq, len) => {
                (*seq, shared.call().and_then(|()| shared.file.set_len(*len)))
            }
        };
        if matches!(batch, Batch::Sync(_)) {
            crate::metrics::STORE_SYNC_SECONDS.observe(started.elapsed().as_secs_f64());
            since_sync = None;
        }
        let mut state = shared.lock();
        match result {
            Ok(()) => retire(&mut state, last),
            Err(e) => {
                tracing::error!(error = %e, "writing the projection store behind failed; the store stops");
                state.failed = Some((e.kind(), e.to_string()));
                state.ops.clear();
                state.pages.clear();
                state.bytes = 0;
                state.resizes.clear();
            }
        }
        shared.progress.notify_all();
    }
}

/// The operations at the queue's front: every consecutive write (they stay
/// queued, and readable, until written), or the one barrier.
fn take(state: &State) -> Batch {
    let mut writes = Vec::new();
    for (seq, op) in &state.ops {
        match op {
            Op::Write { offset, data } => writes.push((*seq, *offset, Arc::clone(data))),
            Op::Sync if writes.is_empty() => return Batch::Sync(*seq),
            Op::SetLen(len) if writes.is_empty() => return Batch::SetLen(*seq, *len),
            Op::Sync | Op::SetLen(_) => break,
        }
    }
    Batch::Writes(writes)
}

/// Removes every operation up to `last` from the queue.
fn retire(state: &mut State, last: u64) {
    while let Some((seq, _)) = state.ops.front()
        && *seq <= last
    {
        let (seq, op) = state.ops.pop_front().expect("front exists");
        match op {
            Op::Write { offset, data } => {
                state.bytes -= data.len();
                let end = offset + data.len() as u64;
                for page in offset / PAGE..end.div_ceil(PAGE) {
                    if state.pages.get(&page).is_some_and(|n| n.seq == seq) {
                        state.pages.remove(&page);
                    }
                }
            }
            Op::SetLen(len) => {
                state.resizes.pop_front();
                state.file_len = len;
            }
            Op::Sync => {}
        }
        state.done = seq + 1;
    }
}

/// Writes `writes` (in sequence order): sorted by offset with neighbours
/// joined, unless two of them overlap, in which case in order, one by one.
fn write_all(
    shared: &Shared,
    writes: &[(u64, u64, Arc<Buf>)],
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    let file = &shared.file;
    let mut sorted: Vec<&(u64, u64, Arc<Buf>)> = writes.iter().collect();
    sorted.sort_by_key(|w| (w.1, w.0));
    let overlap = sorted
        .windows(2)
        .any(|w| w[0].1 + w[0].2.len() as u64 > w[1].1);
    if overlap {
        for (_, offset, data) in writes {
            shared.call()?;
            file.write_all_at(data, *offset)?;
        }
        return Ok(());
    }
    let mut unpaced = 0;
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].1;
        let mut end = start + sorted[i].2.len() as u64;
        let mut j = i + 1;
        while j < sorted.len()
            && sorted[j].1 == end
            && (end - start) as usize + sorted[j].2.len() <= JOIN_BYTES
        {
            end += sorted[j].2.len() as u64;
            j += 1;
        }
        shared.call()?;
        if j == i + 1 {
            file.write_all_at(&sorted[i].2, start)?;
        } else {
            scratch.clear();
            for w in &sorted[i..j] {
                scratch.extend_from_slice(&w.2);
            }
            file.write_all_at(scratch, start)?;
        }
        unpaced += (end - start) as usize;
        if unpaced >= PACE_BYTES {
            shared.pace(unpaced)?;
            unpaced = 0;
        }
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &tempfile::TempDir) -> (WriteBehind, Flusher) {
        WriteBehind::open(&dir.path().join("s.redb")).unwrap()
    }

    fn on_disk(dir: &tempfile::TempDir) -> Vec<u8> {
        std::fs::read(dir.path().join("s.redb")).unwrap()
    }

    #[test]
    fn written_buffers_are_reused_by_size_up_to_the_pool_s_bound() {
        assert_eq!(Pool::order(4096), Some(0));
        assert_eq!(Pool::order(8192), Some(1));
        assert_eq!(Pool::order(65536), Some(4));
        for unpooled in [0, 512, 4097, 12288, 131072] {
            assert_eq!(Pool::order(unpooled), None, "{unpooled}");
        }

        let pool = Pool::new();
        let page = vec![7u8; 4096];
        let at = page.as_ptr();
        pool.put(page);
        let copy = pool.copy(&[1u8; 4096]);
        assert_eq!(copy.as_ptr(), at, "the pooled buffer is reused");
        assert!(copy.iter().all(|b| *b == 1), "and holds the new bytes");
        assert_eq!(
            pool.copy(&[2u8; 8192]).len(),
            8192,
            "other sizes are allocated"
        );

        let pages = POOL_BYTES / 4096;
        for _ in 0..pages + 10 {
            pool.put(vec![0u8; 4096]);
        }
        let free = pool.free.lock().unwrap();
        assert_eq!(
            free.bytes, POOL_BYTES,
            "the pool keeps no more than its bound"
        );
        assert_eq!(free.by_order[0].len(), pages);
    }

    #[test]
    fn reads_see_queued_writes_before_and_after_they_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (b, flusher) = backend(&dir);
        b.set_len(4 * PAGE).unwrap();
        b.write(0, &[1; 4096]).unwrap();
        b.write(4096, &[2; 8192]).unwrap();
        b.write(4096, &[3; 4096]).unwrap();
        let mut page = vec![0; 4096];
        b.read(4096, &mut page).unwrap();
        assert_eq!(page, vec![3; 4096], "the newest write of a page wins");
        let mut two = vec![0; 8192];
        b.read(4096, &mut two).unwrap();
        assert_eq!(&two[..4096], &[3; 4096]);
        assert_eq!(
            &two[4096..],
            &[2; 4096],
            "a read spanning two writes waits for both"
        );
        flusher.drain().unwrap();
        let disk = on_disk(&dir);
        assert_eq!(disk.len() as u64, 4 * PAGE);
        assert_eq!(&disk[..4096], &[1; 4096]);
        assert_eq!(&disk[4096..8192], &[3; 4096]);
        assert_eq!(&disk[8192..12288], &[2; 4096]);
        assert_eq!(&disk[12288..], &[0; 4096], "a resize fills with zeros");
        b.read(8192, &mut page).unwrap();
        assert_eq!(page, vec![2; 4096]);
        b.close().unwrap();
    }

    #[test]
    fn reads_do_not_wait_for_the_thread_while_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (b, flusher) = backend(&dir);
        b.set_len(3 * PAGE).unwrap();
        b.write(0, &[1; 8192]).unwrap();
        b.write(2 * PAGE, &[2; 4096]).unwrap();
        flusher.drain().unwrap();
        // The thread takes the next writes and stops before writing them.
        let shared = Arc::clone(&b.shared);
        let gate = shared.gate.lock().unwrap();
        b.write(PAGE, &[3; 4096]).unwrap();
        b.write(2 * PAGE, &[5; 4096]).unwrap();
        b.sync_data().unwrap();
        let b = Arc::new(b);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let b = Arc::clone(&b);
            move || {
                let mut all = vec![0; 3 * PAGE as usize];
                let read = b.read(0, &mut all).map(|()| all);
                let _ = tx.send(read);
            }
        });
        let all = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the read waited for the thread")
            .unwrap();
        assert_eq!(&all[..4096], &[1; 4096], "from the file");
        assert_eq!(&all[4096..8192], &[3; 4096], "from the queue");
        assert_eq!(&all[8192..], &[5; 4096], "from the queue, over the file");
        // A second queued write covering part of page 1: the queue cannot
        // say alone what the page will hold, and that read waits.
        b.write(PAGE, &[4; 512]).unwrap();
        drop(gate);
        let mut page = vec![0; 4096];
        b.read(PAGE, &mut page).unwrap();
        assert_eq!(&page[..512], &[4; 512]);
        assert_eq!(&page[512..], &[3; 3584]);
        flusher.drain().unwrap();
    }

    #[test]
    fn operations_reach_the_file_in_order_and_close_writes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = backend(&dir);
        b.set_len(2 * PAGE).unwrap();
        b.write(PAGE, &[7; 4096]).unwrap();
        b.sync_data().unwrap();
        b.set_len(PAGE).unwrap();
        assert_eq!(b.len().unwrap(), PAGE, "the length redb set, at once");
        b.set_len(3 * PAGE).unwrap();
        b.write(0, &[9; 4096]).unwrap();
        b.close().unwrap();
        let disk = on_disk(&dir);
        assert_eq!(disk.len() as u64, 3 * PAGE);
        assert_eq!(&disk[..4096], &[9; 4096]);
        assert_eq!(
            &disk[4096..],
            &[0; 8192],
            "the shrink came after the write it cut"
        );
    }

    #[test]
    fn a_failed_write_stops_the_backend_and_every_later_call_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(&path, []).unwrap();
        let (b, flusher) = WriteBehind::open(&path).unwrap();
        // The thread's handle is one that cannot write.
        let (broken, _) = WriteBehind::start(
            File::open(&path).unwrap(),
            File::open(&path).unwrap(),
            MAX_QUEUED_BYTES,
        )
        .unwrap();
        broken.write(0, &[1; 4096]).unwrap();
        broken.sync_data().unwrap();
        let err = Flusher(Arc::clone(&broken.shared)).drain().unwrap_err();
        assert!(err.to_string().contains("write-behind"), "{err}");
        assert!(broken.write(0, &[2; 4096]).is_err());
        assert!(broken.sync_data().is_err());
        assert!(broken.len().is_err());
        assert!(broken.close().is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            Vec::<u8>::new(),
            "nothing written"
        );
        b.close().unwrap();
        flusher.drain().unwrap_err();
    }

    #[test]
    fn the_thread_paces_only_while_nobody_waits_on_it() {
        let max = 64 << 20;
        let mut state = State::default();
        assert!(!state.hurried(max), "an idle queue is paced");
        state.bytes = max / 2;
        assert!(!state.hurried(max), "up to half the bound, paced");
        state.bytes = max / 2 + 1;
        assert!(
            state.hurried(max),
            "past half, redb's writes would soon wait"
        );
        state.bytes = 0;
        state.waiters = 1;
        assert!(state.hurried(max), "a read or a drain waits");
        state.waiters = 0;
        state.stop = true;
        assert!(state.hurried(max), "closing");
    }

    #[test]
    fn the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let bound = 16 << 20;
        let (b, flusher) = WriteBehind::open_bounded(&dir.path().join("s.redb"), bound).unwrap();
        let page = vec![5; 1 << 20];
        let total = bound * 3;
        b.set_len(total as u64).unwrap();
        for i in 0..total / page.len() {
            b.write((i * page.len()) as u64, &page).unwrap();
            assert!(b.shared.lock().bytes <= bound);
        }
        flusher.drain().unwrap();
        assert_eq!(b.shared.lock().bytes, 0);
        assert_eq!(on_disk(&dir).len(), total);
        b.close().unwrap();
    }

    #[test]
    fn redb_reopens_what_it_wrote_through_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
        {
            let (b, _) = WriteBehind::open(&path).unwrap();
            let db = redb::Builder::new().create_with_backend(b).unwrap();
            for round in 0..20u64 {
                let mut txn = db.begin_write().unwrap();
                if round % 5 != 4 {
                    txn.set_durability(redb::Durability::None).unwrap();
                }
                {
                    let mut table = txn.open_table(t).unwrap();
                    for k in 0..500 {
                        table.insert(round * 500 + k, k).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }
        let (b, _) = WriteBehind::open(&path).unwrap();
        let db = redb::Builder::new().create_with_backend(b).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let table = txn.open_table(t).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&table).unwrap(), 10_000);
        assert_eq!(
            redb::ReadableTable::get(&table, 9_999)
                .unwrap()
                .unwrap()
                .value(),
            499
        );
    }

    /// redb over the backend, the machine stopped after every possible
    /// number of the thread's system calls: the file always reopens at one
    /// of the durable commits, whole.
    #[test]
    fn a_crash_at_any_system_call_leaves_a_durable_commit_whole() {
        use std::sync::atomic::Ordering;
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
        const ROUNDS: u64 = 12;
        const ROWS: u64 = 300;
        // Rounds 3, 7 and 11 are durable; the others are not.
        let durable = |round: u64| round % 4 == 3;
        for calls in 0.. {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.redb");
            let (b, flusher) = WriteBehind::open(&path).unwrap();
            let shared = Arc::clone(&b.shared);
            // A database whose creation never reached the disk is not one
            // redb can open, with any backend: the crash comes after.
            let db = redb::Builder::new().create_with_backend(b).unwrap();
            flusher.drain().unwrap();
            shared.calls_left.store(calls, Ordering::Relaxed);
            // Any error is the stopped thread's: the machine "crashed".
            let run = || -> Result<(), redb::Error> {
                for round in 0..ROUNDS {
                    let mut txn = db.begin_write()?;
                    if !durable(round) {
                        txn.set_durability(redb::Durability::None)?;
                    }
                    {
                        let mut table = txn.open_table(t)?;
                        for k in 0..ROWS {
                            table.insert(round * ROWS + k, round)?;
                        }
                    }
                    txn.commit()?;
                }
                Ok(())
            };
            let mut crashed = run().is_err();
            drop(db);
            crashed |= shared.lock().failed.is_some();
            if !crashed {
                assert!(calls > 10, "the thread was never stopped mid-way");
                break;
            }
            // Reopened as redb alone would open it.
            let db = redb::Database::create(&path)
                .unwrap_or_else(|e| panic!("after {calls} calls the file does not reopen: {e}"));
            let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
            let rows = match txn.open_table(t) {
                Ok(table) => redb::ReadableTableMetadata::len(&table).unwrap(),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => panic!("after {calls} calls: {e}"),
            };
            let whole = (0..=ROUNDS)
                .filter(|&r| r == 0 || durable(r - 1))
                .map(|r| r * ROWS);
            assert!(
                whole.clone().any(|n| n == rows),
                "after {calls} calls the store holds {rows} rows, not one of {:?}",
                whole.collect::<Vec<_>>()
            );
        }
    }
}
