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

/// The whole machine's CPU time so far, every process and the kernel's own
/// work (interrupts, network softirqs) included: what per-process figures
/// leave out. From the `cpu` line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// user, nice, system, irq, softirq and steal.
    pub busy: u64,
    /// Taken by the hypervisor for other guests while this one had work.
    pub steal: u64,
    /// busy, idle and iowait.
    pub total: u64,
}

impl MachineTicks {
    /// Now, or all zeros where /proc/stat cannot be read.
    pub fn now() -> MachineTicks {
        fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| MachineTicks::parse(&s))
            .unwrap_or_default()
    }

    /// The `cpu` line of a /proc/stat text. Its fields are user, nice,
    /// system, idle, iowait, irq, softirq, steal, then guest times, which
    /// user already counts.
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = f[..] else {
            return None;
        };
        let busy = user + nice + system + irq + softirq + steal;
        Some(MachineTicks {
            busy,
            steal,
            total: busy + idle + iowait,
        })
    }

    /// The share of all cores busy, and of them stolen, from `earlier` to
    /// `self` (each 0 to 1); NaN when no time passed or nothing was read.
    pub fn shares_since(&self, earlier: &MachineTicks) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return (f64::NAN, f64::NAN);
        }
        let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total as f64;
        (
            share(self.busy, earlier.busy),
            share(self.steal, earlier.steal),
        )
    }
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
    fn the_machine_share_counts_every_busy_state_against_all_ticks() {
        let stat = "cpu  100 10 50 800 20 5 10 5 7 0\ncpu0 50 5 25 400 10 2 5 2 3 0\n";
        let t = MachineTicks::parse(stat).expect("a cpu line");
        assert_eq!(
            t,
            MachineTicks {
                busy: 180,
                steal: 5,
                total: 1000
            }
        );
        let later = MachineTicks {
            busy: 280,
            steal: 15,
            total: 1200,
        };
        assert_eq!(later.shares_since(&t), (0.5, 0.05));
        assert!(t.shares_since(&t).0.is_nan());
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
        let now = MachineTicks::now();
        assert!(now.total >= now.busy && now.busy >= now.steal && now.total > 0);
    }

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
