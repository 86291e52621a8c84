//! The log behaves like a plain vector of acknowledged records, whatever
//! happens to it.
//!
//! A property test runs random sequences of appends (batches of 1–4 records
//! of 0–300 bytes, empty payloads included), `append_at` with right and wrong
//! indexes, oversized records, `truncate_after` / `truncate_from`, purges
//! (beyond the end too), retention, reads, ranges, reopens, and crashes on the
//! simulated disk. A crash may follow an append, truncation or purge that an
//! injected fault made fail part-way, and keeps a random torn prefix of
//! whatever was not synced. Segments are small, so they roll, get sealed,
//! truncated into and deleted by retention all the time.
//!
//! The model is a `Vec` of acknowledged (index, timestamp, payload) plus the
//! first visible index. After every step the log must equal it: the same
//! first and next index; every visible record read back equal through
//! `read`, `read_recent` and `range`, with the chain hash the model computes;
//! reads outside the visible range refused with the right error; the head
//! hash equal to the chain recomputed from the model; the segment list
//! contiguous and each file exactly as long as the log says; and
//! `verify_dir` finding no problem on disk, with the same head hash and
//! purge point.
//!
//! After a failed operation and a crash the log may hold any state that
//! operation could have left (a prefix of the failed batch, a truncation done
//! down to some point, a purge done or not). The model checks the log is in
//! one of those states, adopts it, and every check above then holds.

use std::path::Path;
use std::sync::Arc;

use missive_log::format::chain_hash;
use missive_log::fs::{Fault, SimFs};
use missive_log::verify::verify_dir;
use missive_log::{ChainHash, Error, GENESIS_HASH, Log, Options, Record, Recovery, Retention};
use proptest::prelude::*;
use proptest::test_runner::Config;

const DIR: &str = "/log";
const MAX_RECORD: u32 = 300;

/// A record as the model stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    timestamp: u64,
    payload: Vec<u8>,
}

/// An operation that an injected fault can make fail part-way.
#[derive(Clone, Debug)]
enum Mutation {
    Append(Vec<Rec>),
    TruncateFrom(u16),
    Purge(u16),
}

/// The `u16` selectors pick an index around the visible range (see `pick`).
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Rec>),
    /// `append_at(next + skew)`: only a skew of 0 may succeed.
    AppendAt {
        skew: i8,
        records: Vec<Rec>,
    },
    AppendTooLarge,
    TruncateAfter(u16),
    TruncateFrom(u16),
    Purge(u16),
    ApplyRetention,
    Read(u16),
    Range(u16, u16),
    Reopen(Recovery),
    Crash {
        /// A fault injected into an operation run just before the crash:
        /// the fault strikes after `skip` calls of its kind succeeded.
        failing: Option<(Fault, u32, Mutation)>,
        /// Per mille of each file's unsynced bytes the crash keeps.
        keep_permille: u16,
        recovery: Recovery,
    },
}

/// Parameters of one run.
#[derive(Clone, Debug)]
struct Setup {
    initial_index: u64,
    segment_bytes: u64,
    index_interval_bytes: u64,
    max_total_bytes: Option<u64>,
}

/// What the log acknowledged.
#[derive(Debug)]
struct Model {
    /// Index of `records[0]`.
    base: u64,
    /// Chain hash before `records[0]`: the genesis hash, both for a new log
    /// and after a purge beyond the end restarted the chain.
    base_hash: ChainHash,
    /// Every acknowledged record from `base` on, purged ones included.
    records: Vec<Rec>,
    /// The first visible index.
    first: u64,
}

/// What a failed operation followed by a crash may have left.
#[derive(Debug)]
enum Aftermath {
    /// Exactly the acknowledged state.
    Exact,
    /// Acknowledged records plus a prefix of this unacknowledged batch.
    AppendPrefix(Vec<Rec>),
    /// The log cut anywhere between this next index and the model's.
    TruncatedDownTo(u64),
    /// Either nothing happened or `purge(up_to)` happened.
    Purged(u64),
}

