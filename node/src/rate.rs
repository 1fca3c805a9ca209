//! Where a client stands against a plan's rate limit: what a refusal carries and what every
//! accepted publish reports in the `RateLimit-*` headers (IETF draft `ratelimit-headers`).

use eventgate_raft_store::governance::RateLimit;

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
