//! Logs that continued a hash chain carried in by a purge beyond the end
//! stay readable, and this code still writes them byte for byte.
//!
//! `tests/fixtures/v1-carried/` is a log directory committed as binary
//! files: four records, then a purge beyond the end to index 9 carrying a
//! chain hash, then four more records. It holds the shapes that purge
//! introduced: a segment header with the carried flag set after a gap, and
//! the 64-byte version 2 metadata file holding the carried hash. One test
//! opens a copy and checks every record's chain hash against the carried
//! one, and that `verify` accepts the gap; the other writes the same log
//! today and requires byte-identical files.
//!
//! To regenerate after a *deliberate* change of these shapes (there should
//! be none once shipped), run `MISSIVE_REGENERATE_FIXTURES=1 cargo test -p
//! missive-log --test log fixture_carried::`.

use std::path::{Path, PathBuf};

use missive_log::format::chain_hash;
use missive_log::verify::verify_dir;
use missive_log::{ChainHash, Error, GENESIS_HASH, Log, Options, Record, Recovery};

/// Records before the jump.
const BEFORE: u64 = 4;
/// The purge point the log jumps to.
const JUMP_TO: u64 = 9;
/// The first index after the records that follow the jump.
const END: u64 = 14;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-carried")
}

fn timestamp(i: u64) -> u64 {
    1_700_000_000_000 + i * 1_000
}

fn payload(i: u64) -> Vec<u8> {
    format!("carried fixture record {i}").into_bytes()
}

/// The hash carried in: that of record 9 in a history this log never held.
fn carried() -> ChainHash {
    chain_hash(
        &GENESIS_HASH,
        JUMP_TO,
        timestamp(JUMP_TO),
        b"held elsewhere",
    )
}

fn options() -> Options {
    Options {
        segment_bytes: 512,
        index_interval_bytes: 128,
        ..Options::default()
    }
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg") || n.ends_with(".idx") || n == "meta")
        .collect();
    names.sort();
    names
}

fn append(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        let p = payload(i);
        log.append_at(
            i,
            &[Record {
                timestamp: timestamp(i),
                payload: &p,
            }],
        )
        .expect("append");
    }
}

fn write_fixture_log(dir: &Path) {
    let log = Log::open(dir, options()).expect("open");
    append(&log, 0..BEFORE);
    log.purge_with_hash(JUMP_TO, carried()).expect("jump");
    append(&log, JUMP_TO + 1..END);
}

#[test]
fn the_carried_fixture_opens_continues_its_chain_and_verifies() {
    for recovery in [Recovery::TailOnly, Recovery::Full] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = log_files(&fixture_dir());
        assert!(files.contains(&"meta".to_string()), "the fixture exists");
        for name in files {
            std::fs::copy(fixture_dir().join(&name), tmp.path().join(&name)).expect("copy");
        }
        assert_eq!(
            std::fs::metadata(tmp.path().join("meta"))
                .expect("meta")
                .len(),
            64,
            "the metadata holds the carried hash (version 2)"
        );
        let log = Log::open(
            tmp.path(),
            Options {
                recovery,
                ..options()
            },
        )
        .expect("the fixture opens");
        let state = log.state();
        assert_eq!((state.first_index, state.next_index), (JUMP_TO + 1, END));
        assert_eq!(log.chain_hash_at(JUMP_TO).expect("purge point"), carried());
        assert!(matches!(log.read(JUMP_TO), Err(Error::Purged { .. })));
        let mut chain = carried();
        for i in JUMP_TO + 1..END {
            chain = chain_hash(&chain, i, timestamp(i), &payload(i));
            let e = log.read(i).expect("read");
            assert_eq!((e.index, e.payload), (i, payload(i)));
            assert_eq!(e.chain_hash, chain, "chain hash of record {i}");
        }
        assert_eq!(state.head_hash, chain);

        let report = verify_dir(
            &missive_log::fs::StdFs,
            tmp.path(),
            options().max_record_bytes,
        )
        .expect("verify");
        assert_eq!(report.problem, None);
        assert_eq!(report.purge_point, Some(JUMP_TO + 1));
        assert_eq!(report.records(), BEFORE + (END - JUMP_TO - 1));
        assert_eq!(
            report
                .segments
                .iter()
                .map(|s| s.carried)
                .collect::<Vec<_>>(),
            vec![false, true]
        );
        assert_eq!(report.head_hash(), Some(chain));
    }
}

#[test]
fn writing_the_carried_fixture_today_produces_identical_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_fixture_log(tmp.path());
    let written = log_files(tmp.path());
    if std::env::var_os("MISSIVE_REGENERATE_FIXTURES").is_some_and(|v| v == "1") {
        let dir = fixture_dir();
        std::fs::create_dir_all(&dir).expect("create fixture dir");
        for name in log_files(&dir) {
            std::fs::remove_file(dir.join(name)).expect("remove old fixture file");
        }
        for name in &written {
            std::fs::copy(tmp.path().join(name), dir.join(name)).expect("write fixture file");
        }
        eprintln!("regenerated {}", dir.display());
    }
    assert_eq!(written, log_files(&fixture_dir()), "the same files");
    for name in &written {
        let today = std::fs::read(tmp.path().join(name)).expect("read");
        let fixture = std::fs::read(fixture_dir().join(name)).expect("read fixture");
        assert!(
            crate::fixture::same_but_prepared(&today, &fixture),
            "{name} differs from the carried fixture: the on-disk format changed"
        );
    }
}