impl Model {
    fn next(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    fn get(&self, index: u64) -> &Rec {
        &self.records[(index - self.base) as usize]
    }

    /// The chain hash after each record, recomputed from scratch.
    fn chain(&self) -> Vec<ChainHash> {
        let mut h = self.base_hash;
        let mut out = Vec::with_capacity(self.records.len());
        for (k, r) in self.records.iter().enumerate() {
            h = chain_hash(&h, self.base + k as u64, r.timestamp, &r.payload);
            out.push(h);
        }
        out
    }

    fn head(&self) -> ChainHash {
        self.chain().last().copied().unwrap_or(self.base_hash)
    }

    /// An index from two below the first visible one to one past the next,
    /// so every edge (purged, first, last, next, beyond) gets hit.
    fn pick(&self, sel: u16) -> u64 {
        let lo = self.first.saturating_sub(2);
        let hi = self.next() + 1;
        lo + u64::from(sel) % (hi - lo + 1)
    }

    fn append(&mut self, recs: &[Rec]) {
        self.records.extend_from_slice(recs);
    }

    /// What `truncate_from(keep)` leaves: `Err` if it must be refused as
    /// reaching into purged records.
    fn truncate_from(&mut self, keep: u64) -> Result<(), ()> {
        if keep >= self.next() {
            Ok(())
        } else if keep < self.first {
            Err(())
        } else {
            self.records.truncate((keep - self.base) as usize);
            Ok(())
        }
    }

    /// What `purge(up_to)` does: moves the first visible index, and beyond
    /// the end continues the log there with a fresh chain.
    fn purge(&mut self, up_to: u64) {
        if up_to < self.first {
            return;
        }
        if up_to >= self.next() {
            self.base = up_to + 1;
            self.base_hash = GENESIS_HASH;
            self.records.clear();
        }
        self.first = up_to + 1;
    }
}

fn records(recs: &[Rec]) -> Vec<Record<'_>> {
    recs.iter()
        .map(|r| Record {
            timestamp: r.timestamp,
            payload: &r.payload,
        })
        .collect()
}

fn options(fs: &SimFs, setup: &Setup, recovery: Recovery) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        segment_bytes: setup.segment_bytes,
        max_record_bytes: MAX_RECORD,
        index_interval_bytes: setup.index_interval_bytes,
        initial_index: setup.initial_index,
        recovery,
        retention: Retention {
            max_age_ms: None,
            max_total_bytes: setup.max_total_bytes,
        },
        ..Options::default()
    }
}

fn open(fs: &SimFs, setup: &Setup, recovery: Recovery) -> Log {
    match Log::open(DIR, options(fs, setup, recovery)) {
        Ok(log) => log,
        Err(e) => panic!("a log the model accepts reopens: {e}"),
    }
}

fn assert_poisoned<T: std::fmt::Debug>(r: missive_log::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(Error::Poisoned { .. })),
        "{what} after a failure: {r:?}"
    );
}

