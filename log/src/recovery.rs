//! Opening a log directory: from files on disk to a ready view.
//!
//! Sealed segments are trusted through their CRC'd sparse index (rebuilt by a
//! full scan when missing or stale), checked for continuity of index and hash
//! chain with their neighbours, and memory-mapped. The last segment is scanned
//! record by record. A bad record there is a torn write — cut off and
//! fdatasynced — unless a record of a later commit batch follows it, which
//! proves the bad one was acknowledged: then it is corruption. Corruption is
//! never repaired: `open` fails, naming the segment and byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name};
use crate::fs::{FileSystem, LogFile};
use crate::index::{SegmentIndex, SparseBuilder};
use crate::log::{View, create_segment, jump, remove_if_exists, tmp_path};
use crate::meta;
use crate::options::{Options, Recovery};
use crate::scan::{Cursor, Stop, later_batch_after, record_after_bad_header, scan};
use crate::segment::{ActiveView, Sealed};

/// A torn write that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// The byte it was cut at: its new length.
    pub position: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// Why the first dropped record was invalid.
    pub kind: CorruptionKind,
}

/// What `Log::open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// The torn tail cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// A segment file whose header never became durable, removed.
    pub removed_unborn_segment: Option<PathBuf>,
    /// Sealed segments whose sparse index was rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Leftover temporary and retired files removed.
    pub removed_leftovers: Vec<PathBuf>,
}

fn is_leftover(name: &str) -> bool {
    name.ends_with(".tmp") || name.ends_with(".retired")
}

/// Recovers the log in `dir` (which the caller has locked).
pub(crate) fn recover(dir: &Path, opts: &Options) -> Result<(View, RecoveryReport)> {
    let fs = &*opts.fs;
    let mut report = RecoveryReport::default();
    loop {
        let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
        for name in names.iter().filter(|n| is_leftover(n)) {
            let path = dir.join(name);
            remove_if_exists(fs, &path)?;
            report.removed_leftovers.push(path);
        }
        let mut firsts: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .collect();
        firsts.sort_unstable();
        report.segments = firsts.len();
        let meta = meta::read(fs, dir)?;
        let purge_point = meta.map(|m| m.first_visible);
        // The hash a jump to the purge point continues from: carried in by
        // the purge, or the genesis hash if it carried none.
        let carried = meta.and_then(|m| m.carried);

        let Some((&last, sealed_firsts)) = firsts.split_last() else {
            // An empty directory (or one whose only segment was unborn, or
            // was removed by a jump a crash cut short): start where the
            // purge point says, or at the initial index.
            let first = purge_point.unwrap_or(opts.initial_index);
            let prev = carried.unwrap_or(format::GENESIS_HASH);
            let active = create_segment(fs, dir, opts, first, prev, carried.is_some())?;
            let view = View {
                sealed: Vec::new(),
                first_visible: first,
                head: prev,
                active,
            };
            return Ok((view, report));
        };

        let mut sealed: Vec<Arc<Sealed>> = Vec::with_capacity(sealed_firsts.len());
        for &first in sealed_firsts {
            let seg = open_sealed(fs, dir, first, opts, &mut report)?;
            if let Some(prev) = sealed.last() {
                check_link(&seg.path, prev, seg.header, purge_point)?;
            }
            sealed.push(Arc::new(seg));
        }
        // An index file left beside the last segment describes an older,
        // sealed state of it; it is stale by definition.
        remove_if_exists(fs, &dir.join(format::index_file_name(last)))?;

        let Some((active, head)) =
            open_active(fs, dir, last, opts, sealed.last(), purge_point, &mut report)?
        else {
            // The last segment was unborn and is gone: the one before it is
            // now the tail, and must be opened as such.
            continue;
        };
        let oldest = sealed.first().map_or(active.first(), |s| s.first());
        let next = active.next();
        let mut view = View {
            sealed,
            active,
            first_visible: oldest,
            head,
        };
        match purge_point {
            // A purge beyond the end whose new segment a crash prevented:
            // finish it.
            Some(p) if p > next => jump(
                fs,
                dir,
                opts,
                &mut view,
                p,
                carried.unwrap_or(format::GENESIS_HASH),
            )?,
            Some(p) => view.first_visible = p.max(oldest),
            None => {}
        }
        return Ok((view, report));
    }
}

