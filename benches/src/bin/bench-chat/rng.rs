//! The benchmark's randomness: a seeded SplitMix64, so every run builds the
//! same population and draws the same senders.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to
/// pick users and conversations; nothing here needs cryptographic quality.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    /// The generator's whole state: the same seed gives the same sequence.
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must not be 0. Lemire's multiply-shift: the
    /// bias (at most n / 2^64) is far below anything a benchmark can see.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0, "below(0) has no value to return");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `0.0..1.0`, from the top 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `k` distinct values of `0..n` (k ≤ n), by rejection: k is small
    /// against n here, or the set fills quickly anyway.
    pub(crate) fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut seen = std::collections::HashSet::with_capacity(k);
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let v = self.below(n);
            if seen.insert(v) {
                out.push(v);
            }
        }
        out
    }
}