/// Every observable property of the log equals the model.
fn check(log: &Log, model: &Model, fs: &SimFs) {
    let state = log.state();
    assert_eq!(state.first_index, model.first, "first visible index");
    assert_eq!(state.next_index, model.next(), "next index");
    assert_eq!(
        state.head_hash,
        model.head(),
        "head hash vs the chain of the model"
    );

    for i in model.first..model.next() {
        let want = model.get(i);
        for (how, got) in [("read", log.read(i)), ("read_recent", log.read_recent(i))] {
            let got = got.unwrap_or_else(|e| panic!("{how}({i}): {e}"));
            assert_eq!(got.index, i, "{how}({i})");
            assert_eq!(got.timestamp, want.timestamp, "{how}({i}) timestamp");
            assert_eq!(got.payload, want.payload, "{how}({i}) payload");
        }
    }
    let all: Vec<_> = log
        .range(model.first, model.next())
        .expect("the visible range is readable")
        .collect::<Result<_, _>>()
        .expect("every visible record reads");
    assert_eq!(all.len() as u64, model.next() - model.first);
    let chain = model.chain();
    for (e, i) in all.iter().zip(model.first..) {
        let want = model.get(i);
        assert_eq!(e.index, i, "range yields indexes in order");
        assert_eq!(
            (e.timestamp, &e.payload),
            (want.timestamp, &want.payload),
            "range at {i}"
        );
        assert_eq!(
            e.chain_hash,
            chain[(i - model.base) as usize],
            "chain hash of {i}"
        );
    }
    if model.first > 0 {
        let below = model.first - 1;
        assert!(
            matches!(log.read(below), Err(Error::Purged { .. })),
            "read below the first visible"
        );
    }
    assert!(
        matches!(log.read(model.next()), Err(Error::BeyondEnd { .. })),
        "read at next"
    );

    let segs = log.segments();
    let (active, sealed) = segs
        .split_last()
        .expect("a log always has an active segment");
    assert!(
        !active.sealed && sealed.iter().all(|s| s.sealed),
        "only the last segment is active"
    );
    assert!(
        segs[0].first_index <= model.first,
        "visible records are still on disk"
    );
    assert_eq!(active.next_index, model.next());
    for pair in segs.windows(2) {
        assert!(
            pair[0].next_index > pair[0].first_index,
            "no sealed segment is empty"
        );
        // The only gap allowed is the one a purge beyond the end leaves, and
        // it lies wholly in the purged range.
        let contiguous = pair[0].next_index == pair[1].first_index;
        let jumped = pair[0].next_index < pair[1].first_index && pair[1].first_index <= model.first;
        assert!(contiguous || jumped, "segments {pair:?} are contiguous");
    }
    for s in &segs {
        let on_disk = fs.read_file(&s.path).expect("a listed segment exists");
        if s.sealed {
            assert_eq!(
                on_disk.len() as u64,
                s.bytes,
                "{} holds nothing but its records",
                s.path.display()
            );
        } else {
            // The active segment's records may be followed by zeros prepared
            // for appends, and by nothing else.
            assert!(
                on_disk.len() as u64 >= s.bytes
                    && on_disk[s.bytes as usize..].iter().all(|b| *b == 0),
                "{} holds its records, then only zeros",
                s.path.display()
            );
        }
    }

    let report = verify_dir(fs, Path::new(DIR), MAX_RECORD).expect("verify reads the directory");
    assert_eq!(report.problem, None, "verify_dir finds no problem");
    assert_eq!(
        report.head_hash(),
        Some(state.head_hash),
        "verify_dir head hash"
    );
    let on_disk: Vec<_> = report
        .segments
        .iter()
        .map(|s| (&s.path, s.first_index, s.records))
        .collect();
    let listed: Vec<_> = segs
        .iter()
        .map(|s| (&s.path, s.first_index, s.next_index - s.first_index))
        .collect();
    assert_eq!(
        on_disk, listed,
        "the files on disk are the segments the log lists"
    );
    // Without a purge point the log starts at its oldest segment.
    let first = report.purge_point.unwrap_or(segs[0].first_index);
    assert_eq!(first, model.first, "durable purge point");
}

/// After a purge that moved the purge point, or an explicit retention pass,
/// the policy has deleted every purged sealed segment it does not keep.
fn check_retention_applied(log: &Log, setup: &Setup) {
    let Some(max) = setup.max_total_bytes else {
        return;
    };
    let segs = log.segments();
    let total: u64 = segs.iter().map(|s| s.bytes).sum();
    let oldest = &segs[0];
    let deletable = oldest.sealed && oldest.next_index <= log.state().first_index;
    assert!(
        !(deletable && total > max),
        "retention left {total} > {max} bytes with {oldest:?} purged"
    );
}

