//! CPU time of processes, from /proc: how much of the machine's cores a
//! system used to reach its figures, and how much the load generator did.
//!
//! The benchmarks run servers and clients on one machine, so a system that
//! needs more CPU per operation is capped by the cores, not the disk; these
//! figures say which.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// CPU seconds (user + system) used so far by each of `pids` together.
/// A process that cannot be read (it exited) counts as 0.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| ticks(&format!("/proc/{pid}/stat")))
        .sum::<u64>() as f64
        / ticks_per_second()
}

/// CPU seconds used so far by this process (the load generator).
pub fn own_cpu_seconds() -> f64 {
    ticks("/proc/self/stat").unwrap_or(0) as f64 / ticks_per_second()
}

/// The cores of the machine, which CPU shares are expressed against.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// utime + stime, in clock ticks, of the `stat` file at `path`.
fn ticks(path: &str) -> Option<u64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing parenthesis, which is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux
/// unless configured otherwise).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_time() {
        let start = own_cpu_seconds();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(own_cpu_seconds() > start);
        assert!(cpu_seconds(&[std::process::id()]) > 0.0);
        assert_eq!(cpu_seconds(&[u32::MAX]), 0.0);
    }
}
