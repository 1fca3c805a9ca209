//! Leader election time after SIGKILL of the leader in a three-process cluster, over several
//! runs. Needs the `eventgate` binary of the same profile (or `EVENTGATE_BIN`).
//!
//! `cargo build --release -p eventgate && cargo run --release -p eventgate-bench --bin failover -- --runs 5`

use std::time::Duration;

use clap::Parser;
use eventgate_chaos_tests::{ClusterOptions, ProcessCluster};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut times = Vec::new();
    for run in 1..=args.runs {
        let mut cluster = ProcessCluster::start(ClusterOptions::default()).await?;
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(10), None)
            .await?;
        // Let the followers settle on the leader's heartbeats before the kill.
        let _ = cluster.put_subscription(leader, "warm", "t").await?;
        cluster.kill(leader)?;
        let (new_leader, elapsed) = cluster
            .wait_for_leader(Duration::from_secs(15), Some(leader))
            .await?;
        println!(
            "run {run}: SIGKILL node {leader} -> node {new_leader} leads after {} ms",
            elapsed.as_millis()
        );
        times.push(elapsed);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "election after SIGKILL over {} runs: median {} ms, min {} ms, max {} ms",
        times.len(),
        median.as_millis(),
        times[0].as_millis(),
        times[times.len() - 1].as_millis()
    );
    Ok(())
}
