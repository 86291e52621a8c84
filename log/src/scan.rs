//! Sequential validation of the records of one segment.
//!
//! Shared by recovery, index rebuilds and the offline verifier, so that all
//! of them agree on what a valid record is: magic, length bound, CRC, the next
//! index in sequence, and (when asked) the hash chain.

use crate::error::CorruptionKind;
use crate::format::{
    ChainHash, RECORD_HEADER_LEN, RECORD_MAGIC, RecordHeader, chain_hash, decode_record,
};

/// Where a scan is: the next expected index and the chain hash before it.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    /// Byte position of the next record.
    pub pos: usize,
    /// Index the next record must carry.
    pub next_index: u64,
    /// Chain hash of the record before it.
    pub prev_hash: ChainHash,
    /// Newest timestamp seen so far.
    pub max_timestamp: u64,
}

/// Why a scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every byte up to the end was a valid record.
    End,
    /// The record at `position` failed a check.
    Bad {
        /// Byte offset of the failed record.
        position: usize,
        /// What failed.
        kind: CorruptionKind,
    },
}

/// Checks records from `cursor.pos` to the end of `bytes`, calling `visit`
/// with each valid one and its position, and advancing the cursor past it.
///
/// Zeros from a record boundary to the end of `bytes` are space prepared
/// for appends (`Options::prepare_bytes`), not a record: the scan ends
/// there, with the cursor at the first zero byte.
pub fn scan(
    bytes: &[u8],
    cursor: &mut Cursor,
    max_payload: u32,
    check_chain: bool,
    mut visit: impl FnMut(&RecordHeader, usize, &[u8]),
) -> Stop {
    while cursor.pos < bytes.len() {
        let position = cursor.pos;
        let (header, payload) = match decode_record(&bytes[position..], max_payload) {
            Ok(r) => r,
            Err(_) if bytes[position..].iter().all(|b| *b == 0) => return Stop::End,
            Err(kind) => return Stop::Bad { position, kind },
        };
        if header.index != cursor.next_index {
            let kind = CorruptionKind::IndexGap {
                expected: cursor.next_index,
                found: header.index,
            };
            return Stop::Bad { position, kind };
        }
        if check_chain {
            let expect = chain_hash(&cursor.prev_hash, header.index, header.timestamp, payload);
            if expect != header.chain_hash {
                return Stop::Bad {
                    position,
                    kind: CorruptionKind::ChainBroken,
                };
            }
        }
        visit(&header, position, payload);
        cursor.pos = position + header.record_len();
        cursor.next_index = header.index + 1;
        cursor.prev_hash = header.chain_hash;
        cursor.max_timestamp = cursor.max_timestamp.max(header.timestamp);
    }
    Stop::End
}

/// After a bad record at `bad_pos` that should have carried `bad_index`,
/// looks further on for a valid record written by a *later* commit batch.
///
/// Batches are written one after another, each only after the previous one's
/// fdatasync returned, so a later batch on disk proves the bad record's batch
/// was acknowledged: the damage is corruption, not a torn write. Records of
/// the same batch after the bad one prove nothing (a crash can persist a
/// batch's sectors in any order), so they still count as a torn tail.
pub fn later_batch_after(bytes: &[u8], bad_pos: usize, bad_index: u64, max_payload: u32) -> bool {
    valid_record_after(bytes, bad_pos + 1, max_payload, |h| {
        h.index > bad_index && h.batch_first() > bad_index
    })
}

/// Whether any valid record follows a segment header that failed its
/// checks.
///
/// A segment receives records only after its header is durable, so any
/// record at all — even one of the segment's first batch — proves the header
/// was written whole and has been damaged since: corruption. Only a segment
/// with no valid record is a creation a crash cut short. (`later_batch_after`
/// cannot answer this: in a log's first segment the records of the first
/// batch carry index 0 and batch offset from 0, which no "later batch" test
/// relative to index 0 matches, so a damaged header in front of them was
/// taken for an unborn segment and the acknowledged records were deleted.)
pub fn record_after_bad_header(bytes: &[u8], max_payload: u32) -> bool {
    valid_record_after(bytes, 0, max_payload, |_| true)
}

/// Whether a valid record (magic, length bound, CRC) matching `wanted`
/// starts at some byte at or after `from`. Every byte is tried: after damage,
/// where records start is unknown.
fn valid_record_after(
    bytes: &[u8],
    from: usize,
    max_payload: u32,
    mut wanted: impl FnMut(&RecordHeader) -> bool,
) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut pos = from;
    while pos + RECORD_HEADER_LEN <= bytes.len() {
        if bytes[pos + 28..pos + 30] == magic
            && let Ok((header, _)) = decode_record(&bytes[pos..], max_payload)
            && wanted(&header)
        {
            return true;
        }
        pos += 1;
    }
    false
}
