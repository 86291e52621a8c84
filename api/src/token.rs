//! Sync tokens: where a client stands, opaque to it.
//!
//! A token is the history epoch and, per partition, the log index up to
//! which the client has everything relevant to it. Indexes are the
//! partitions' own positions, so a token is meaningful on every node of the
//! cluster (they all apply the same logs). The epoch changes when history
//! was lost or replaced (a restore): a token of another epoch cannot be
//! resumed, and the client is told to resync fully rather than silently
//! miss events.
//!
//! Text form: `1.<epoch>.<index of partition 0>.<index of partition 1>...`
//! in decimal. Clients must not parse it.

use crate::error::Rejected;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// A decoded token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub epoch: u64,
    pub indexes: Vec<u64>,
}

impl Token {
    pub fn encode(&self) -> String {
        let mut s = format!("1.{}", self.epoch);
        for i in &self.indexes {
            s.push('.');
            s.push_str(&i.to_string());
        }
        s
    }

    pub fn decode(s: &str) -> Result<Token, Rejected> {
        let bad = || Rejected::invalid("not a sync token of this service");
        if s.len() > MAX_TOKEN_BYTES {
            return Err(bad());
        }
        let mut parts = s.split('.');
        if parts.next() != Some("1") {
            return Err(bad());
        }
        let epoch = parts.next().and_then(|e| e.parse().ok()).ok_or_else(bad)?;
        let indexes = parts
            .map(|p| p.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if indexes.is_empty() {
            return Err(bad());
        }
        Ok(Token { epoch, indexes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = Token {
            epoch: 7,
            indexes: vec![0, 12, 3_000_000_000, 5],
        };
        assert_eq!(Token::decode(&t.encode()), Ok(t));
    }

    #[test]
    fn garbage_is_refused() {
        for s in ["", "2.0.1", "1.x.1", "1.0", "1.0.-1", "1.0.1.", "1..1"] {
            assert!(Token::decode(s).is_err(), "{s:?} accepted");
        }
        assert!(Token::decode(&format!("1.0.{}", "1".repeat(3000))).is_err());
    }
}
