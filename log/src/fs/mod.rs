//! File I/O behind a small trait.
//!
//! The log never calls `std::fs` directly: it goes through [`FileSystem`] and
//! [`LogFile`], so tests can run it on [`SimFs`], a disk that keeps written and
//! durable bytes apart, crashes between them, and fails the calls it is told
//! to fail. [`StdFs`] is the real thing.

mod replace;
mod sim;
mod std_fs;

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use replace::replace_durably;
pub use sim::{Counters, Fault, SimFs};
pub use std_fs::StdFs;

/// A directory-level file system as the log needs it.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Opens an existing file, for writing too when `write` is set.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn LogFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the directory for the life of the returned
    /// guard; fails with `WouldBlock` if another holder has it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}

/// One open file.
// `len` is the file's length for positional I/O; "is it empty" is never a
// question the log asks, so no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait LogFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `pos` (pread).
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at `pos` (pwrite).
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes written bytes and the file's length durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's length.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// A read-only view of the whole file. The caller promises the file is
    /// never truncated while a mapping of it lives.
    fn map(&self) -> io::Result<Mapping>;
}

/// Read-only bytes of a whole file: a memory map on a real disk.
#[derive(Clone)]
pub struct Mapping(Arc<dyn Deref<Target = [u8]> + Send + Sync>);

impl Mapping {
    /// Wraps any owner of bytes.
    pub fn new(bytes: impl Deref<Target = [u8]> + Send + Sync + 'static) -> Self {
        Mapping(Arc::new(bytes))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// How many handles share this mapping (the log only unlinks a file when
    /// it holds the last one).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.0.len())
    }
}
