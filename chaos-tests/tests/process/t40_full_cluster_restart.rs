use std::time::Duration;

use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tracing::info;

/// Every committed write survives a full-cluster stop and start: first a clean stop (SIGTERM,
/// each node exits 0), then a crash of every node at once (SIGKILL).
#[tokio::test]
async fn full_cluster_stop_and_start_keeps_every_committed_write() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions::default()).await?;
    let mut ids = Vec::new();
    for i in 0..30 {
        let id = format!("first-{i}");
        let response = cluster.put_subscription(1 + i % 3, &id, "t").await?;
        assert!(response.status().is_success());
        ids.push(id);
    }

    info!("--- SIGTERM every node");
    for node in 1..=3 {
        let code = cluster.terminate(node, Duration::from_secs(15)).await?;
        assert_eq!(code, Some(0), "node {node} must exit 0 on SIGTERM");
    }
    restart_all_and_check(&mut cluster, &ids).await?;

    for i in 0..30 {
        let id = format!("second-{i}");
        let response = cluster.put_subscription(1 + i % 3, &id, "t").await?;
        assert!(response.status().is_success());
        ids.push(id);
    }
    info!("--- SIGKILL every node at once");
    for node in 1..=3 {
        cluster.kill(node)?;
    }
    restart_all_and_check(&mut cluster, &ids).await?;
    Ok(())
}

/// Starts every node again and waits until each holds exactly `ids`.
async fn restart_all_and_check(cluster: &mut ProcessCluster, ids: &[String]) -> anyhow::Result<()> {
    for node in 1..=3 {
        cluster.restart(node)?;
    }
    cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    for node in 1..=3 {
        cluster
            .wait_for_records(node, ids, Duration::from_secs(20))
            .await?;
    }
    Ok(())
}
