use std::time::Duration;

use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tokio::time::Instant;
use tracing::info;

/// A node left alone (two of three killed) answers a write with 503 problem+json after a
/// bounded wait, never hangs; once a peer is back the same write succeeds.
#[tokio::test]
async fn write_without_quorum_is_503_after_bounded_wait() -> anyhow::Result<()> {
    init_logging();
    let write_timeout = Duration::from_secs(2);
    let mut cluster = ProcessCluster::start(ClusterOptions {
        write_timeout,
        ..Default::default()
    })
    .await?;
    let (leader, _) = cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    let others: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    info!(?others, "--- SIGKILL two of three nodes");
    for n in &others {
        cluster.kill(*n)?;
    }
    let started = Instant::now();
    let response = cluster.put_subscription(leader, "lonely", "t").await?;
    let elapsed = started.elapsed();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = response.headers().get("retry-after").is_some();
    let body: serde_json::Value = response.json().await?;
    println!(
        "write on the former leader without quorum: {status} after {} ms: {body}",
        elapsed.as_millis()
    );
    assert_eq!(status, 503);
    assert_eq!(content_type, "application/problem+json");
    assert!(retry_after, "503 carries Retry-After");
    let kind = body["type"].as_str().unwrap_or_default();
    assert!(
        kind.ends_with("/commit-timeout") || kind.ends_with("/no-quorum"),
        "{body}"
    );
    assert!(
        elapsed < write_timeout * 3,
        "the answer must come after a bounded wait, took {elapsed:?}"
    );

    info!("--- bring one peer back: quorum again");
    cluster.restart(others[0])?;
    cluster
        .wait_for_leader(Duration::from_secs(20), Some(others[1]))
        .await?;
    let response = cluster.put_subscription(leader, "back", "t").await?;
    assert!(response.status().is_success(), "{}", response.text().await?);
    Ok(())
}
