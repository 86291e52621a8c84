//! Copying a log directory's committed prefix into a backup.
//!
//! A backup of a log is the same files under the same names, so that it
//! opens, verifies and replays like the original: every segment wholly at
//! or below the copied index is copied byte for byte; the segment holding
//! that index is cut right after its record (a record boundary, found by
//! scanning — CRC, index sequence and hash chain — from the segment's
//! header); later segments are left out. The `meta` file (purge point, and
//! the chain hash a purge beyond the end carried in) is copied too: without
//! it the gap before a carried segment would read as corruption. Sparse
//! indexes are caches and are not copied.
//!
//! Safe beside a running writer: sources are read with plain positional
//! reads (no lock, no map), and only bytes of records at or below the copied
//! index — committed and durable, so never truncated — are used.
//!
//! Incremental: a segment copied whole is immutable in the source (its
//! records are committed), so when the previous backup recorded the same
//! name with the same size and the target still holds a file of that size,
//! it is neither read nor written again; its recorded checksum is carried.
//!
//! Every file written here is written to `<name>.tmp`, fdatasynced and
//! renamed, then the directory is fsynced: a crash leaves either the old
//! file or the new one.

use std::path::Path;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{
    ChainHash, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::fs::{FileSystem, LogFile};
use crate::meta::META_FILE;
use crate::scan::{Cursor, Stop, scan};

/// Bytes read and written per step of a whole-file copy.
const COPY_CHUNK: usize = 1 << 20;

/// What the previous backup recorded of a file, by name: its size and
/// BLAKE3.
pub type Previous<'a> = &'a dyn Fn(&str) -> Option<(u64, [u8; 32])>;

/// One file of a log backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    /// The file name inside the log directory.
    pub name: String,
    /// Its size in the backup.
    pub size: u64,
    /// BLAKE3 of its bytes in the backup.
    pub blake3: [u8; 32],
    /// Whether this backup wrote it (false: kept from the previous one).
    pub copied: bool,
}

/// What [`copy_log`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogBackup {
    /// The files of the backup, segments in index order, then `meta`.
    pub files: Vec<BackupFile>,
    /// The last index the backup holds (the copied index), if any record.
    pub last_index: Option<u64>,
    /// The chain hash of that record.
    pub head_hash: Option<ChainHash>,
    /// Bytes written by this backup.
    pub bytes_copied: u64,
    /// Bytes of files kept from the previous backup, unread.
    pub bytes_skipped: u64,
}

/// Copies the log in `src` up to and including record `up_to` (nothing of
/// the segments when `None`) into `dst`, creating it. `previous(name)`
/// answers the size and BLAKE3 the previous backup recorded for a file.
/// Files in `dst` that are not part of this backup (segments retention has
/// since deleted, or beyond the copied index) are removed.
///
/// Fails with [`Error::Corruption`] when a record needed is damaged, and
/// with [`Error::BeyondEnd`] when the log does not hold `up_to`.
pub fn copy_log(
    fs: &dyn FileSystem,
    src: &Path,
    dst: &Path,
    up_to: Option<u64>,
    max_record_bytes: u32,
    previous: Previous<'_>,
) -> Result<LogBackup> {
    fs.create_dir_all(dst)
        .map_err(|e| Error::io("create", dst, e))?;
    let names = fs.list(src).map_err(|e| Error::io("list", src, e))?;
    let mut firsts: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    firsts.sort_unstable();
    let mut out = LogBackup::default();
    if let Some(up_to) = up_to
        && firsts.first().is_some_and(|&f| f == up_to + 1)
    {
        // Everything up to `up_to` is gone from this log (a replica that
        // caught up by snapshot, or retention): the first segment's header
        // holds the chain hash of `up_to`, and no record is copied.
        out.head_hash = Some(next_header(fs, src, up_to + 1)?.prev_hash);
        out.last_index = Some(up_to);
    } else if let Some(up_to) = up_to {
        for (k, &first) in firsts.iter().enumerate() {
            if first > up_to {
                break;
            }
            let name = segment_file_name(first);
            let next_first = firsts.get(k + 1).copied();
            // Every record of this segment lies below the next one's
            // first index; if that is at most `up_to + 1`, all of them
            // are committed and the file is sealed and immutable.
            let whole = next_first.is_some_and(|n| n <= up_to + 1);
            if whole {
                let file = copy_whole(fs, src, dst, &name, previous)?;
                if next_first == Some(up_to + 1) {
                    // `up_to` is this segment's last record: the next
                    // segment's header holds its chain hash.
                    out.head_hash = Some(next_header(fs, src, up_to + 1)?.prev_hash);
                    out.last_index = Some(up_to);
                }
                account(&mut out, file);
            } else {
                let (file, hash) = copy_cut(
                    fs,
                    src,
                    dst,
                    &name,
                    first,
                    up_to,
                    max_record_bytes,
                    previous,
                )?;
                out.head_hash = Some(hash);
                out.last_index = Some(up_to);
                account(&mut out, file);
                break;
            }
        }
        if out.last_index.is_none() {
            let next = firsts.last().copied().unwrap_or(0);
            return Err(Error::BeyondEnd { index: up_to, next });
        }
    }
    if names.iter().any(|n| n == META_FILE) {
        let file = copy_whole(fs, src, dst, META_FILE, &|_| None)?;
        account(&mut out, file);
    }
    remove_others(fs, dst, &out.files)?;
    Ok(out)
}

