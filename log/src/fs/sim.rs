//! A simulated disk for crash and fault tests.
//!
//! Every file keeps two byte vectors: `live`, what the running process reads
//! back, and `durable`, what `sync_data` last made durable. The directory
//! keeps a live and a durable namespace the same way, updated by `sync_dir`.
//! [`SimFs::crash`] throws away everything that is not durable — optionally
//! keeping a torn prefix of unsynced appends, as a real disk may — and cuts off
//! every handle opened before the crash. [`SimFs::inject`] makes the next call
//! of a kind fail, as a dying disk would.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileSystem, LogFile, Mapping};

/// A fault to inject into the next call of its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The next `write_all_at` writes half of its bytes, then fails.
    Write,
    /// The next `sync_data` fails and makes nothing durable.
    SyncData,
    /// The next `sync_dir` fails and makes nothing durable.
    SyncDir,
}

/// A simulated disk. Cloning it gives another handle to the same disk.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The namespace the running process sees.
    live: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
    /// The namespace a crash leaves behind.
    durable: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
    /// Directories that exist (always durable: the log creates its directory
    /// before it writes anything, and tests do not crash before that).
    dirs: BTreeSet<PathBuf>,
    /// Faults waiting for their call: how many calls of the kind still
    /// succeed before it strikes.
    faults: BTreeMap<Fault, u32>,
    /// Bumped by every crash; handles from an earlier generation fail.
    generation: u64,
    /// Counters for tests that check how much I/O a workload costs.
    counters: Counters,
    /// Whether some handle holds a lock on each directory.
    locks: BTreeMap<PathBuf, Arc<()>>,
}

/// How many I/O calls of each kind the disk has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls of `write_all_at`.
    pub writes: u64,
    /// Calls of `sync_data`.
    pub syncs: u64,
    /// Calls of `sync_dir`.
    pub dir_syncs: u64,
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock of the simulated disk is already a failed
    // test; carry on with the data rather than cascade into more panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl SimFs {
    /// A new, empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call of the fault's kind fail.
    pub fn inject(&self, fault: Fault) {
        self.inject_after(fault, 0);
    }

    /// Lets `skip` calls of the fault's kind succeed, then fails the next.
    pub fn inject_after(&self, fault: Fault, skip: u32) {
        lock(&self.state).faults.insert(fault, skip);
    }

    /// I/O calls served so far.
    pub fn counters(&self) -> Counters {
        lock(&self.state).counters
    }

    /// Loses power: only durable entries and bytes survive. Handles opened
    /// before now fail every later call.
    pub fn crash(&self) {
        self.crash_keeping(|_, _| 0);
    }

    /// Loses power, but for each file whose live bytes extend its durable
    /// bytes, keeps `keep(path, unsynced_len)` bytes of the unsynced suffix —
    /// a torn write. `keep` must return at most `unsynced_len`.
    pub fn crash_keeping(&self, mut keep: impl FnMut(&Path, usize) -> usize) {
        let mut st = lock(&self.state);
        st.generation += 1;
        st.live = st.durable.clone();
        st.faults.clear();
        st.locks.clear();
        for (path, inode) in &st.live {
            let mut inode = lock(inode);
            let Inode { live, durable } = &mut *inode;
            if live.len() > durable.len() && live.starts_with(durable) {
                let extra = keep(path, live.len() - durable.len()).min(live.len() - durable.len());
                live.truncate(durable.len() + extra);
            } else {
                // The live bytes do not extend the durable ones — an unsynced
                // truncation or overwrite — so only the durable bytes
                // survive. (Slicing `live` to the durable length here
                // panicked when an unsynced truncation made it shorter.)
                live.clone_from(durable);
            }
            // What survived a crash is on the platter now.
            *durable = live.clone();
        }
    }

    /// The live bytes of a file, for tests that inspect or damage it.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = lock(&self.state);
        let inode = st.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(lock(inode).live.clone())
    }

    /// Overwrites a file's bytes, live and durable alike (bit rot, or a test
    /// placing a fixture).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut st = lock(&self.state);
        let inode = st.live.entry(path.to_owned()).or_default().clone();
        st.durable.insert(path.to_owned(), inode.clone());
        let mut inode = lock(&inode);
        inode.live = bytes.to_vec();
        inode.durable = bytes.to_vec();
    }

    fn take_fault(&self, fault: Fault) -> bool {
        let mut st = lock(&self.state);
        match st.faults.get_mut(&fault) {
            Some(0) => {
                st.faults.remove(&fault);
                true
            }
            Some(skip) => {
                *skip -= 1;
                false
            }
            None => false,
        }
    }

    fn file(&self, path: &Path, inode: Arc<Mutex<Inode>>) -> Arc<dyn LogFile> {
        let generation = lock(&self.state).generation;
        Arc::new(SimFile {
            fs: self.clone(),
            path: path.to_owned(),
            inode,
            generation,
        })
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        for d in dir.ancestors() {
            st.dirs.insert(d.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let inode = {
            let mut st = lock(&self.state);
            if st.live.contains_key(path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            let inode = Arc::new(Mutex::new(Inode::default()));
            st.live.insert(path.to_owned(), inode.clone());
            inode
        };
        Ok(self.file(path, inode))
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<Arc<dyn LogFile>> {
        let inode = lock(&self.state)
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        Ok(self.file(path, inode))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.state)
            .live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        let inode = st.live.remove(from).ok_or_else(|| not_found(from))?;
        st.live.insert(to.to_owned(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.take_fault(Fault::SyncDir) {
            return Err(injected());
        }
        let mut st = lock(&self.state);
        st.counters.dir_syncs += 1;
        st.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<_> = st
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        st.durable.extend(entries);
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut st = lock(&self.state);
        if let Some(held) = st.locks.get(dir) {
            // The lock is free again once every guard is dropped.
            if Arc::strong_count(held) > 1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let guard = Arc::new(());
        st.locks.insert(dir.to_owned(), guard.clone());
        Ok(Box::new(guard))
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    path: PathBuf,
    inode: Arc<Mutex<Inode>>,
    generation: u64,
}

impl SimFile {
    fn check_alive(&self) -> io::Result<()> {
        if lock(&self.fs.state).generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: handle opened before a crash",
                self.path.display()
            )));
        }
        Ok(())
    }
}

impl LogFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.check_alive()?;
        let inode = lock(&self.inode);
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = inode
            .live
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_alive()?;
        let failing = self.fs.take_fault(Fault::Write);
        lock(&self.fs.state).counters.writes += 1;
        let buf = if failing { &buf[..buf.len() / 2] } else { buf };
        let mut inode = lock(&self.inode);
        let start = usize::try_from(pos).map_err(io::Error::other)?;
        let end = start + buf.len();
        if inode.live.len() < end {
            inode.live.resize(end, 0);
        }
        inode.live[start..end].copy_from_slice(buf);
        if failing { Err(injected()) } else { Ok(()) }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_alive()?;
        if self.fs.take_fault(Fault::SyncData) {
            return Err(injected());
        }
        lock(&self.fs.state).counters.syncs += 1;
        let mut inode = lock(&self.inode);
        inode.durable = inode.live.clone();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_alive()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock(&self.inode).live.resize(len, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.check_alive()?;
        Ok(lock(&self.inode).live.len() as u64)
    }

    fn map(&self) -> io::Result<Mapping> {
        self.check_alive()?;
        Ok(Mapping::new(lock(&self.inode).live.clone()))
    }
}
