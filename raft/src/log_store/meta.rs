//! The raft metadata file: the vote, the committed log id and the last
//! purged log id of one partition, in `<partition dir>/raft-meta`.
//!
//! openraft requires the vote to be durable before `save_vote` returns (a
//! node that forgets its vote can vote twice in a term), and missive makes
//! the committed and purged log ids durable the same way. The log itself
//! keeps only indexes; the purged entry's *term* lives here, because once the
//! entry is purged nothing else remembers it.
//!
//! # Format (84 bytes, every integer little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MSVRAFTM` |
//! | 8 | 2 | format version, 1 |
//! | 10 | 2 | flags: bit 0 vote present, bit 1 vote committed, bit 2 committed present, bit 3 purged present |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | vote term |
//! | 24 | 8 | vote node id |
//! | 32 | 8 | committed: term |
//! | 40 | 8 | committed: leader node id |
//! | 48 | 8 | committed: index |
//! | 56 | 8 | purged: term |
//! | 64 | 8 | purged: leader node id |
//! | 72 | 8 | purged: index |
//! | 80 | 4 | CRC32 (crc32fast) of bytes 0..80 |
//!
//! Absent values are written as zeros with their flag clear.
//!
//! # Durability
//!
//! The file is replaced atomically: write `raft-meta.tmp`, fdatasync it,
//! rename it over `raft-meta`, fsync the directory. A crash leaves the old or
//! the new version, never a mix; the CRC catches bit rot. A failed write or
//! sync poisons the file: every later update fails until the store is
//! reopened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use missive_log::fs::FileSystem;
use openraft::vote::RaftVote;

use crate::error::{Error, Result};
use crate::types::{LeaderId, LogId, Vote};

/// File name of the metadata file in a partition directory.
pub const META_FILE: &str = "raft-meta";
const META_TMP: &str = "raft-meta.tmp";
const MAGIC: [u8; 8] = *b"MSVRAFTM";
const VERSION: u16 = 1;
const LEN: usize = 84;
const CRC_AT: usize = 80;

const VOTE: u16 = 1 << 0;
const VOTE_COMMITTED: u16 = 1 << 1;
const COMMITTED: u16 = 1 << 2;
const PURGED: u16 = 1 << 3;

/// What the metadata file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RaftMeta {
    /// The last vote saved.
    pub vote: Option<Vote>,
    /// The last committed log id saved.
    pub committed: Option<LogId>,
    /// The last purged log id: everything at or below it is gone from the
    /// log's visible range.
    pub purged: Option<LogId>,
}

impl RaftMeta {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        let mut flags = 0u16;
        if let Some(v) = &self.vote {
            flags |= VOTE;
            if v.is_committed() {
                flags |= VOTE_COMMITTED;
            }
            put(&mut b, 16, v.leader_id().term);
            put(&mut b, 24, v.leader_id().node_id);
        }
        if let Some(c) = &self.committed {
            flags |= COMMITTED;
            put_log_id(&mut b, 32, c);
        }
        if let Some(p) = &self.purged {
            flags |= PURGED;
            put_log_id(&mut b, 56, p);
        }
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8; LEN]) -> std::result::Result<RaftMeta, &'static str> {
        if b[0..8] != MAGIC {
            return Err("wrong magic");
        }
        if crc32fast::hash(&b[..CRC_AT]) != u32::from_le_bytes(word(b, CRC_AT)) {
            return Err("CRC mismatch");
        }
        if u16::from_le_bytes([b[8], b[9]]) != VERSION {
            return Err("unknown format version");
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags & !(VOTE | VOTE_COMMITTED | COMMITTED | PURGED) != 0 {
            return Err("unknown flags");
        }
        let vote = (flags & VOTE != 0).then(|| {
            Vote::from_leader_id(
                LeaderId {
                    term: get(b, 16),
                    node_id: get(b, 24),
                },
                flags & VOTE_COMMITTED != 0,
            )
        });
        Ok(RaftMeta {
            vote,
            committed: (flags & COMMITTED != 0).then(|| get_log_id(b, 32)),
            purged: (flags & PURGED != 0).then(|| get_log_id(b, 56)),
        })
    }
}