/// Checks that `header` (the segment after `prev`) continues it. A gap is
/// allowed only inside the purged range and only before a segment that a
/// purge beyond the end started (see [`jumped`]).
fn check_link(
    path: &Path,
    prev: &Sealed,
    header: SegmentHeader,
    purge_point: Option<u64>,
) -> Result<()> {
    if jumped(prev.last() + 1, header, purge_point) {
        return Ok(());
    }
    if header.first_index != prev.last() + 1 {
        let kind = CorruptionKind::SegmentGap {
            expected: prev.last() + 1,
            found: header.first_index,
        };
        return Err(Error::corruption(path, 0, kind));
    }
    if header.prev_hash != prev.index.last_hash {
        return Err(Error::corruption(path, 0, CorruptionKind::ChainBroken));
    }
    Ok(())
}

/// Whether the segment with `header`, found where `expected` was due, was
/// started by a purge beyond the end: it lies past a gap, inside the purged
/// range, and says its previous hash came from outside the log — by its
/// carried flag, or (written before the flag existed) by a chain restarted
/// at the genesis hash. Its previous hash cannot be checked against the
/// segment before it: the records in between were never in this log.
pub(crate) fn jumped(expected: u64, header: SegmentHeader, purge_point: Option<u64>) -> bool {
    header.first_index > expected
        && purge_point.is_some_and(|p| header.first_index <= p)
        && (header.carried || header.prev_hash == format::GENESIS_HASH)
}

fn read_whole(file: &dyn LogFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

fn decode_header(bytes: &[u8], path: &Path, name_first: u64) -> Result<SegmentHeader> {
    let header = SegmentHeader::decode(bytes).map_err(|kind| Error::corruption(path, 0, kind))?;
    if header.first_index != name_first {
        let kind = CorruptionKind::NameMismatch {
            header: header.first_index,
            name: name_first,
        };
        return Err(Error::corruption(path, 0, kind));
    }
    Ok(header)
}

/// Opens a sealed segment through its index, rebuilding the index if it is
/// missing or stale, and scanning it fully if asked to.
fn open_sealed(
    fs: &dyn FileSystem,
    dir: &Path,
    first: u64,
    opts: &Options,
    report: &mut RecoveryReport,
) -> Result<Sealed> {
    let path = dir.join(format::segment_file_name(first));
    let file = fs
        .open(&path, false)
        .map_err(|e| Error::io("open", &path, e))?;
    let map = file.map().map_err(|e| Error::io("mmap", &path, e))?;
    let bytes = map.bytes();
    let header = decode_header(bytes, &path, first)?;
    let cached = read_index(fs, dir, first).filter(|idx| {
        idx.first_index == first && idx.segment_len == bytes.len() as u64 && !idx.entries.is_empty()
    });
    let index = match cached {
        Some(idx) if opts.recovery == Recovery::TailOnly => idx,
        _ => {
            let idx = scan_sealed(bytes, &path, header, opts)?;
            write_index(fs, dir, &idx)?;
            report.rebuilt_indexes.push(path.clone());
            idx
        }
    };
    Ok(Sealed {
        path,
        header,
        index,
        map,
    })
}

/// Scans a whole sealed segment, checking every record and the chain, and
/// returns its index. Any bad record is corruption: a sealed segment was
/// complete and durable before the next one was created.
pub(crate) fn scan_sealed(
    bytes: &[u8],
    path: &Path,
    header: SegmentHeader,
    opts: &Options,
) -> Result<SegmentIndex> {
    let mut cursor = Cursor {
        pos: SEGMENT_HEADER_LEN,
        next_index: header.first_index,
        prev_hash: header.prev_hash,
        max_timestamp: 0,
    };
    let mut sparse = SparseBuilder::new(opts.index_interval_bytes);
    let stop = scan(
        bytes,
        &mut cursor,
        opts.max_record_bytes,
        true,
        |h, pos, _| {
            sparse.push(h.index, pos as u64);
        },
    );
    if let Stop::Bad { position, kind } = stop {
        return Err(Error::corruption(path, position as u64, kind));
    }
    if cursor.next_index == header.first_index {
        return Err(Error::corruption(
            path,
            0,
            CorruptionKind::EmptySealedSegment,
        ));
    }
    Ok(SegmentIndex {
        first_index: header.first_index,
        segment_len: bytes.len() as u64,
        last_index: cursor.next_index - 1,
        max_timestamp: cursor.max_timestamp,
        last_hash: cursor.prev_hash,
        entries: sparse.finish(),
    })
}

fn read_index(fs: &dyn FileSystem, dir: &Path, first: u64) -> Option<SegmentIndex> {
    let path = dir.join(format::index_file_name(first));
    let file = fs.open(&path, false).ok()?;
    let len = file.len().ok()?;
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact_at(&mut bytes, 0).ok()?;
    SegmentIndex::decode(&bytes)
}

/// Writes a sealed segment's index next to it. Not fsynced: it is a cache,
/// and a torn one fails its CRC and is rebuilt.
pub(crate) fn write_index(fs: &dyn FileSystem, dir: &Path, index: &SegmentIndex) -> Result<()> {
    let path = dir.join(format::index_file_name(index.first_index));
    let tmp = tmp_path(&path);
    remove_if_exists(fs, &tmp)?;
    let file = fs
        .create_new(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&index.encode(), 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))
}