/// Runs a mutation that an injected fault may make fail. On success the
/// model follows as for an ordinary step; on failure the log must be
/// poisoned, and the result says what a crash may leave.
fn run_mutation(log: &Log, model: &mut Model, m: &Mutation) -> Aftermath {
    let failed = match m {
        Mutation::Append(recs) => match log.append(&records(recs)) {
            Ok(r) => {
                assert_eq!(r.start, model.next());
                model.append(recs);
                None
            }
            Err(e) => Some((e, Aftermath::AppendPrefix(recs.clone()))),
        },
        Mutation::TruncateFrom(sel) => {
            let i = model.pick(*sel);
            let refused = i < model.first && i < model.next();
            match log.truncate_from(i) {
                Ok(()) if !refused => {
                    model.truncate_from(i).expect("the model allows it too");
                    None
                }
                Err(Error::Purged { .. }) if refused => None,
                Err(e) if !refused => Some((e, Aftermath::TruncatedDownTo(i.min(model.next())))),
                r => panic!(
                    "truncate_from({i}) with visible {}.. gave {r:?}",
                    model.first
                ),
            }
        }
        Mutation::Purge(sel) => {
            let i = model.pick(*sel);
            match log.purge(i) {
                Ok(()) => {
                    model.purge(i);
                    None
                }
                Err(e) => Some((e, Aftermath::Purged(i))),
            }
        }
    };
    let Some((err, aftermath)) = failed else {
        return Aftermath::Exact;
    };
    assert!(err.is_fatal(), "a failed write or sync is fatal: {err}");
    assert_poisoned(
        log.append(&[Record {
            timestamp: 1,
            payload: b"x",
        }]),
        "append",
    );
    assert_poisoned(log.read(model.first), "read");
    assert_poisoned(log.range(model.first, model.first), "range");
    assert_poisoned(log.truncate_after(model.first), "truncate_after");
    assert_poisoned(log.purge(model.first), "purge");
    aftermath
}

/// Checks the reopened log is a state the failed operation may have left,
/// and makes the model adopt it.
fn adopt(log: &Log, model: &mut Model, aftermath: Aftermath) {
    let state = log.state();
    match aftermath {
        Aftermath::Exact => {}
        Aftermath::AppendPrefix(batch) => {
            let extra = state
                .next_index
                .checked_sub(model.next())
                .expect("no acknowledged record lost");
            assert!(
                extra as usize <= batch.len(),
                "at most the failed batch survives"
            );
            model.append(&batch[..extra as usize]);
        }
        Aftermath::TruncatedDownTo(keep) => {
            assert!(
                (keep..=model.next()).contains(&state.next_index),
                "after a failed truncation the log ends between {keep} and {}, not {}",
                model.next(),
                state.next_index
            );
            model
                .truncate_from(state.next_index)
                .expect("the truncation was allowed");
        }
        Aftermath::Purged(up_to) => {
            if state.first_index != model.first {
                model.purge(up_to);
                assert_eq!(
                    state.first_index, model.first,
                    "after a failed purge: done or not"
                );
            }
        }
    }
}