fn account(out: &mut LogBackup, file: BackupFile) {
    if file.copied {
        out.bytes_copied += file.size;
    } else {
        out.bytes_skipped += file.size;
    }
    out.files.push(file);
}

/// The header of segment `first` in `src`.
fn next_header(fs: &dyn FileSystem, src: &Path, first: u64) -> Result<SegmentHeader> {
    let path = src.join(segment_file_name(first));
    let file = fs
        .open(&path, false)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    SegmentHeader::decode(&b).map_err(|kind| Error::corruption(&path, 0, kind))
}

/// Whether the previous backup's copy of `name` can stand for a source
/// file of `len` bytes: same recorded size, and still that size in `dst`.
fn kept(
    fs: &dyn FileSystem,
    dst: &Path,
    name: &str,
    len: u64,
    previous: Previous<'_>,
) -> Option<[u8; 32]> {
    let (size, hash) = previous(name)?;
    if size != len {
        return None;
    }
    let there = fs.open(&dst.join(name), false).ok()?;
    (there.len().ok()? == len).then_some(hash)
}

/// Copies the whole file `name`, streaming, unless the previous backup
/// holds it unchanged.
fn copy_whole(
    fs: &dyn FileSystem,
    src: &Path,
    dst: &Path,
    name: &str,
    previous: Previous<'_>,
) -> Result<BackupFile> {
    let path = src.join(name);
    let file = fs
        .open(&path, false)
        .map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if let Some(blake3) = kept(fs, dst, name, len, previous) {
        return Ok(BackupFile {
            name: name.to_owned(),
            size: len,
            blake3,
            copied: false,
        });
    }
    let blake3 = write_durably(fs, dst, name, len, |out| {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_CHUNK.min(len as usize)];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::io("read", &path, e))?;
            hasher.update(&buf[..n]);
            let target = dst.join(format!("{name}.tmp"));
            out.write_all_at(&buf[..n], at)
                .map_err(|e| Error::io("write", target, e))?;
            at += n as u64;
        }
        Ok(*hasher.finalize().as_bytes())
    })?;
    Ok(BackupFile {
        name: name.to_owned(),
        size: len,
        blake3,
        copied: true,
    })
}

/// Copies segment `name` up to the end of record `up_to`, checking every
/// record on the way. Returns the file and the chain hash of `up_to`.
#[allow(clippy::too_many_arguments)]
fn copy_cut(
    fs: &dyn FileSystem,
    src: &Path,
    dst: &Path,
    name: &str,
    first: u64,
    up_to: u64,
    max_record_bytes: u32,
    previous: Previous<'_>,
) -> Result<(BackupFile, ChainHash)> {
    let path = src.join(name);
    let file = fs
        .open(&path, false)
        .map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let header = SegmentHeader::decode(&bytes).map_err(|kind| Error::corruption(&path, 0, kind))?;
    if header.first_index != first {
        let kind = CorruptionKind::NameMismatch {
            header: header.first_index,
            name: first,
        };
        return Err(Error::corruption(&path, 0, kind));
    }
    let mut cursor = Cursor {
        pos: SEGMENT_HEADER_LEN,
        next_index: first,
        prev_hash: header.prev_hash,
        max_timestamp: 0,
    };
    let mut found: Option<(usize, ChainHash)> = None;
    // Only the records up to `up_to` are looked at: what follows may be a
    // batch a writer is still putting down.
    let stop = scan(&bytes, &mut cursor, max_record_bytes, true, |h, pos, _| {
        if h.index == up_to {
            found = Some((pos + h.record_len(), h.chain_hash));
        }
    });
    let Some((end, hash)) = found else {
        return Err(match stop {
            Stop::Bad { position, kind } if cursor.next_index <= up_to => {
                Error::corruption(&path, position as u64, kind)
            }
            _ => Error::BeyondEnd {
                index: up_to,
                next: cursor.next_index,
            },
        });
    };
    let kept_bytes = &bytes[..end];
    let blake3 = *blake3::hash(kept_bytes).as_bytes();
    if previous(name) == Some((end as u64, blake3))
        && fs
            .open(&dst.join(name), false)
            .and_then(|f| f.len())
            .is_ok_and(|l| l == end as u64)
    {
        let file = BackupFile {
            name: name.to_owned(),
            size: end as u64,
            blake3,
            copied: false,
        };
        return Ok((file, hash));
    }
    write_durably(fs, dst, name, end as u64, |out| {
        out.write_all_at(kept_bytes, 0)
            .map_err(|e| Error::io("write", dst.join(format!("{name}.tmp")), e))?;
        Ok(blake3)
    })?;
    let file = BackupFile {
        name: name.to_owned(),
        size: end as u64,
        blake3,
        copied: true,
    };
    Ok((file, hash))
}

