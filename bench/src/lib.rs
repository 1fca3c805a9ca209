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
//! - `ingest`: `/webhook-receiver` requests/s and latency (closed loop) on the embedded broker,
//!   against `bare-server`, an axum server that stores nothing.
//! - `websub-throughput`: signed deliveries/s to 100 keep-alive local callbacks, against the
//!   same POSTs sent directly.
//! - `stream-fanout`: SSE/WebSocket fan-out to 1000 clients at a fixed publish rate, one and
//!   ten messages per publish (deliveries per server CPU-second, loss, p50/p99), and memory per
//!   idle connection, against `bare-broadcast` (axum + `tokio::sync::broadcast`, the ceiling)
//!   and Pushpin when installed.
//!
//! The gateway runs as its own process (`target/<profile>/eventgate`) so that its CPU time can
//! be read from `/proc`; the load runs in the benchmark process on the same two cores.

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

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A gateway process for a benchmark, stopped on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    pub child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `eventgate serve` (the binary next to this one) with `extra_toml`, on `port`.
    pub async fn start(port: u16, extra_toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("eventgate.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_connections_per_ip = 0\n[cluster]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n{extra_toml}",
                dir.path().join("data").display()
            ),
        )?;
        let bin = eventgate_chaos_tests::eventgate_bin();
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{base}/readyz")).await?;
        Ok(Self {
            child,
            base,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `url` answers 200.
pub async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{url} not ready after 10 s")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
