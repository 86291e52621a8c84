//! Per-user write rate limits: a token bucket per user, refilled at
//! [`WRITES_PER_SECOND`] up to [`WRITE_BURST`].
//!
//! The table is bounded by [`MAX_TRACKED_USERS`]: when it is full, buckets
//! that have refilled completely (idle users, indistinguishable from new
//! ones) are forgotten first; if none has, the call is refused rather than
//! grow the table.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::limits::{WRITE_BURST, WRITES_PER_SECOND};

/// Users whose buckets are tracked at once.
pub const MAX_TRACKED_USERS: usize = 200_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets. A std `Mutex`: taken briefly, never across an `.await`.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    rate: f64,
    burst: f64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(WRITES_PER_SECOND, WRITE_BURST)
    }
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            rate,
            burst,
        }
    }

    /// Takes one token of `user`'s bucket; false if it is empty.
    pub fn allow(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let refill = |b: &Bucket| {
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst)
        };
        if !buckets.contains_key(user) && buckets.len() >= MAX_TRACKED_USERS {
            buckets.retain(|_, b| refill(b) < self.burst);
            if buckets.len() >= MAX_TRACKED_USERS {
                return false;
            }
        }
        let b = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_allowed_then_the_rate() {
        let rl = RateLimiter::new(10.0, 5.0);
        for _ in 0..5 {
            assert!(rl.allow("alice"));
        }
        assert!(!rl.allow("alice"));
        // Others have their own bucket.
        assert!(rl.allow("bob"));
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(rl.allow("alice"));
        assert!(!rl.allow("alice"));
    }
}