/// Writes `dst/name` through `<name>.tmp`: `fill` writes the bytes,
/// then fdatasync, rename, directory fsync.
fn write_durably<T>(
    fs: &dyn FileSystem,
    dst: &Path,
    name: &str,
    len: u64,
    fill: impl FnOnce(&dyn LogFile) -> Result<T>,
) -> Result<T> {
    let tmp = dst.join(format!("{name}.tmp"));
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", tmp, e)),
    }
    let out = fs
        .create_new(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    let value = fill(&*out)?;
    out.set_len(len)
        .map_err(|e| Error::io("set length", &tmp, e))?;
    // Durable before the rename, or a crash could leave the name on
    // unwritten bytes.
    out.sync_data()
        .map_err(|e| Error::io("fdatasync", &tmp, e))?;
    let path = dst.join(name);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    fs.sync_dir(dst)
        .map_err(|e| Error::io("fsync dir", dst, e))?;
    Ok(value)
}

/// Removes the files of `dst` that are not in `files`.
fn remove_others(fs: &dyn FileSystem, dst: &Path, files: &[BackupFile]) -> Result<()> {
    let names = fs.list(dst).map_err(|e| Error::io("list", dst, e))?;
    let mut removed = false;
    for n in names {
        if !files.iter().any(|f| f.name == n) {
            let path = dst.join(&n);
            fs.remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dst)
            .map_err(|e| Error::io("fsync dir", dst, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::verify::verify_dir;
    use crate::{Log, Options, Record};

    fn log_with(dir: &Path, n: u64, segment_bytes: u64) -> Log {
        let opts = Options {
            segment_bytes,
            ..Options::default()
        };
        let log = Log::open(dir, opts).expect("open");
        for i in 0..n {
            let payload = format!("record {i}").repeat(20);
            log.append(&[Record {
                timestamp: 1_000 + i,
                payload: payload.as_bytes(),
            }])
            .expect("append");
        }
        log
    }

    #[test]
    fn a_cut_copy_verifies_and_ends_at_the_asked_index() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        let log = log_with(&src, 100, 4096);
        let want = log.chain_hash_at(57).expect("hash");
        let b = copy_log(&StdFs, &src, &dst, Some(57), 1 << 20, &|_| None).expect("copy");
        assert_eq!(b.last_index, Some(57));
        assert_eq!(b.head_hash, Some(want));
        let report = verify_dir(&StdFs, &dst, 1 << 20).expect("verify");
        assert_eq!(report.problem, None);
        assert_eq!(report.records(), 58);
        assert_eq!(report.head_hash(), Some(want));
        assert!(b.files.len() > 2, "several segments: {:?}", b.files);
    }

    #[test]
    fn a_second_copy_skips_the_unchanged_segments() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        let log = log_with(&src, 100, 4096);
        let first = copy_log(&StdFs, &src, &dst, Some(99), 1 << 20, &|_| None).expect("copy");
        for i in 100..150u64 {
            log.append(&[Record {
                timestamp: 2_000 + i,
                payload: b"more",
            }])
            .expect("append");
        }
        let prev = |name: &str| {
            first
                .files
                .iter()
                .find(|f| f.name == name)
                .map(|f| (f.size, f.blake3))
        };
        let second = copy_log(&StdFs, &src, &dst, Some(149), 1 << 20, &prev).expect("copy");
        assert!(second.bytes_skipped > 0);
        assert!(second.bytes_copied < first.bytes_copied);
        // Only the segment that was cut (and since grew) and later ones
        // are written again.
        let rewritten: Vec<_> = second.files.iter().filter(|f| f.copied).collect();
        let sealed_before = first
            .files
            .iter()
            .filter(|f| f.name.ends_with(".seg"))
            .count();
        assert!(rewritten.len() < second.files.len());
        assert!(sealed_before > 1);
        let report = verify_dir(&StdFs, &dst, 1 << 20).expect("verify");
        assert_eq!(report.problem, None);
        assert_eq!(report.records(), 150);
    }

    #[test]
    fn an_index_the_log_does_not_hold_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        let _log = log_with(&src, 10, 1 << 20);
        let err = copy_log(&StdFs, &src, &dst, Some(10), 1 << 20, &|_| None).expect_err("beyond");
        assert!(matches!(err, Error::BeyondEnd { index: 10, .. }), "{err}");
    }
}
