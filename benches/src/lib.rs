//! missive-benches: benchmark programs (in `src/bin/`) that compare missive
//! side by side with the physical limits of the machine and with peers, in
//! one run. Measurements live here, never in timed tests.
//!
//! This library holds what the programs share: summary statistics, the
//! filesystem a benchmark runs on, CPU time from /proc, and the release
//! `missive` binary.

pub mod binary;
pub mod cpu;
pub mod store_limit;

/// Runs `f(0)`, …, `f(n - 1)`, each on a thread of its own (all at once)
/// or one after the other, and returns their results in order, or the
/// first error. A thread that panics gives an error.
pub fn run_each<T: Send>(
    n: usize,
    parallel: bool,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    if !parallel {
        return (0..n).map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
            })
            .collect()
    })
}

/// [`run_each`], and the wall time it took, in seconds.
pub fn time_each<T: Send>(
    n: usize,
    parallel: bool,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<(f64, Vec<T>)> {
    let t = std::time::Instant::now();
    let results = run_each(n, parallel, f)?;
    Ok((t.elapsed().as_secs_f64(), results))
}

/// Median, p50 and p99 of a set of samples.
pub mod stats {
    /// The value at quantile `q` (0.0..=1.0) of `samples`, which it sorts.
    /// `None` for no samples.
    pub fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * (samples.len() - 1) as f64).round() as usize;
        Some(samples[rank])
    }

    /// The median of `field` over `runs`; NaN for no runs.
    pub fn median_of<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
        let mut values: Vec<f64> = runs.iter().map(field).collect();
        quantile(&mut values, 0.5).unwrap_or(f64::NAN)
    }

    #[cfg(test)]
    mod tests {
        use super::{median_of, quantile};

        #[test]
        fn median_of_a_field() {
            let runs = [(1, 3.0), (2, 1.0), (3, 2.0)];
            assert_eq!(median_of(&runs, |r| r.1), 2.0);
            assert!(median_of(&[] as &[(u8, f64)], |r| r.1).is_nan());
        }

        #[test]
        fn quantiles_of_a_known_set() {
            let mut s: Vec<f64> = (1..=101).map(f64::from).collect();
            assert_eq!(quantile(&mut s, 0.5), Some(51.0));
            assert_eq!(quantile(&mut s, 0.99), Some(100.0));
            assert_eq!(quantile(&mut [], 0.5), None);
        }
    }
}

/// Where a benchmark's files live.
pub mod filesystem {
    use std::fs;
    use std::path::Path;

    /// The type and device of the filesystem holding `path` (`ext4 on
    /// /dev/vda`), from /proc/self/mounts: the mount point that is its
    /// longest prefix. "unknown" when that cannot be read. fdatasync costs
    /// nothing on tmpfs, so every durability figure is printed with it.
    pub fn filesystem_of(path: &Path) -> String {
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
}
