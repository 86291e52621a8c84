//! Conversation ids and where things live.
//!
//! - A direct conversation's id is derived from its two users, so the same
//!   pair always gets the same conversation, whoever creates it first:
//!   `d-` and 32 hex digits of BLAKE3 over the two ids in byte order.
//! - A group's id is `g-` and 32 random hex digits, drawn by the node that
//!   takes the create call, before proposing: the command carries it, so
//!   apply stays deterministic.
//! - A conversation lives in `partition_of(conversation id, P)`; a user's
//!   own state (presence, keys, push targets) in `partition_of(user, P)`.

use missive_raft::partition::partition_of;

/// The id of the direct conversation between `a` and `b`.
pub fn direct_id(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut h = blake3::Hasher::new();
    h.update(b"missive direct conversation\0");
    h.update(x.as_bytes());
    h.update(b"\0");
    h.update(y.as_bytes());
    format!("d-{}", &h.finalize().to_hex()[..32])
}

/// A fresh group id from 16 random bytes.
pub fn new_group_id(random: [u8; 16]) -> String {
    let mut s = String::with_capacity(34);
    s.push_str("g-");
    for b in random {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// True for ids of the shape `new_group_id` makes.
pub fn is_group_id(id: &str) -> bool {
    id.len() == 34
        && id.starts_with("g-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for ids of the shape `direct_id` makes.
pub fn is_direct_id(id: &str) -> bool {
    id.len() == 34
        && id.starts_with("d-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The partition of a conversation or a user.
pub fn partition(key: &str, partitions: u32) -> u32 {
    partition_of(key.as_bytes(), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_gets_one_direct_id_whoever_asks() {
        assert_eq!(direct_id("alice", "bob"), direct_id("bob", "alice"));
        assert_ne!(direct_id("alice", "bob"), direct_id("alice", "carol"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(direct_id("ab", "c"), direct_id("a", "bc"));
        assert!(is_direct_id(&direct_id("alice", "bob")));
    }

    #[test]
    fn group_ids_have_their_shape() {
        let id = new_group_id([0xab; 16]);
        assert!(is_group_id(&id));
        assert!(!is_group_id("g-xyz"));
        assert!(!is_direct_id(&id));
    }
}
