//! Every decoder of on-disk bytes survives arbitrary input: record and
//! segment-header decoding, the offline verifier and `Log::open` either
//! accept the bytes or name what is wrong — they never panic, hang or
//! allocate without bound. (A property-test stand-in for coverage-guided
//! fuzzing, which needs a nightly toolchain.)

use std::path::Path;
use std::sync::Arc;

use missive_log::format::{
    RECORD_HEADER_LEN, RecordHeader, SegmentHeader, chain_hash, decode_record, encode_record,
    segment_file_name,
};
use missive_log::fs::{FileSystem, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{Error, Log, Options, Record};
use proptest::prelude::*;

fn opts(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// A valid segment of `n` small records, to damage.
fn valid_segment(n: u64) -> Vec<u8> {
    let mut bytes = SegmentHeader {
        first_index: 0,
        prev_hash: [0; 32],
        carried: false,
    }
    .encode()
    .to_vec();
    let mut prev = [0; 32];
    for i in 0..n {
        let payload = vec![i as u8; (i % 7) as usize * 9];
        let hash = chain_hash(&prev, i, 10 + i, &payload);
        let header = RecordHeader {
            payload_len: payload.len() as u32,
            index: i,
            timestamp: 10 + i,
            batch_offset: 0,
            chain_hash: hash,
        };
        encode_record(&mut bytes, &header, &payload);
        prev = hash;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn record_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_record(&bytes, 1 << 20);
        let _ = SegmentHeader::decode(&bytes);
    }

    #[test]
    fn a_length_field_cannot_claim_more_than_the_bound(len in any::<u32>()) {
        let mut bytes = valid_segment(1);
        let at = 64 + 4;
        bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        prop_assert!(decode_record(&bytes[64..], 1 << 20).is_err() || len as usize == bytes.len() - 64 - RECORD_HEADER_LEN);
    }

    #[test]
    fn damaged_segments_are_opened_or_named(
        n in 1u64..12,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = valid_segment(n);
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Some(cut) = cut {
            let len = cut.index(bytes.len() + 1);
            bytes.truncate(len);
        }
        let fs = SimFs::new();
        let dir = Path::new("/log");
        fs.create_dir_all(dir).expect("mkdir");
        fs.write_file(&dir.join(segment_file_name(0)), &bytes);
        let _ = verify_dir(&fs, dir, 1 << 20).expect("verification reads the directory");
        match Log::open(dir, opts(&fs)) {
            Ok(log) => {
                // Whatever survived reads back and takes new appends.
                let state = log.state();
                for e in log.range(state.first_index, state.next_index).expect("range") {
                    e.expect("a record recovery kept reads back");
                }
                log.append(&[Record { timestamp: 1, payload: b"after" }]).expect("append");
            }
            Err(Error::Corruption { position, .. }) => prop_assert!(position <= bytes.len() as u64),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
