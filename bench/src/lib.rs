//! # eventgate-bench
//!
//! Benchmarks, each a binary that prints its figures and, where there is one, the ratio to a
//! baseline measured in the same run:
//!
//! - `commit-latency`: control-plane writes (one node, and three nodes over QUIC on loopback,
//!   written through the leader and through a follower), against the latency of a bare sled
//!   append + flush, the floor of any durable commit on this disk.
//! - `failover`: leader election time after SIGKILL of the leader of a three-process cluster,
//!   over several runs (median, min, max).

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One line of figures: count, p50, p99, max (ms) and rate.
pub fn summary(name: &str, h: &Histogram<u64>, seconds: f64) -> String {
    format!(
        "{name:<34} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms  {:>8.0} ops/s",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len() as f64 / seconds
    )
}
