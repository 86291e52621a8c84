//! The workload's only source of randomness: a seeded SplitMix64, so every
//! process that replays the workload (the loader, the killed loader, the
//! checker that rebuilds the expected projection) draws the same log.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to
/// pick keys and sizes; nothing here needs cryptographic quality.
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
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0, "below(0) has no value to return");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `0.0..1.0`, from the top 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Random bytes: message bodies are end-to-end-encrypted payloads, so
    /// they are incompressible and random bytes model them honestly.
    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub(crate) fn id16(&mut self) -> [u8; 16] {
        let mut id = [0; 16];
        self.fill(&mut id);
        id
    }
}
