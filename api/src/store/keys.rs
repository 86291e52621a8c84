//! How projection keys are built.
//!
//! Keys are bytes ordered the way queries scan them. Ids (users, devices,
//! conversations) never contain a NUL byte (see `crate::validate::id`), so a
//! NUL separates the parts of a composite key and a prefix scan over
//! `part + NUL` never runs into another id that merely starts the same way.
//! Numbers are fixed-width big-endian, so byte order is numeric order.

/// Separates the parts of a composite key.
const SEP: u8 = 0;

/// `a NUL b`.
pub fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut k = prefix(a);
    k.extend_from_slice(b.as_bytes());
    k
}

/// `a NUL b NUL c`.
pub fn triple(a: &str, b: &str, c: &str) -> Vec<u8> {
    let mut k = pair(a, b);
    k.push(SEP);
    k.extend_from_slice(c.as_bytes());
    k
}

/// `a NUL`: every key that starts with the part `a`.
pub fn prefix(a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + 16);
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k
}

/// `a NUL b NUL`: every key that starts with the parts `a`, `b`.
pub fn prefix2(a: &str, b: &str) -> Vec<u8> {
    let mut k = pair(a, b);
    k.push(SEP);
    k
}

/// `a NUL seq` (seq big-endian): a conversation's messages and events.
pub fn seq(a: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(a);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `a NUL b NUL n` (n big-endian): a device's one-time keys.
pub fn numbered(a: &str, b: &str, n: u64) -> Vec<u8> {
    let mut k = prefix2(a, b);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// `index user NUL device` (index big-endian): a dead letter.
pub fn dead_letter(index: u64, user: &str, device: &str) -> Vec<u8> {
    let mut k = index.to_be_bytes().to_vec();
    k.extend_from_slice(&pair(user, device));
    k
}

/// The end (exclusive) of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    // Prefixes built here end in NUL, so bumping the last byte is enough.
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The last part of a composite key: what follows its last NUL.
pub fn last_part(key: &[u8]) -> &[u8] {
    match key.iter().rposition(|&b| b == SEP) {
        Some(i) => &key[i + 1..],
        None => key,
    }
}

/// The seq at the end of a `seq` key.
pub fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if key.len() >= 8 {
        b.copy_from_slice(&key[key.len() - 8..]);
    }
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_keys_sort_numerically_and_stay_inside_their_prefix() {
        let a = seq("c1", 9);
        let b = seq("c1", 10);
        let c = seq("c1", 256);
        assert!(a < b && b < c);
        let p = prefix("c1");
        let end = prefix_end(&p);
        for k in [&a, &b, &c] {
            assert!(k.as_slice() >= p.as_slice() && k.as_slice() < end.as_slice());
        }
        // "c10" starts like "c1" but is another conversation.
        assert!(seq("c10", 1).as_slice() >= end.as_slice());
        assert_eq!(seq_of(&c), 256);
    }

    #[test]
    fn last_part_of_a_pair_is_the_second_id() {
        assert_eq!(last_part(&pair("alice", "d-00")), b"d-00");
    }
}
