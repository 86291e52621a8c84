//! Segments as the reader sees them, and the iterator over a range.
//!
//! A sealed segment is immutable and read through a memory map; the active
//! segment grows and is read with pread, through the byte positions of its
//! durable records. Readers hold `Arc`s to what they read, so the writer can
//! change the log's segment list without waiting for them (see `Log::retire`
//! for why a mapped file is never truncated or unlinked).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{ChainHash, SegmentHeader, decode_record, decode_record_header};
use crate::fs::{LogFile, Mapping};
use crate::index::SegmentIndex;

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The record's index.
    pub index: u64,
    /// The timestamp it was appended with (ms since the Unix epoch).
    pub timestamp: u64,
    /// Its chain hash.
    pub chain_hash: ChainHash,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A sealed, immutable segment.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub index: SegmentIndex,
    pub map: Mapping,
}

impl Sealed {
    pub fn first(&self) -> u64 {
        self.header.first_index
    }

    pub fn last(&self) -> u64 {
        self.index.last_index
    }

    /// Byte position of record `index`, found from the sparse index by a
    /// short walk over record headers.
    pub fn locate(&self, index: u64, max_payload: u32) -> Result<usize> {
        let (mut at, pos) = self.index.seek(index);
        let bytes = self.map.bytes();
        let mut pos = pos as usize;
        loop {
            let header = bytes
                .get(pos..)
                .ok_or(CorruptionKind::ShortRecord)
                .and_then(|b| decode_record_header(b, max_payload))
                .map_err(|kind| Error::corruption(&self.path, pos as u64, kind))?;
            if header.index != at {
                let kind = CorruptionKind::IndexGap {
                    expected: at,
                    found: header.index,
                };
                return Err(Error::corruption(&self.path, pos as u64, kind));
            }
            if at == index {
                return Ok(pos);
            }
            pos += header.record_len();
            at += 1;
        }
    }
}

/// The active segment: durable records only.
#[derive(Debug, Clone)]
pub(crate) struct ActiveView {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub file: Arc<dyn LogFile>,
    /// Byte position of each durable record, in index order.
    pub positions: Vec<u64>,
    /// Bytes of the file that are durable records (the write position).
    pub end: u64,
    /// The file's length as the writer left it: past `end` it holds only
    /// zeros, prepared for the next batches.
    pub prepared: u64,
    /// Newest timestamp appended (an upper bound after a truncation).
    pub max_timestamp: u64,
}

impl ActiveView {
    pub fn first(&self) -> u64 {
        self.header.first_index
    }

    pub fn next(&self) -> u64 {
        self.first() + self.positions.len() as u64
    }

    /// Start and end byte of record `index`, which must be in this segment.
    pub fn span(&self, index: u64) -> (u64, u64) {
        let k = (index - self.first()) as usize;
        let end = self.positions.get(k + 1).copied().unwrap_or(self.end);
        (self.positions[k], end)
    }
}

/// Reads one active-segment record with a single pread.
pub(crate) fn read_active(
    file: &dyn LogFile,
    path: &std::path::Path,
    (start, end): (u64, u64),
    index: u64,
    max_payload: u32,
) -> Result<Entry> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| Error::io("pread", path, e))?;
    decode_entry(&buf, path, start, index, max_payload)
}

/// Decodes and checks the record at the start of `bytes`, which must be
/// `index`, found at byte `pos` of `path`.
pub(crate) fn decode_entry(
    bytes: &[u8],
    path: &std::path::Path,
    pos: u64,
    index: u64,
    max_payload: u32,
) -> Result<Entry> {
    let (header, payload) =
        decode_record(bytes, max_payload).map_err(|kind| Error::corruption(path, pos, kind))?;
    if header.index != index {
        let kind = CorruptionKind::IndexGap {
            expected: index,
            found: header.index,
        };
        return Err(Error::corruption(path, pos, kind));
    }
    Ok(Entry {
        index,
        timestamp: header.timestamp,
        chain_hash: header.chain_hash,
        payload: payload.to_vec(),
    })
}