fn put(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn word(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

fn put_log_id(b: &mut [u8], at: usize, id: &LogId) {
    put(b, at, id.leader_id.term);
    put(b, at + 8, id.leader_id.node_id);
    put(b, at + 16, id.index);
}

fn get_log_id(b: &[u8], at: usize) -> LogId {
    LogId::new(
        LeaderId {
            term: get(b, at),
            node_id: get(b, at + 8),
        },
        get(b, at + 16),
    )
}

/// The metadata file of one partition and its durable value.
#[derive(Debug)]
pub(crate) struct MetaFile {
    /// The file system the log uses too (so crash tests cover both).
    fs: Arc<dyn FileSystem>,
    /// The partition directory holding the file.
    dir: PathBuf,
    /// The durable value, for readers. Updated only after the file holding
    /// it is durable, so no reader sees a vote a crash could take back.
    current: RwLock<RaftMeta>,
    /// Serialises writers, so the file's versions follow the order of the
    /// updates; holds the cause once a write failed (the file is poisoned).
    /// Held across the file I/O, always on a blocking thread.
    writer: Mutex<Option<String>>,
}

impl MetaFile {
    /// Reads the file in `dir`, or starts empty if there is none.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<MetaFile> {
        let meta = read(&*fs, dir)?.unwrap_or_default();
        Ok(MetaFile {
            fs,
            dir: dir.to_owned(),
            current: RwLock::new(meta),
            writer: Mutex::new(None),
        })
    }

    /// The durable value.
    pub fn get(&self) -> RaftMeta {
        // Every update of `current` is one assignment, so a panic elsewhere
        // cannot leave it half-changed: a poisoned lock is still readable.
        *self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the value with `change` and makes it durable before
    /// returning. Blocking: call it off the async threads.
    pub fn update(&self, change: impl FnOnce(&mut RaftMeta)) -> Result<()> {
        let mut poisoned = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cause) = &*poisoned {
            return Err(Error::Poisoned {
                path: self.dir.join(META_FILE),
                cause: cause.clone(),
            });
        }
        let old = self.get();
        let mut new = old;
        change(&mut new);
        if new == old {
            return Ok(());
        }
        if let Err(e) = write(&*self.fs, &self.dir, &new) {
            tracing::error!(dir = %self.dir.display(), error = %e, "raft metadata poisoned");
            *poisoned = Some(e.to_string());
            return Err(e);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }
}

fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<RaftMeta>> {
    let path = dir.join(META_FILE);
    let file = match fs.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != LEN as u64 {
        return Err(Error::CorruptMeta {
            path,
            reason: "wrong length",
        });
    }
    let mut b = [0u8; LEN];
    file.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    RaftMeta::decode(&b)
        .map(Some)
        .map_err(|reason| Error::CorruptMeta { path, reason })
}

fn write(fs: &dyn FileSystem, dir: &Path, meta: &RaftMeta) -> Result<()> {
    let tmp = dir.join(META_TMP);
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", tmp, e)),
    }
    let file = fs
        .create_new(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&meta.encode(), 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    // The content must be durable before the rename can make it the live
    // file, or a crash could leave a live file with unwritten bytes.
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &tmp, e))?;
    let path = dir.join(META_FILE);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    // The rename is durable only once the directory is: without this a
    // crash could bring back the previous vote after we acknowledged this one.
    fs.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use missive_log::fs::StdFs;

    use super::*;

    fn log_id(term: u64, node_id: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id }, index)
    }

    #[test]
    fn every_field_round_trips() {
        let full = RaftMeta {
            vote: Some(Vote::from_leader_id(
                LeaderId {
                    term: 9,
                    node_id: 2,
                },
                true,
            )),
            committed: Some(log_id(8, 1, 1000)),
            purged: Some(log_id(3, 4, u64::MAX)),
        };
        for m in [
            full,
            RaftMeta::default(),
            RaftMeta {
                vote: Some(Vote::from_leader_id(
                    LeaderId {
                        term: 1,
                        node_id: 0,
                    },
                    false,
                )),
                ..RaftMeta::default()
            },
        ] {
            assert_eq!(RaftMeta::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let m = RaftMeta {
            committed: Some(log_id(2, 1, 7)),
            ..RaftMeta::default()
        };
        let good = m.encode();
        for byte in 0..LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(
                    RaftMeta::decode(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn update_is_durable_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
        let meta = MetaFile::open(fs.clone(), dir.path()).expect("open");
        assert_eq!(meta.get(), RaftMeta::default());
        meta.update(|m| m.purged = Some(log_id(5, 1, 42)))
            .expect("update");
        drop(meta);
        let reopened = MetaFile::open(fs, dir.path()).expect("reopen");
        assert_eq!(reopened.get().purged, Some(log_id(5, 1, 42)));
        assert!(!dir.path().join(META_TMP).exists());
    }

    #[test]
    fn truncated_file_is_corruption_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(META_FILE), [0u8; 10]).expect("write");
        let err = MetaFile::open(Arc::new(StdFs), dir.path()).expect_err("refused");
        assert!(matches!(err, Error::CorruptMeta { .. }));
    }
}