fn run(setup: Setup, ops: Vec<Op>) {
    let fs = SimFs::new();
    let mut log = open(&fs, &setup, Recovery::TailOnly);
    let mut model = Model {
        base: setup.initial_index,
        base_hash: GENESIS_HASH,
        records: Vec::new(),
        first: setup.initial_index,
    };
    check(&log, &model, &fs);
    for op in ops {
        match op {
            Op::Append(recs) => {
                let r = log.append(&records(&recs)).expect("append");
                assert_eq!(
                    r,
                    model.next()..model.next() + recs.len() as u64,
                    "indexes assigned"
                );
                model.append(&recs);
            }
            Op::AppendAt {
                skew,
                records: recs,
            } => {
                let next = model.next();
                let expected = next.saturating_add_signed(i64::from(skew));
                match log.append_at(expected, &records(&recs)) {
                    Ok(r) if expected == next => {
                        assert_eq!(r, next..next + recs.len() as u64);
                        model.append(&recs);
                    }
                    Err(Error::IndexMismatch {
                        expected: e,
                        next: n,
                    }) if expected != next => {
                        assert_eq!((e, n), (expected, next));
                    }
                    r => panic!("append_at({expected}) with next {next} gave {r:?}"),
                }
            }
            Op::AppendTooLarge => {
                let big = vec![7u8; MAX_RECORD as usize + 1];
                let recs = [
                    Record {
                        timestamp: 1,
                        payload: b"fits",
                    },
                    Record {
                        timestamp: 2,
                        payload: &big,
                    },
                ];
                let r = log.append(&recs);
                assert!(
                    matches!(r, Err(Error::RecordTooLarge { len, max })
                        if len == big.len() && max == MAX_RECORD),
                    "{r:?}"
                );
            }
            Op::TruncateAfter(sel) => {
                let i = model.pick(sel);
                match (log.truncate_after(i), model.truncate_from(i + 1)) {
                    (Ok(()), Ok(())) => {}
                    (Err(Error::Purged { index, first }), Err(())) => {
                        assert_eq!((index, first), (i + 1, model.first));
                    }
                    (r, want) => panic!("truncate_after({i}) gave {r:?}, model says {want:?}"),
                }
            }
            Op::TruncateFrom(sel) => {
                let i = model.pick(sel);
                match (log.truncate_from(i), model.truncate_from(i)) {
                    (Ok(()), Ok(())) => {}
                    (Err(Error::Purged { index, first }), Err(())) => {
                        assert_eq!((index, first), (i, model.first));
                    }
                    (r, want) => panic!("truncate_from({i}) gave {r:?}, model says {want:?}"),
                }
            }
            Op::Purge(sel) => {
                let i = model.pick(sel);
                log.purge(i).unwrap_or_else(|e| panic!("purge({i}): {e}"));
                let before = model.first;
                model.purge(i);
                // Retention runs when the purge point moves.
                if model.first != before {
                    check_retention_applied(&log, &setup);
                }
            }
            Op::ApplyRetention => {
                log.apply_retention().expect("apply_retention");
                check_retention_applied(&log, &setup);
            }
            Op::Read(sel) => {
                let i = model.pick(sel);
                let (first, next) = (model.first, model.next());
                match log.read(i) {
                    Err(Error::Purged { index, first: f }) if i < first => {
                        assert_eq!((index, f), (i, first));
                    }
                    Err(Error::BeyondEnd { index, next: n }) if i >= next && i >= first => {
                        assert_eq!((index, n), (i, next));
                    }
                    Ok(e) if (first..next).contains(&i) => {
                        assert_eq!(e.payload, model.get(i).payload)
                    }
                    r => panic!("read({i}) with visible {first}..{next} gave {r:?}"),
                }
            }
            Op::Range(a, b) => {
                let (from, to) = (model.pick(a), model.pick(b));
                let r = log
                    .range(from, to)
                    .map(|it| it.collect::<Result<Vec<_>, _>>());
                match r {
                    Err(Error::InvalidRange { .. }) if from > to => {}
                    Err(Error::Purged { .. }) if from <= to && from < model.first => {}
                    Err(Error::BeyondEnd { .. })
                        if from <= to && from >= model.first && to > model.next() => {}
                    Ok(Ok(got)) if from <= to && from >= model.first && to <= model.next() => {
                        let want: Vec<_> = (from..to).map(|i| model.get(i).clone()).collect();
                        let got: Vec<_> = got
                            .into_iter()
                            .map(|e| Rec {
                                timestamp: e.timestamp,
                                payload: e.payload,
                            })
                            .collect();
                        assert_eq!(got, want, "range({from}, {to})");
                    }
                    r => panic!("range({from}, {to}) gave {r:?}"),
                }
            }
            Op::Reopen(recovery) => {
                drop(log);
                log = open(&fs, &setup, recovery);
                let report = log.recovery_report();
                assert_eq!(report.torn_tail, None, "a clean reopen cuts nothing");
                assert_eq!(report.removed_unborn_segment, None);
            }
            Op::Crash {
                failing,
                keep_permille,
                recovery,
            } => {
                let aftermath = match failing {
                    Some((fault, skip, m)) => {
                        fs.inject_after(fault, skip);
                        run_mutation(&log, &mut model, &m)
                    }
                    None => Aftermath::Exact,
                };
                drop(log);
                fs.crash_keeping(|_, unsynced| unsynced * usize::from(keep_permille) / 1000);
                log = open(&fs, &setup, recovery);
                adopt(&log, &mut model, aftermath);
            }
        }
        check(&log, &model, &fs);
    }
}

