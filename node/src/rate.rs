//! Where a client stands against a plan's rate limit: what a refusal carries and what every
//! accepted publish reports in the `RateLimit-*` headers (IETF draft `ratelimit-headers`).

use std::collections::HashMap;
use std::sync::Mutex;

use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::RateLimit;

/// Local fixed windows per key, on this node only (the token endpoint, portal sign-ins):
/// requests counted without a Raft write. Keys of past windows are dropped once there are many.
#[derive(Debug, Default)]
pub struct LocalWindows {
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

impl LocalWindows {
    /// Counts one request of `key` in the current window of `window_ms`: false when it is over
    /// `limit`.
    pub fn allow(&self, key: &str, limit: u64, window_ms: u64) -> bool {
        let now = now_ms();
        let window = now - now % window_ms.max(1);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            counts.retain(|_, (start, _)| *start == window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        entry.1 <= limit
    }
}

/// Where a client stands against a rate limit, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: RateLimit,
    pub remaining: u64,
    /// Milliseconds until the window ends.
    pub reset_ms: u64,
}

impl RateStatus {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up) and
    /// `RateLimit-Policy` (`<count>;w=<window seconds>`).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("ratelimit-limit", self.limit.count.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_ms.div_ceil(1000).to_string()),
            (
                "ratelimit-policy",
                format!(
                    "{};w={}",
                    self.limit.count,
                    self.limit.window_ms.div_ceil(1000)
                ),
            ),
        ]
    }
}