/// Opens the last segment for appending: scans it, cuts a torn tail, or
/// reports corruption. Returns `None` if the file was an unborn segment
/// (created, but its header never made durable) and has been removed.
fn open_active(
    fs: &dyn FileSystem,
    dir: &Path,
    first: u64,
    opts: &Options,
    prev: Option<&Arc<Sealed>>,
    purge_point: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Option<(ActiveView, format::ChainHash)>> {
    let path = dir.join(format::segment_file_name(first));
    let file = fs
        .open(&path, true)
        .map_err(|e| Error::io("open", &path, e))?;
    let bytes = read_whole(&*file, &path)?;
    let header = match decode_header(&bytes, &path, first) {
        Ok(h) => h,
        Err(e) => {
            // A segment is made durable (header, then directory entry)
            // before any record goes into it, so a bad header with no valid
            // record after it is a creation cut short by a crash. Records
            // after a bad header mean real damage.
            if record_after_bad_header(&bytes, opts.max_record_bytes) {
                return Err(e);
            }
            tracing::warn!(segment = %path.display(), "removing segment whose creation was cut short");
            fs.remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("fsync dir", dir, e))?;
            report.removed_unborn_segment = Some(path);
            return Ok(None);
        }
    };
    if let Some(prev) = prev {
        check_link(&path, prev, header, purge_point)?;
    }
    let mut cursor = Cursor {
        pos: SEGMENT_HEADER_LEN,
        next_index: header.first_index,
        prev_hash: header.prev_hash,
        max_timestamp: 0,
    };
    let mut positions = Vec::new();
    let stop = scan(
        &bytes,
        &mut cursor,
        opts.max_record_bytes,
        true,
        |_, pos, _| {
            positions.push(pos as u64);
        },
    );
    // Past the records, the file holds zeros prepared for appends (which
    // the scan stops at), or nothing once a torn tail is cut.
    let mut file_len = bytes.len() as u64;
    if let Stop::Bad { position, kind } = stop {
        if later_batch_after(&bytes, position, cursor.next_index, opts.max_record_bytes) {
            return Err(Error::corruption(&path, position as u64, kind));
        }
        let dropped_bytes = (bytes.len() - position) as u64;
        tracing::warn!(
            segment = %path.display(), position, dropped_bytes, %kind,
            "cutting torn tail"
        );
        file.set_len(position as u64)
            .map_err(|e| Error::io("truncate", &path, e))?;
        // The cut must be durable before new records are written after it,
        // or a crash could resurrect the torn bytes behind valid ones.
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        file_len = position as u64;
        report.torn_tail = Some(TornTail {
            segment: path.clone(),
            position: position as u64,
            dropped_bytes,
            kind,
        });
    }
    let active = ActiveView {
        path,
        header,
        file,
        positions,
        end: cursor.pos as u64,
        prepared: file_len,
        max_timestamp: cursor.max_timestamp,
    };
    Ok(Some((active, cursor.prev_hash)))
}
