//! Goals, the table and the JSON line.

use super::*;
#[derive(Clone, Debug)]
pub(crate) struct Goal {
    pub(crate) what: String,
    pub(crate) value: f64,
    /// "%" for ratios (value in percent), "ms" for times.
    pub(crate) unit: &'static str,
    pub(crate) target: &'static str,
    pub(crate) met: bool,
}

pub(crate) fn goals(cases: &[AppendCase], scan: &Scan, reopen: &Reopen) -> Vec<Goal> {
    let mut goals = Vec::new();
    for case in cases {
        if case.threads == 1 {
            // Against the faster of the two raw loops: appending, or over
            // zeros as the log itself writes.
            let ratio = case.ratio_to_raw_sync.min(case.ratio_to_raw_over_zeros);
            goals.push(Goal {
                what: format!(
                    "1 appender, {} B: appends/s vs raw write+fdatasync",
                    case.payload
                ),
                value: ratio * 100.0,
                unit: "%",
                target: ">= 80 %",
                met: ratio >= 0.8,
            });
        }
        if case.threads == 256 {
            goals.push(Goal {
                what: format!(
                    "256 appenders, {} B: MB/s vs raw sequential write",
                    case.payload
                ),
                value: case.ratio_to_seq_write * 100.0,
                unit: "%",
                target: ">= 60 %",
                met: case.ratio_to_seq_write >= 0.6,
            });
        }
    }
    goals.push(Goal {
        what: "scan: MB/s vs raw sequential read".to_owned(),
        value: scan.ratio * 100.0,
        unit: "%",
        target: ">= 80 %",
        met: scan.ratio >= 0.8,
    });
    goals.push(Goal {
        what: "reopen of the >= 1 GiB log (median)".to_owned(),
        value: reopen.median_ms,
        unit: "ms",
        target: "< 200 ms",
        met: reopen.median_ms < 200.0,
    });
    goals
}

/// Every figure of a run.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) plan: Plan,
    pub(crate) dir: &'a Path,
    pub(crate) filesystem: String,
    pub(crate) seq_write_mb_s: f64,
    pub(crate) cases: Vec<AppendCase>,
    pub(crate) built: Built,
    pub(crate) reopen: Reopen,
    pub(crate) scan: Scan,
    pub(crate) goals: Vec<Goal>,
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

pub(crate) fn print_table(r: &Report<'_>, runtime: Duration) {
    let p = r.plan;
    let mode = if p.quick { "quick" } else { "full" };
    println!(
        "bench-log ({mode} run): {:?} per append case, median of {}",
        p.case_time, p.repeats
    );
    println!("directory {} ({})", r.dir.display(), r.filesystem);
    if r.filesystem.starts_with("tmpfs") {
        println!("WARNING: tmpfs: fdatasync is free here, the append figures mean nothing");
    }
    println!(
        "\nraw sequential write (1 MiB writes, fdatasync every 8 MiB; median of {} runs of \
         {:.0} MiB): {:.1} MB/s",
        p.seq_write_runs(),
        mib(p.seq_write_bytes),
        r.seq_write_mb_s
    );
    print_appends(&r.cases, r.seq_write_mb_s);
    let (b, s) = (&r.built, &r.scan);
    println!(
        "\nscan of {:.0} MiB ({} records, page cache): missive {:.0} MB/s, raw read {:.0} MB/s, \
         ratio {:.1} %",
        mib(s.bytes),
        s.records,
        s.missive_mb_s,
        s.raw_mb_s,
        s.ratio * 100.0
    );
    println!(
        "reopen of {:.0} MiB ({} segments, active segment {:.1} MiB scanned, {} indexes \
         rebuilt; built and flushed in {:.1} s): median {:.1} ms (min {:.1}, max {:.1})",
        mib(b.bytes),
        r.reopen.segments,
        mib(b.active_bytes),
        r.reopen.rebuilt_indexes,
        b.secs,
        r.reopen.median_ms,
        r.reopen.min_ms,
        r.reopen.max_ms
    );
    println!("\ngoals");
    for g in &r.goals {
        let verdict = if g.met { "met" } else { "NOT MET" };
        println!(
            "  {:<58} {:>8.1} {:<2}  goal {:<8}  {verdict}",
            g.what, g.value, g.unit, g.target
        );
    }
    println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
}

