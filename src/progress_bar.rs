//! A progress bar on stderr for long offline work (replay, restore): bytes
//! done of a known total, entries, elapsed time. Drawn only when stderr is
//! a terminal, at most five times a second, by the thread that waits for
//! the work; the workers only add to two counters.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const REDRAW: Duration = Duration::from_millis(200);
/// Width of the bar in characters.
const WIDTH: usize = 30;

/// Counters the workers add to.
#[derive(Debug)]
pub struct Counters {
    /// Bytes done so far.
    pub bytes: AtomicU64,
    /// Entries done so far.
    pub entries: AtomicU64,
}

/// The bar.
#[derive(Debug)]
pub struct Bar {
    /// What is being done ("replay").
    label: &'static str,
    /// Bytes in all.
    total_bytes: u64,
    /// Shared with the workers.
    pub counters: Counters,
    /// When the work started.
    started: Instant,
    /// Whether to draw at all.
    draw: bool,
}

impl Bar {
    pub fn new(label: &'static str, total_bytes: u64) -> Bar {
        Bar {
            label,
            total_bytes,
            counters: Counters {
                bytes: AtomicU64::new(0),
                entries: AtomicU64::new(0),
            },
            started: Instant::now(),
            draw: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&self, entries: u64, bytes: u64) {
        self.counters.entries.fetch_add(entries, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Redraws until `finished()` says so, then clears the line.
    pub fn run_until(&self, finished: impl Fn() -> bool) {
        while !finished() {
            self.redraw();
            std::thread::sleep(REDRAW);
        }
        if self.draw {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{:width$}\r", "", width = WIDTH + 80);
            let _ = e.flush();
        }
    }

    fn redraw(&self) {
        if !self.draw {
            return;
        }
        let bytes = self.counters.bytes.load(Ordering::Relaxed);
        let entries = self.counters.entries.load(Ordering::Relaxed);
        let frac = if self.total_bytes == 0 {
            0.0
        } else {
            (bytes as f64 / self.total_bytes as f64).min(1.0)
        };
        let filled = (frac * WIDTH as f64) as usize;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{}{}] {:3.0}%  {:.1} / {:.1} MB  {} entries  {:.1} s ",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            frac * 100.0,
            bytes as f64 / 1e6,
            self.total_bytes as f64 / 1e6,
            entries,
            self.started.elapsed().as_secs_f64()
        );
        let _ = e.flush();
    }
}
