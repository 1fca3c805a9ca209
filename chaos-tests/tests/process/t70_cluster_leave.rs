use std::time::Duration;

use eventgate_chaos_tests::{init_logging, run_ok, wait, ClusterOptions, ProcessCluster};
use tracing::info;

/// `eventgate cluster leave` removes the addressed member; it stops by itself, the others keep
/// a working two-voter cluster.
#[tokio::test]
async fn cluster_leave_removes_member_and_it_stops() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions::default()).await?;
    let url = cluster.nodes[&3].base_url();
    info!("--- node 3 leaves");
    let out = run_ok(cluster.bin(), &["cluster", "leave", "--node", &url])?;
    assert!(out.contains("left the cluster"), "{out}");
    let code = cluster.wait_exit(3, Duration::from_secs(15)).await?;
    assert_eq!(code, Some(0), "a node that left stops cleanly by itself");
    // The leave answered once the leader committed the new membership; node 1 applies it a
    // heartbeat later.
    let voters = wait::until(
        "node 1 to apply the two-voter membership",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let status = cluster.node_status(1).await?;
            let voters: Vec<u64> = status["voters"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect();
            (voters.len() == 2).then_some(voters)
        },
    )
    .await?;
    assert!(!voters.contains(&3), "{voters:?}");
    let response = cluster.put_subscription(2, "after-leave", "t").await?;
    assert!(response.status().is_success());
    Ok(())
}
