//! The on-disk format: segment headers, record headers and the hash chain.
//!
//! Every integer is little-endian and fixed-width; docs/log-format.md documents
//! each byte. This module only encodes and decodes: it does no I/O, so the
//! recovery scanner, the offline verifier and the writer share one definition.

use crate::error::CorruptionKind;

/// The 32-byte BLAKE3 chain hash that links each record to the one before it.
pub type ChainHash = [u8; 32];

/// The chain hash that precedes the first record a log ever holds.
pub const GENESIS_HASH: ChainHash = [0; 32];

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MSVLOGSG";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Segment header flag: the previous hash was carried in by a purge beyond
/// the end (from a snapshot of the history this log replicates), not
/// computed from the segment before. It marks the gap before the segment as
/// intended. A reader that predates the flag ignores it and reads the
/// segment alike.
pub const SEGMENT_FLAG_CARRIED: u16 = 1 << 0;

/// Magic in every record header: makes a zero-filled or misaligned region fail
/// fast before its CRC is computed.
pub const RECORD_MAGIC: u16 = 0x4D52; // "RM"
/// Bytes of a record header; the payload follows it.
pub const RECORD_HEADER_LEN: usize = 64;

/// The header at offset 0 of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the first record this segment holds (also in its file name).
    pub first_index: u64,
    /// Chain hash of the record before `first_index`, so a segment can be
    /// verified on its own and the chain survives deletion of older segments.
    pub prev_hash: ChainHash,
    /// Whether `prev_hash` was carried in by a purge beyond the end (flag
    /// [`SEGMENT_FLAG_CARRIED`]): the segment continues a chain whose
    /// records before it were never in this log.
    pub carried: bool,
}

impl SegmentHeader {
    /// Encodes the header: magic, version, flags, reserved, first index,
    /// previous chain hash, reserved, CRC32 of bytes 0..60.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.carried {
            SEGMENT_FLAG_CARRIED
        } else {
            0
        };
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        // 12..16: reserved, zero.
        b[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        b[24..56].copy_from_slice(&self.prev_hash);
        // 56..60: reserved, zero.
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a segment header.
    pub fn decode(b: &[u8]) -> Result<Self, CorruptionKind> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(CorruptionKind::ShortSegmentHeader);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(CorruptionKind::BadSegmentMagic);
        }
        let stored = u32_at(b, 60);
        if crc32fast::hash(&b[0..60]) != stored {
            return Err(CorruptionKind::SegmentHeaderChecksum);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(CorruptionKind::UnsupportedVersion(version));
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags & !SEGMENT_FLAG_CARRIED != 0 {
            // A flag this code does not know may change what the segment
            // means: refuse rather than guess.
            return Err(CorruptionKind::UnknownSegmentFlags(flags));
        }
        Ok(SegmentHeader {
            first_index: u64_at(b, 16),
            prev_hash: hash_at(b, 24),
            carried: flags & SEGMENT_FLAG_CARRIED != 0,
        })
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// The record's log index.
    pub index: u64,
    /// Caller-supplied timestamp, milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Position of this record in the commit batch it was written with
    /// (0 for the first). Recovery uses it to tell a torn last batch from
    /// corruption of an earlier, acknowledged one. Not part of the chain hash:
    /// replicas batch differently but must agree on the chain.
    pub batch_offset: u32,
    /// BLAKE3(previous chain hash ‖ index ‖ timestamp ‖ payload).
    pub chain_hash: ChainHash,
}

impl RecordHeader {
    /// Index of the first record of this record's commit batch.
    pub fn batch_first(&self) -> u64 {
        self.index.saturating_sub(u64::from(self.batch_offset))
    }

    /// Total bytes the record takes on disk.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len as usize
    }
}

/// Writes a complete record (header and payload) to the end of `out`.
///
/// The CRC covers header bytes 4..64 and the payload, so every header field
/// and the chain hash are protected.
pub fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    debug_assert_eq!(header.payload_len as usize, payload.len());
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    out.extend_from_slice(payload);
    let record = &mut out[start..];
    record[4..8].copy_from_slice(&header.payload_len.to_le_bytes());
    record[16..24].copy_from_slice(&header.timestamp.to_le_bytes());
    record[28..30].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    record[30] = FORMAT_VERSION as u8;
    // record[31]: flags, zero in version 1.
    seal_record(
        record,
        header.index,
        header.batch_offset,
        &header.chain_hash,
    );
}