pub(crate) fn print_appends(cases: &[AppendCase], seq_write_mb_s: f64) {
    println!(
        "\n{:>12} | {:^44} | {:^23} | {:^17} | {:^18} | {:^16}",
        "",
        "missive",
        "raw write+fdatasync",
        "missive vs raw",
        "raw over zeros",
        "raw, batch = thr"
    );
    println!(
        "{:>7} {:>4} | {:>9} {:>7} {:>8} {:>8} {:>6} | {:>5} {:>9} {:>7} | {:>8} {:>8} | {:>9} {:>8} | {:>7} {:>8}",
        "payload",
        "thr",
        "appends/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "batch",
        "batch",
        "rec/s",
        "MB/s",
        "sync",
        "seq",
        "rec/s",
        "sync",
        "MB/s",
        "vs seq"
    );
    for c in cases {
        let m = &c.missive;
        let ceiling = match c.ceiling {
            Some(raw) => format!(
                "{:>7.1} {:>6.1} %",
                raw.mb_per_s,
                raw.mb_per_s / seq_write_mb_s * 100.0
            ),
            None => format!("{:>7} {:>8}", "-", "-"),
        };
        println!(
            "{:>5} B {:>4} | {:>9.0} {:>7.2} {:>8.0} {:>8.0} {:>6.1} | {:>5} {:>9.0} {:>7.2} | \
             {:>6.1} % {:>6.1} % | {:>9.0} {:>6.1} % | {ceiling}",
            c.payload,
            c.threads,
            m.appends_per_s,
            m.mb_per_s,
            m.p50_us,
            m.p99_us,
            m.mean_batch,
            c.raw_batch,
            c.raw.records_per_s,
            c.raw.mb_per_s,
            c.ratio_to_raw_sync * 100.0,
            c.ratio_to_seq_write * 100.0,
            c.raw_over_zeros.records_per_s,
            c.ratio_to_raw_over_zeros * 100.0
        );
    }
    println!(
        "MB/s of records (64 B header + payload); batch: records per write + fdatasync \
         (missive's from its record headers);\nsync: missive appends/s / raw rec/s at the same \
         batch (median of paired runs); seq: MB/s / raw sequential write;\nraw over zeros: the \
         same loop writing over zeros kept 1 MiB ahead, as the log does, and missive over it;\n\
         raw, batch = thr: \
         the most thr one-record appenders could get if every one were in every batch"
    );
}

impl Report<'_> {
    pub(crate) fn json(&self, runtime: Duration) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                json!({
                    "threads": c.threads,
                    "payload_bytes": c.payload,
                    "record_bytes": RECORD_HEADER_LEN + c.payload,
                    "appends_per_s": c.missive.appends_per_s,
                    "mb_per_s": c.missive.mb_per_s,
                    "p50_us": c.missive.p50_us,
                    "p99_us": c.missive.p99_us,
                    "mean_batch": c.missive.mean_batch,
                    "raw_batch": c.raw_batch,
                    "raw_records_per_s": c.raw.records_per_s,
                    "ceiling_batch": c.ceiling.map(|_| c.threads),
                    "ceiling_mb_per_s": c.ceiling.map(|raw| raw.mb_per_s),
                    "ceiling_ratio_to_seq_write":
                        c.ceiling.map(|raw| raw.mb_per_s / self.seq_write_mb_s),
                    "raw_mb_per_s": c.raw.mb_per_s,
                    "ratio_to_raw_sync": c.ratio_to_raw_sync,
                    "raw_over_zeros_records_per_s": c.raw_over_zeros.records_per_s,
                    "ratio_to_raw_over_zeros": c.ratio_to_raw_over_zeros,
                    "ratio_to_seq_write": c.ratio_to_seq_write,
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals
            .iter()
            .map(|g| json!({"what": g.what, "value": g.value, "unit": g.unit, "target": g.target, "met": g.met}))
            .collect();
        let (b, s, r) = (&self.built, &self.scan, &self.reopen);
        json!({
            "bench": "log",
            "quick": self.plan.quick,
            "case_secs": self.plan.case_time.as_secs_f64(),
            "repeats": self.plan.repeats,
            "filesystem": self.filesystem,
            "raw_seq_write": {
                "mb_per_s": self.seq_write_mb_s,
                "bytes": self.plan.seq_write_bytes,
                "runs": self.plan.seq_write_runs(),
                "method": "1 MiB write_all, fdatasync every 8 MiB, timed to the last fdatasync",
            },
            "appends": cases,
            "scan": {
                "bytes": s.bytes,
                "records": s.records,
                "missive_mb_per_s": s.missive_mb_s,
                "raw_read_mb_per_s": s.raw_mb_s,
                "ratio": s.ratio,
            },
            "reopen": {
                "log_bytes": b.bytes,
                "segments": r.segments,
                "active_segment_bytes": b.active_bytes,
                "records": b.records,
                "rebuilt_indexes": r.rebuilt_indexes,
                "median_ms": r.median_ms,
                "min_ms": r.min_ms,
                "max_ms": r.max_ms,
                "build_secs": b.secs,
            },
            "goals": goals,
            "all_goals_met": self.goals.iter().all(|g| g.met),
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}
