//! Offline verification and reading of a log directory.
//!
//! Used by `missive log verify` and `missive log dump`. It reads every
//! segment on disk — including purged ones the retention policy has not
//! deleted — checks every record's CRC, index continuity and hash chain, and
//! changes nothing: no lock, no truncation, no index rebuild, and plain reads
//! rather than memory maps, so it is safe beside a running writer.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{
    ChainHash, RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name,
};
use crate::fs::FileSystem;
use crate::meta;
use crate::recovery::jumped;
use crate::scan::{Cursor, Stop, later_batch_after, record_after_bad_header, scan};

/// What verification found in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment file.
    pub path: PathBuf,
    /// Its first index.
    pub first_index: u64,
    /// Valid records checked.
    pub records: u64,
    /// Size of the file.
    pub bytes: u64,
    /// Chain hash after its last valid record.
    pub head_hash: ChainHash,
    /// Oldest and newest record timestamps (ms), if it holds any.
    pub timestamps: Option<(u64, u64)>,
    /// Whether its chain continues from a hash carried in by a purge
    /// beyond the end (a replica that caught up by snapshot), rather than
    /// from a segment before it.
    pub carried: bool,
}

/// The first problem found, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Damage that recovery would refuse: the log must not be served from
    /// this point on.
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad header or record.
        position: u64,
        /// What failed.
        kind: CorruptionKind,
    },
    /// An unacknowledged, partly written last batch, which the next open
    /// cuts off, or (at position 0) a last segment whose creation was cut
    /// short, which the next open removes. Expected after a crash, or while
    /// a writer is mid-batch.
    TornTail {
        /// The segment file.
        segment: PathBuf,
        /// Where the valid records end.
        position: u64,
        /// Why the next record is invalid.
        kind: CorruptionKind,
    },
}

/// The result of verifying a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// One summary per segment, oldest first (up to the first problem).
    pub segments: Vec<SegmentSummary>,
    /// The purge point recorded in the directory, if any.
    pub purge_point: Option<u64>,
    /// The first problem, if any; verification stops there.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// Records checked in all segments.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Chain hash of the last valid record: the log's identity.
    pub fn head_hash(&self) -> Option<ChainHash> {
        self.segments.last().map(|s| s.head_hash)
    }
}

/// Verifies every segment in `dir`.
pub fn verify_dir(fs: &dyn FileSystem, dir: &Path, max_record_bytes: u32) -> Result<VerifyReport> {
    read_dir(fs, dir, max_record_bytes, |_, _| ControlFlow::Continue(()))
}

/// Verifies `dir` like [`verify_dir`], handing each valid record to `visit`
/// in index order; `visit` may stop the walk early.
pub fn read_dir(
    fs: &dyn FileSystem,
    dir: &Path,
    max_record_bytes: u32,
    mut visit: impl FnMut(&RecordHeader, &[u8]) -> ControlFlow<()>,
) -> Result<VerifyReport> {
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut firsts: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    firsts.sort_unstable();
    let mut report = VerifyReport {
        purge_point: meta::read(fs, dir)?.map(|m| m.first_visible),
        ..Default::default()
    };
    let mut link: Option<(u64, ChainHash)> = None;
    for (k, &first) in firsts.iter().enumerate() {
        let is_last = k + 1 == firsts.len();
        let path = dir.join(crate::format::segment_file_name(first));
        let file = fs
            .open(&path, false)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        let corrupt = |position: u64, kind| Problem::Corruption {
            segment: path.clone(),
            position,
            kind,
        };

        let header = match SegmentHeader::decode(&bytes) {
            Ok(h) if h.first_index == first => h,
            bad => {
                let kind = match bad {
                    Ok(h) => CorruptionKind::NameMismatch {
                        header: h.first_index,
                        name: first,
                    },
                    Err(kind) => kind,
                };
                // As in recovery: a bad header on the last segment with no
                // record after it is a roll a crash cut short, which the
                // next open removes — not damage to acknowledged data.
                let unborn = is_last && !record_after_bad_header(&bytes, max_record_bytes);
                report.problem = Some(if unborn {
                    Problem::TornTail {
                        segment: path.clone(),
                        position: 0,
                        kind,
                    }
                } else {
                    corrupt(0, kind)
                });
                return Ok(report);
            }
        };
        // A gap inside the purged range, before a segment whose chain was
        // carried in, is what a purge beyond the end leaves (a replica that
        // installed a snapshot).
        let jumped = link.is_some_and(|(next, _)| jumped(next, header, report.purge_point));
        if let Some((next, hash)) = link.filter(|_| !jumped) {
            if header.first_index != next {
                let kind = CorruptionKind::SegmentGap {
                    expected: next,
                    found: header.first_index,
                };
                report.problem = Some(corrupt(0, kind));
                return Ok(report);
            }
            if header.prev_hash != hash {
                report.problem = Some(corrupt(0, CorruptionKind::ChainBroken));
                return Ok(report);
            }
        }
        let mut cursor = Cursor {
            pos: SEGMENT_HEADER_LEN,
            next_index: header.first_index,
            prev_hash: header.prev_hash,
            max_timestamp: 0,
        };
        let mut min_ts = u64::MAX;
        let mut stopped = false;
        let stop = scan(
            &bytes,
            &mut cursor,
            max_record_bytes,
            true,
            |h, _, payload| {
                min_ts = min_ts.min(h.timestamp);
                if !stopped && visit(h, payload).is_break() {
                    stopped = true;
                }
            },
        );
        let records = cursor.next_index - header.first_index;
        report.segments.push(SegmentSummary {
            path: path.clone(),
            first_index: first,
            records,
            bytes: len,
            head_hash: cursor.prev_hash,
            timestamps: (records > 0).then_some((min_ts, cursor.max_timestamp)),
            carried: header.carried,
        });
        if let Stop::Bad { position, kind } = stop {
            let torn = is_last
                && !later_batch_after(&bytes, position, cursor.next_index, max_record_bytes);
            report.problem = Some(if torn {
                Problem::TornTail {
                    segment: path.clone(),
                    position: position as u64,
                    kind,
                }
            } else {
                corrupt(position as u64, kind)
            });
            return Ok(report);
        }
        if !is_last && records == 0 {
            report.problem = Some(corrupt(0, CorruptionKind::EmptySealedSegment));
            return Ok(report);
        }
        if stopped {
            return Ok(report);
        }
        link = Some((cursor.next_index, cursor.prev_hash));
    }
    Ok(report)
}