fn rec() -> impl Strategy<Value = Rec> {
    let len = prop_oneof![1 => Just(0usize), 6 => 0..=MAX_RECORD as usize];
    (0..2_000_000_000_000u64, len, any::<u8>()).prop_map(|(timestamp, len, seed)| Rec {
        timestamp,
        payload: (0..len)
            .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)))
            .collect(),
    })
}

fn batch() -> impl Strategy<Value = Vec<Rec>> {
    prop::collection::vec(rec(), 1..=4)
}

fn recovery() -> impl Strategy<Value = Recovery> {
    prop_oneof![3 => Just(Recovery::TailOnly), 1 => Just(Recovery::Full)]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => batch().prop_map(Mutation::Append),
        1 => any::<u16>().prop_map(Mutation::TruncateFrom),
        1 => any::<u16>().prop_map(Mutation::Purge),
    ]
}

fn failing() -> impl Strategy<Value = (Fault, u32, Mutation)> {
    let fault = prop_oneof![
        Just(Fault::Write),
        Just(Fault::SyncData),
        Just(Fault::SyncDir)
    ];
    let skip = prop_oneof![3 => Just(0u32), 1 => 1..4u32];
    (fault, skip, mutation())
}

fn op() -> impl Strategy<Value = Op> {
    let keep = prop_oneof![Just(0u16), Just(1000u16), 0..=1000u16];
    prop_oneof![
        12 => batch().prop_map(Op::Append),
        2 => ((-1i8..=1), batch()).prop_map(|(skew, records)| Op::AppendAt { skew, records }),
        1 => Just(Op::AppendTooLarge),
        2 => any::<u16>().prop_map(Op::TruncateAfter),
        1 => any::<u16>().prop_map(Op::TruncateFrom),
        3 => any::<u16>().prop_map(Op::Purge),
        1 => Just(Op::ApplyRetention),
        2 => any::<u16>().prop_map(Op::Read),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Range(a, b)),
        2 => recovery().prop_map(Op::Reopen),
        4 => (prop::option::weighted(0.75, failing()), keep, recovery())
            .prop_map(|(failing, keep_permille, recovery)| Op::Crash { failing, keep_permille, recovery }),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    let retention = prop_oneof![
        2 => Just(None),
        1 => Just(Some(0u64)),
        2 => (1000..5000u64).prop_map(Some),
    ];
    (
        prop_oneof![Just(0u64), Just(1000u64)],
        512..=2048u64,
        128..=1024u64,
        retention,
    )
        .prop_map(
            |(initial_index, segment_bytes, index_interval_bytes, max_total_bytes)| Setup {
                initial_index,
                segment_bytes,
                index_interval_bytes,
                max_total_bytes,
            },
        )
}

proptest! {
    #![proptest_config(Config {
        cases: 128,
        // A failure is reported with its shrunk input; nothing is written
        // into the source tree.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn log_equals_the_model_of_acknowledged_records(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(setup, ops);
    }
}
