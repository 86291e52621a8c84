//! The side-by-side table and the JSON line.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::read::{PAGE, PAGES};
use crate::redb_store::DURABLE_EVERY;
use crate::{EngineRun, figures};

const MIB: f64 = (1u64 << 20) as f64;

#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) quick: bool,
    pub(crate) events: u64,
    pub(crate) kill_at: u64,
    pub(crate) filesystem: String,
    /// sled first, then redb.
    pub(crate) runs: Vec<EngineRun>,
}

/// One row of the table: a number per engine (or a word), and whether a
/// ratio means anything.
enum Cell {
    Number(Option<f64>),
    Text(String),
}

fn field(value: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

impl Report {
    pub(crate) fn print_table(&self, runtime: Duration) {
        let mode = if self.quick { "quick" } else { "full" };
        println!(
            "bench-projection ({mode} run): {} mix events after 1,000 conversations, batches of \
             1..=64 entries",
            self.events
        );
        println!("filesystem: {}", self.filesystem);
        if self.filesystem.starts_with("tmpfs") {
            println!("WARNING: tmpfs: fsync is free here, durable commits cost nothing");
        }
        println!(
            "durability: sled apply_batch without flush (its flusher fsyncs every 500 ms); redb \
             Durability::None, a durable commit every {} ms",
            DURABLE_EVERY.as_millis()
        );
        println!(
            "\n{:<44} {:>12} {:>12} {:>10}",
            "", "sled", "redb", "redb/sled"
        );
        let rows: Vec<(String, [Cell; 2])> = vec![
            self.number_row("apply throughput (events/s)", |r| {
                field(&r.load, &["events_per_s"])
            }),
            self.number_row("batch write p50 (µs)", |r| {
                field(&r.load, &["batch_p50_us"])
            }),
            self.number_row("batch write p99 (µs)", |r| {
                field(&r.load, &["batch_p99_us"])
            }),
            self.number_row("setup: 1,000 conversations (s)", |r| {
                field(&r.load, &["setup_secs"])
            }),
            self.number_row("durable commits made by the load", |r| {
                field(&r.load, &["durable_commits"])
            }),
            self.number_row("close after the load (ms)", |r| {
                field(&r.load, &["close_ms"])
            }),
            self.number_row("RSS at the end of the load (MiB)", |r| {
                field(&r.load, &["rss_after_load_bytes"]).map(|b| b / MIB)
            }),
            self.number_row("live keys + values (MiB)", |r| {
                field(&r.load, &["live_bytes"]).map(|b| b / MIB)
            }),
            self.number_row("bytes on disk, du (MiB)", |r| {
                Some(r.disk.allocated as f64 / MIB)
            }),
            self.number_row("bytes on disk / live bytes", |r| {
                field(&r.load, &["live_bytes"]).map(|live| r.disk.allocated as f64 / live)
            }),
            self.number_row("apparent size of the files (MiB)", |r| {
                Some(r.disk.apparent as f64 / MIB)
            }),
            self.number_row("reopen, clean (ms)", |r| field(&r.read, &["open_ms"])),
            self.number_row(
                &format!("read {PAGES} pages of {PAGE} messages (ms)"),
                |r| field(&r.read, &["read_ms"]),
            ),
            self.number_row("  messages in those pages", |r| {
                field(&r.read, &["messages_read"])
            }),
            self.number_row("RSS after reopen + pages (MiB)", |r| {
                field(&r.read, &["rss_bytes"]).map(|b| b / MIB)
            }),
            self.number_row("  of which the bare process (MiB)", |r| {
                field(&r.read, &["rss_before_open_bytes"]).map(|b| b / MIB)
            }),
            self.number_row("kill -9 after reported index", |r| {
                r.killed.as_ref().ok().map(|&i| i as f64)
            }),
            self.number_row("reopen after kill -9 (ms)", |r| {
                r.recovered
                    .as_ref()
                    .ok()
                    .and_then(|v| field(v, &["open_ms"]))
            }),
            self.number_row("applied index after reopen", |r| {
                r.recovered
                    .as_ref()
                    .ok()
                    .and_then(|v| field(v, &["applied_index"]))
            }),
            self.number_row("entries to replay from the log (at least)", |r| {
                let killed = *r.killed.as_ref().ok()? as f64;
                let applied = field(r.recovered.as_ref().ok()?, &["applied_index"]).unwrap_or(0.0);
                Some((killed - applied).max(0.0))
            }),
            self.text_row("store = log prefix of its applied index", |r| {
                verdict(&r.recovered, "consistent", "difference")
            }),
            self.text_row("  and after 2,000 more entries", |r| {
                verdict(
                    &r.recovered,
                    "consistent_after_resume",
                    "difference_after_resume",
                )
            }),
        ];
        for (label, cells) in &rows {
            let shown: Vec<String> = cells.iter().map(show).collect();
            let ratio = match cells {
                [Cell::Number(Some(s)), Cell::Number(Some(r))] if *s != 0.0 => {
                    format!("{:.2}", r / s)
                }
                _ => "-".to_owned(),
            };
            println!("{label:<44} {:>12} {:>12} {ratio:>10}", shown[0], shown[1]);
        }
        for run in &self.runs {
            for problem in [run.killed.as_ref().err(), run.recovered.as_ref().err()]
                .into_iter()
                .flatten()
            {
                println!("{}: {problem}", run.engine.name());
            }
            if let Ok(v) = &run.recovered {
                for key in ["difference", "difference_after_resume"] {
                    if let Some(d) = v.get(key).and_then(Value::as_str) {
                        println!("{}: {key}: {d}", run.engine.name());
                    }
                }
            }
        }
        println!("\ntotal runtime {:.1} s", runtime.as_secs_f64());
    }

    fn number_row(
        &self,
        label: &str,
        get: impl Fn(&EngineRun) -> Option<f64>,
    ) -> (String, [Cell; 2]) {
        let cell = |n: usize| Cell::Number(self.runs.get(n).and_then(&get));
        (label.to_owned(), [cell(0), cell(1)])
    }

    fn text_row(&self, label: &str, get: impl Fn(&EngineRun) -> String) -> (String, [Cell; 2]) {
        let cell = |n: usize| Cell::Text(self.runs.get(n).map_or_else(String::new, &get));
        (label.to_owned(), [cell(0), cell(1)])
    }

    pub(crate) fn json(&self, runtime: Duration) -> Value {
        let mut engines = serde_json::Map::new();
        for run in &self.runs {
            engines.insert(run.engine.name().to_owned(), figures(run));
        }
        let ratio = |get: &dyn Fn(&EngineRun) -> Option<f64>| {
            let s = self.runs.first().and_then(get)?;
            let r = self.runs.get(1).and_then(get)?;
            (s != 0.0).then_some(r / s)
        };
        json!({
            "bench": "projection",
            "quick": self.quick,
            "events": self.events,
            "setup_entries": crate::workload::CONVERSATIONS,
            "users": crate::workload::USERS,
            "max_batch": crate::workload::MAX_BATCH,
            "kill_at_index": self.kill_at,
            "filesystem": self.filesystem,
            "redb_durable_every_ms": DURABLE_EVERY.as_millis() as u64,
            "sled_flush_every_ms": 500,
            "engines": engines,
            "ratios_redb_over_sled": {
                "events_per_s": ratio(&|r| field(&r.load, &["events_per_s"])),
                "disk_allocated_bytes": ratio(&|r| Some(r.disk.allocated as f64)),
                "rss_after_reopen_bytes": ratio(&|r| field(&r.read, &["rss_bytes"])),
                "reopen_after_kill_ms": ratio(&|r| {
                    r.recovered.as_ref().ok().and_then(|v| field(v, &["open_ms"]))
                }),
            },
            "runtime_s": runtime.as_secs_f64(),
        })
    }
}

fn verdict(recovered: &Result<Value, String>, key: &str, difference: &str) -> String {
    match recovered {
        Err(_) => "FAILED".to_owned(),
        Ok(v) => match v.get(key).and_then(Value::as_bool) {
            Some(true) => "yes".to_owned(),
            Some(false) if v.get(difference).is_some_and(|d| !d.is_null()) => "NO".to_owned(),
            _ => "-".to_owned(),
        },
    }
}

fn show(cell: &Cell) -> String {
    match cell {
        Cell::Text(t) => t.clone(),
        Cell::Number(None) => "-".to_owned(),
        Cell::Number(Some(n)) if n.abs() >= 100.0 || n.fract() == 0.0 => format!("{n:.0}"),
        Cell::Number(Some(n)) => format!("{n:.2}"),
    }
}

/// The type and device of the filesystem holding `path`, from
/// /proc/self/mounts (the mount point that is its longest prefix).
pub(crate) fn filesystem_of(path: &Path) -> String {
    let (Ok(path), Ok(mounts)) = (path.canonicalize(), fs::read_to_string("/proc/self/mounts"))
    else {
        return "unknown".to_owned();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _)| mount_point.len())
        .map_or_else(
            || "unknown".to_owned(),
            |(device, _, kind)| format!("{kind} on {device}"),
        )
}
