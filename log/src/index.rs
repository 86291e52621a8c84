//! The sparse index of a sealed segment: a cache of (index → byte position).
//!
//! Written when a segment is sealed, next to it as `<first>.idx`, and rebuilt
//! from the segment whenever it is missing, fails its CRC, or describes a
//! segment of a different length. It also carries what opening the log needs
//! without reading the segment: last index, last chain hash and the newest
//! timestamp. Because it is a cache it is not fsynced: after a crash a torn
//! index fails its CRC and is rebuilt.

use crate::format::{ChainHash, hash_at, u32_at, u64_at};

const MAGIC: [u8; 8] = *b"MSVLOGIX";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 88;
const ENTRY_LEN: usize = 16;

/// What a sealed segment's index file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    /// First record index of the segment.
    pub first_index: u64,
    /// Length in bytes of the segment file this index describes.
    pub segment_len: u64,
    /// Index of the segment's last record.
    pub last_index: u64,
    /// Newest record timestamp in the segment (for retention by age).
    pub max_timestamp: u64,
    /// Chain hash of the segment's last record.
    pub last_hash: ChainHash,
    /// Sparse (index, byte position) pairs, ascending; the first record is
    /// always present.
    pub entries: Vec<(u64, u64)>,
}

impl SegmentIndex {
    /// Serializes the index with a trailing CRC32.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.entries.len() * ENTRY_LEN + 4);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&self.first_index.to_le_bytes());
        b.extend_from_slice(&self.segment_len.to_le_bytes());
        b.extend_from_slice(&self.last_index.to_le_bytes());
        b.extend_from_slice(&self.max_timestamp.to_le_bytes());
        b.extend_from_slice(&self.last_hash);
        b.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (index, pos) in &self.entries {
            b.extend_from_slice(&index.to_le_bytes());
            b.extend_from_slice(&pos.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses an index file; `None` if it is not a valid index (a cache miss,
    /// not an error: the caller rebuilds it).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_LEN + 4 || b[0..8] != MAGIC {
            return None;
        }
        let body = &b[..b.len() - 4];
        if crc32fast::hash(body) != u32_at(b, b.len() - 4) {
            return None;
        }
        if u16::from_le_bytes([b[8], b[9]]) != VERSION {
            return None;
        }
        let n = usize::try_from(u64_at(b, 80)).ok()?;
        if body.len() != HEADER_LEN + n.checked_mul(ENTRY_LEN)? {
            return None;
        }
        let entries = (0..n)
            .map(|i| {
                let at = HEADER_LEN + i * ENTRY_LEN;
                (u64_at(b, at), u64_at(b, at + 8))
            })
            .collect();
        Some(SegmentIndex {
            first_index: u64_at(b, 16),
            segment_len: u64_at(b, 24),
            last_index: u64_at(b, 32),
            max_timestamp: u64_at(b, 40),
            last_hash: hash_at(b, 48),
            entries,
        })
    }

    /// The greatest sparse entry at or before `index`: where a scan for
    /// `index` starts.
    pub fn seek(&self, index: u64) -> (u64, u64) {
        let at = self.entries.partition_point(|(i, _)| *i <= index);
        self.entries[at.saturating_sub(1)]
    }
}

/// Builds the sparse entries: one every `interval` bytes of segment.
#[derive(Debug)]
pub struct SparseBuilder {
    interval: u64,
    last_pos: Option<u64>,
    entries: Vec<(u64, u64)>,
}

impl SparseBuilder {
    /// A builder taking an entry at least every `interval` bytes.
    pub fn new(interval: u64) -> Self {
        SparseBuilder {
            interval,
            last_pos: None,
            entries: Vec::new(),
        }
    }

    /// Notes that record `index` starts at byte `pos`.
    pub fn push(&mut self, index: u64, pos: u64) {
        match self.last_pos {
            Some(last) if pos - last < self.interval => {}
            _ => {
                self.entries.push((index, pos));
                self.last_pos = Some(pos);
            }
        }
    }

    /// The entries collected.
    pub fn finish(self) -> Vec<(u64, u64)> {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            first_index: 10,
            segment_len: 9000,
            last_index: 99,
            max_timestamp: 5,
            last_hash: [7; 32],
            entries: vec![(10, 64), (40, 4200), (80, 8300)],
        }
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let idx = sample();
        let bytes = idx.encode();
        assert_eq!(SegmentIndex::decode(&bytes), Some(idx));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(SegmentIndex::decode(&bad), None, "flip at {i} accepted");
        }
        assert_eq!(SegmentIndex::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn seek_finds_the_entry_at_or_before() {
        let idx = sample();
        assert_eq!(idx.seek(10), (10, 64));
        assert_eq!(idx.seek(39), (10, 64));
        assert_eq!(idx.seek(40), (40, 4200));
        assert_eq!(idx.seek(99), (80, 8300));
    }

    #[test]
    fn builder_spaces_entries_by_bytes() {
        let mut b = SparseBuilder::new(100);
        for (i, pos) in [(1, 64), (2, 120), (3, 170), (4, 200), (5, 400)] {
            b.push(i, pos);
        }
        assert_eq!(b.finish(), vec![(1, 64), (3, 170), (5, 400)]);
    }
}
