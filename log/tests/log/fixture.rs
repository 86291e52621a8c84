//! Logs written in format version 1 stay readable, and this code still
//! writes them byte for byte.
//!
//! `tests/fixtures/v1/` is a small log directory committed as binary files:
//! ten records with fixed timestamps and payloads (one empty) in commit
//! batches of different sizes, three segments with their sparse indexes, and
//! a purge point. One test opens a copy of it and checks every record, the
//! purge point and the head hash (hard-coded below); the other writes the same
//! records today and requires byte-identical files. A change to the on-disk
//! format fails them: it then needs a new format version and a new fixture
//! directory, while this one stays to prove old logs still open.
//!
//! To regenerate the fixture after a *deliberate* change of version 1 (there
//! should be none once it has shipped), run
//! `MISSIVE_REGENERATE_FIXTURES=1 cargo test -p missive-log --test log fixture::`
//! and update `HEAD_HASH_HEX` from the printed value. Without the variable
//! the tests only compare.

use std::path::{Path, PathBuf};

use missive_log::format::chain_hash;
use missive_log::verify::verify_dir;
use missive_log::{Error, GENESIS_HASH, Log, Options, Record, Recovery};

const HEAD_HASH_HEX: &str = "ec9e4f8ef4448fbf230281159daa713ebfc558a31f9eafd30d119ec501ed40b3";

/// Records per commit batch, in order.
const BATCHES: [usize; 6] = [1, 2, 1, 3, 1, 2];
/// Everything up to this index is purged.
const PURGED_UP_TO: u64 = 2;
const SEGMENT_BYTES: u64 = 512;
const INDEX_INTERVAL_BYTES: u64 = 128;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn timestamp(i: u64) -> u64 {
    1_700_000_000_000 + i * 1_000
}

fn payload(i: u64) -> Vec<u8> {
    if i == 4 {
        return Vec::new();
    }
    format!("fixture record {i}: {}", "missive ".repeat(i as usize % 4)).into_bytes()
}

fn records() -> u64 {
    BATCHES.iter().sum::<usize>() as u64
}

fn options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: INDEX_INTERVAL_BYTES,
        ..Options::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files that make up a log directory (not its lock file), sorted.
fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg") || n.ends_with(".idx") || n == "meta")
        .collect();
    names.sort();
    names
}

/// Writes the fixture's records and purge point into `dir`.
fn write_fixture_log(dir: &Path) {
    let log = Log::open(dir, options()).expect("open");
    let mut index = 0;
    for n in BATCHES {
        let payloads: Vec<_> = (index..index + n as u64).map(payload).collect();
        let batch: Vec<_> = payloads
            .iter()
            .zip(index..)
            .map(|(p, i)| Record {
                timestamp: timestamp(i),
                payload: p,
            })
            .collect();
        assert_eq!(log.append(&batch).expect("append"), index..index + n as u64);
        index += n as u64;
    }
    log.purge(PURGED_UP_TO).expect("purge");
    assert_eq!(log.segments().len(), 3, "the fixture spans three segments");
}

fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = log_files(&fixture_dir());
    assert!(
        !files.is_empty(),
        "the fixture exists at {}",
        fixture_dir().display()
    );
    for name in files {
        std::fs::copy(fixture_dir().join(&name), tmp.path().join(&name)).expect("copy");
    }
    tmp
}

#[test]
fn the_v1_fixture_opens_with_every_record_the_purge_point_and_the_head_hash() {
    for recovery in [Recovery::TailOnly, Recovery::Full] {
        let tmp = copy_fixture();
        let log = Log::open(
            tmp.path(),
            Options {
                recovery,
                ..options()
            },
        )
        .expect("the fixture opens");
        let report = log.recovery_report();
        assert_eq!(report.torn_tail, None);
        if recovery == Recovery::TailOnly {
            assert!(
                report.rebuilt_indexes.is_empty(),
                "the v1 index files are read as they are"
            );
        }
        let state = log.state();
        assert_eq!(
            (state.first_index, state.next_index),
            (PURGED_UP_TO + 1, records())
        );
        assert_eq!(hex(&state.head_hash), HEAD_HASH_HEX, "head hash");
        assert!(matches!(log.read(PURGED_UP_TO), Err(Error::Purged { .. })));

        let mut chain = GENESIS_HASH;
        for i in 0..records() {
            chain = chain_hash(&chain, i, timestamp(i), &payload(i));
            if i <= PURGED_UP_TO {
                continue;
            }
            let e = log.read(i).expect("read");
            assert_eq!(
                (e.index, e.timestamp, e.payload),
                (i, timestamp(i), payload(i)),
                "record {i}"
            );
            assert_eq!(e.chain_hash, chain, "chain hash of record {i}");
        }
        assert_eq!(chain, state.head_hash);

        let verified = verify_dir(
            &missive_log::fs::StdFs,
            tmp.path(),
            options().max_record_bytes,
        )
        .expect("verify");
        assert_eq!(verified.problem, None);
        assert_eq!(verified.purge_point, Some(PURGED_UP_TO + 1));
        assert_eq!(
            verified.records(),
            records(),
            "purged records are still on disk"
        );
        assert_eq!(verified.head_hash(), Some(state.head_hash));
    }
}

#[test]
fn writing_the_fixture_records_today_produces_identical_files() {
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
        let head = Log::open(tmp.path(), options())
            .expect("open")
            .state()
            .head_hash;
        eprintln!(
            "regenerated {}; set HEAD_HASH_HEX = \"{}\"",
            dir.display(),
            hex(&head)
        );
    }

    assert_eq!(written, log_files(&fixture_dir()), "the same files");
    for name in &written {
        let today = std::fs::read(tmp.path().join(name)).expect("read");
        let fixture = std::fs::read(fixture_dir().join(name)).expect("read fixture");
        assert!(
            same_but_prepared(&today, &fixture),
            "{name} differs from the v1 fixture: the on-disk format changed"
        );
    }
}

/// Whether a file written today holds the same bytes as its fixture, but
/// for zeros after them: the space the active segment keeps prepared for
/// appends, which files written before it existed do not have.
pub(crate) fn same_but_prepared(today: &[u8], fixture: &[u8]) -> bool {
    today.len() >= fixture.len()
        && today[..fixture.len()] == *fixture
        && today[fixture.len()..].iter().all(|b| *b == 0)
}
