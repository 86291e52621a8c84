//! missive-benches: benchmark programs (in `src/bin/`) that compare missive
//! side by side with the physical limits of the machine and with peers, in
//! one run. Measurements live here, never in timed tests.
//!
//! This library holds what the programs share: summary statistics.

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

    #[cfg(test)]
    mod tests {
        use super::quantile;

        #[test]
        fn quantiles_of_a_known_set() {
            let mut s: Vec<f64> = (1..=101).map(f64::from).collect();
            assert_eq!(quantile(&mut s, 0.5), Some(51.0));
            assert_eq!(quantile(&mut s, 0.99), Some(100.0));
            assert_eq!(quantile(&mut [], 0.5), None);
        }
    }
}
