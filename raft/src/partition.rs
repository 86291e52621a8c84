//! Which partition a key lives in: jump consistent hash.
//!
//! A conversation lives in `partition_of(conversation_id, P)`, user-scoped
//! state in `partition_of(user_id, P)`. The function must be stable forever
//! — every node, every version, every replay must agree — so it is defined
//! here byte for byte: the key is hashed with BLAKE3, its first 8 bytes read
//! as a little-endian u64, and that fed to the jump consistent hash of
//! Lamping and Veach ("A Fast, Minimal Memory, Consistent Hash Algorithm",
//! 2014). Jump hash needs no table and, should P ever grow, moves only the
//! keys that must move to the new partitions.

/// The partition (0..partitions) that `key` belongs to.
///
/// `partitions` must be at least 1 (a cluster has at least one partition).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let digest = blake3::hash(key);
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest.as_bytes()[..8]);
    jump_hash(u64::from_le_bytes(word), partitions.max(1))
}

/// Jump consistent hash: maps `key` to a bucket in `0..buckets`.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Published reference outputs of jump consistent hash (the Go and
        // C++ implementations agree on them).
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(1, 1), 0);
        assert_eq!(jump_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_hash(0xDEAD_10CC, 666), 361);
        assert_eq!(jump_hash(256, 1024), 520);
    }

    #[test]
    fn growing_the_partition_count_moves_keys_only_to_the_new_partition() {
        for key in 0..10_000u64 {
            let k = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for n in 1..16 {
                let before = jump_hash(k, n);
                let after = jump_hash(k, n + 1);
                assert!(
                    after == before || after == n,
                    "key {k} moved from {before} to {after}"
                );
            }
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let partitions = 8;
        let mut counts = [0u32; 8];
        for i in 0..80_000u32 {
            counts[partition_of(format!("conversation-{i}").as_bytes(), partitions) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
