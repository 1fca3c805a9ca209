use std::time::Duration;

use eventgate_chaos_tests::{init_logging, wait, ClusterOptions, ProcessCluster};
use tracing::info;

/// A follower down while the leader compacts its log past the follower's position catches up
/// from a snapshot when it comes back.
#[tokio::test]
async fn restarted_follower_catches_up_from_snapshot() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions {
        raft_toml: "snapshot_every_entries = 20\nkeep_entries_after_snapshot = 0\n".to_owned(),
        ..Default::default()
    })
    .await?;
    let (leader, _) = cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    info!(
        follower,
        "--- SIGKILL a follower, then write past two snapshots"
    );
    cluster.kill(follower)?;
    let mut ids = Vec::new();
    for i in 0..60 {
        let id = format!("rec-{i}");
        let response = cluster.put_subscription(leader, &id, "t").await?;
        assert!(response.status().is_success(), "{}", response.text().await?);
        ids.push(id);
    }
    let purged = wait::until(
        "the leader to purge its log",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let s = cluster.node_status(leader).await?;
            s["purged_index"].as_u64().filter(|p| *p >= 40)
        },
    )
    .await?;
    info!(purged, "--- leader purged its log; restart the follower");
    cluster.restart(follower)?;
    cluster
        .wait_for_records(follower, &ids, Duration::from_secs(20))
        .await?;
    let log = cluster.nodes[&follower].log_text();
    assert!(
        log.contains("snapshot installed"),
        "the follower must have caught up through a snapshot:\n{log}"
    );
    Ok(())
}