/// Fills in a record's position fields — index, batch offset, chain hash —
/// and its CRC, in place. `record` is exactly one encoded record. The commit
/// path uses it to place records that appenders encoded before their index
/// was known, without copying payloads again.
pub fn seal_record(record: &mut [u8], index: u64, batch_offset: u32, chain_hash: &ChainHash) {
    record[8..16].copy_from_slice(&index.to_le_bytes());
    record[24..28].copy_from_slice(&batch_offset.to_le_bytes());
    record[32..64].copy_from_slice(chain_hash);
    let crc = crc32fast::hash(&record[4..]);
    record[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `b`, checking magic, length and CRC.
///
/// `max_payload` bounds the length field so a corrupted length cannot make
/// the reader allocate or scan gigabytes. Returns the header and the payload.
pub fn decode_record(b: &[u8], max_payload: u32) -> Result<(RecordHeader, &[u8]), CorruptionKind> {
    let header = decode_record_header(b, max_payload)?;
    let end = header.record_len();
    if b.len() < end {
        return Err(CorruptionKind::ShortRecord);
    }
    let stored = u32_at(b, 0);
    if crc32fast::hash(&b[4..end]) != stored {
        return Err(CorruptionKind::RecordChecksum);
    }
    Ok((header, &b[RECORD_HEADER_LEN..end]))
}

/// Decodes a record header without checking the CRC (which needs the payload).
pub fn decode_record_header(b: &[u8], max_payload: u32) -> Result<RecordHeader, CorruptionKind> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(CorruptionKind::ShortRecord);
    }
    if u16::from_le_bytes([b[28], b[29]]) != RECORD_MAGIC {
        return Err(CorruptionKind::BadRecordMagic);
    }
    if u16::from(b[30]) != FORMAT_VERSION {
        return Err(CorruptionKind::UnsupportedVersion(u16::from(b[30])));
    }
    let payload_len = u32_at(b, 4);
    if payload_len > max_payload {
        return Err(CorruptionKind::LengthOutOfBounds(payload_len));
    }
    Ok(RecordHeader {
        payload_len,
        index: u64_at(b, 8),
        timestamp: u64_at(b, 16),
        batch_offset: u32_at(b, 24),
        chain_hash: hash_at(b, 32),
    })
}

/// The chain hash of a record: BLAKE3(prev ‖ index LE ‖ timestamp LE ‖ payload).
pub fn chain_hash(prev: &ChainHash, index: u64, timestamp: u64, payload: &[u8]) -> ChainHash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(&index.to_le_bytes());
    h.update(&timestamp.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

pub(crate) fn hash_at(b: &[u8], at: usize) -> ChainHash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[at..at + 32]);
    h
}

/// The file name of the segment whose first record is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}.seg")
}

/// The file name of the sparse index of that segment.
pub fn index_file_name(first_index: u64) -> String {
    format!("{first_index:020}.idx")
}

/// Parses a segment file name back into its first index.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_every_flipped_byte_is_caught() {
        let payload = b"hello, log";
        let header = RecordHeader {
            payload_len: payload.len() as u32,
            index: 42,
            timestamp: 1_700_000_000_000,
            batch_offset: 3,
            chain_hash: chain_hash(&GENESIS_HASH, 42, 1_700_000_000_000, payload),
        };
        let mut buf = Vec::new();
        encode_record(&mut buf, &header, payload);
        let (decoded, body) = decode_record(&buf, 1024).expect("valid record decodes");
        assert_eq!(decoded, header);
        assert_eq!(body, payload);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_record(&bad, 1024).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let h = SegmentHeader {
            first_index: 7,
            prev_hash: [9; 32],
            carried: false,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let carried = SegmentHeader { carried: true, ..h };
        assert_eq!(SegmentHeader::decode(&carried.encode()), Ok(carried));
        let mut bad = h.encode();
        bad[20] ^= 0xFF;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(CorruptionKind::SegmentHeaderChecksum)
        );
    }

    #[test]
    fn unknown_segment_flags_are_refused() {
        let mut b = SegmentHeader {
            first_index: 7,
            prev_hash: [9; 32],
            carried: false,
        }
        .encode();
        b[10] = 0x02;
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(CorruptionKind::UnknownSegmentFlags(2))
        );
    }

    #[test]
    fn segment_names_sort_by_index() {
        assert_eq!(segment_file_name(12), "00000000000000000012.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000012.seg"),
            Some(12)
        );
        assert_eq!(parse_segment_file_name("12.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000012.idx"), None);
    }
}
