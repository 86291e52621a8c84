//! CPU time of this process (the node and the load generator together),
//! from /proc: what one message costs in CPU, whatever the disk does.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// CPU seconds (user + system) used so far by this process; 0 if /proc
/// cannot be read.
pub(crate) fn own_cpu_seconds() -> f64 {
    ticks("/proc/self/stat").unwrap_or(0) as f64 / ticks_per_second()
}

/// The cores of the machine, which CPU shares are expressed against.
pub(crate) fn cores() -> usize {
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
