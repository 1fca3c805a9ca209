//! The one wall clock of eventgate: unix milliseconds.
//!
//! Everything replicated carries wall-clock times chosen by the proposer (leases, retry
//! schedules, key expiry, quota windows), so every crate reads the time through this one
//! function. Durations and deadlines on one node use `tokio::time` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the system clock is set before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