/// Turns an active-segment read error into [`Error::Truncated`] if a
/// truncation ran since the reader took its snapshot (`epoch`).
pub(crate) fn raced(err: Error, truncations: &AtomicU64, epoch: u64, index: u64) -> Error {
    // Acquire pairs with the Release increment in `Log::truncate_*`, which
    // happens before the file is cut.
    if truncations.load(Ordering::Acquire) != epoch {
        Error::Truncated { index }
    } else {
        err
    }
}

/// Bytes of active segment read per pread when iterating.
const READ_CHUNK: u64 = 1 << 20;

/// What an iterator still has to read in one segment.
#[derive(Debug)]
pub(crate) enum Part {
    Sealed {
        seg: Arc<Sealed>,
        /// Byte position of the next record.
        pos: usize,
        /// Last index to read from this segment.
        last: u64,
    },
    Active {
        path: PathBuf,
        file: Arc<dyn LogFile>,
        /// Index of the record whose position is `positions[0]`.
        first: u64,
        /// Positions of the records to read, plus the end of the last one.
        positions: Vec<u64>,
    },
}

/// An iterator over the records of a range, in index order.
///
/// It reads a snapshot of the log taken when it was made; records truncated
/// away while it runs come back as an error, never as wrong data.
#[derive(Debug)]
pub struct Entries {
    pub(crate) parts: VecDeque<Part>,
    pub(crate) next: u64,
    pub(crate) to: u64,
    pub(crate) max_payload: u32,
    /// Active-segment bytes read ahead, starting at file position `buf_at`.
    pub(crate) buf: Vec<u8>,
    pub(crate) buf_at: u64,
    /// The log's truncation counter, and its value when the snapshot was
    /// taken: an active-segment read that fails after a truncation ran is
    /// the truncation's doing, not damage.
    pub(crate) truncations: Arc<AtomicU64>,
    pub(crate) epoch: u64,
}

impl Entries {
    fn next_entry(&mut self) -> Option<Result<Entry>> {
        if self.next >= self.to {
            return None;
        }
        let index = self.next;
        let max_payload = self.max_payload;
        let result = match self.parts.front_mut()? {
            Part::Sealed { seg, pos, last } => {
                let at = *pos;
                let r = decode_entry(
                    &seg.map.bytes()[at..],
                    &seg.path,
                    at as u64,
                    index,
                    max_payload,
                );
                if let Ok(e) = &r {
                    *pos += crate::format::RECORD_HEADER_LEN + e.payload.len();
                    if index == *last {
                        self.parts.pop_front();
                    }
                }
                r
            }
            Part::Active {
                path,
                file,
                first,
                positions,
            } => {
                let k = (index - *first) as usize;
                let (start, end) = (positions[k], positions[k + 1]);
                let buffered = start >= self.buf_at && end <= self.buf_at + self.buf.len() as u64;
                let filled = if buffered {
                    Ok(())
                } else {
                    // Read ahead whole records, up to READ_CHUNK bytes (at
                    // least the one record asked for).
                    let limit = start + READ_CHUNK.max(end - start);
                    let upto = positions[k + 1..].partition_point(|p| *p <= limit);
                    let chunk_end = positions[k + upto];
                    self.buf.resize((chunk_end - start) as usize, 0);
                    self.buf_at = start;
                    file.read_exact_at(&mut self.buf, start)
                        .map_err(|e| Error::io("pread", &*path, e))
                };
                let read = filled.and_then(|()| {
                    let from = (start - self.buf_at) as usize;
                    let to = (end - self.buf_at) as usize;
                    decode_entry(&self.buf[from..to], path, start, index, max_payload)
                });
                read.map_err(|e| raced(e, &self.truncations, self.epoch, index))
            }
        };
        match &result {
            Ok(_) => self.next += 1,
            // Stop after an error: the caller must not see entries past a hole.
            Err(_) => self.next = self.to,
        }
        Some(result)
    }
}

impl Iterator for Entries {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // An error ends the iteration early, so only the upper bound is sure.
        (0, Some((self.to - self.next) as usize))
    }
}
