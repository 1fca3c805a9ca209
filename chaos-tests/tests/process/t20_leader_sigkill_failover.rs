use std::time::Duration;

use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tracing::info;

/// SIGKILL of the leader: the two survivors elect a new leader (the time is printed), writes
/// continue through them, and the killed node, restarted on its data directory, catches up.
#[tokio::test]
async fn leader_sigkill_then_new_leader_and_catch_up() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions::default()).await?;
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("before-{i}");
        let response = cluster.put_subscription(1 + i % 3, &id, "t").await?;
        assert!(response.status().is_success());
        ids.push(id);
    }
    let (old_leader, _) = cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    info!(old_leader, "--- SIGKILL the leader");
    cluster.kill(old_leader)?;
    let (new_leader, elapsed) = cluster
        .wait_for_leader(Duration::from_secs(15), Some(old_leader))
        .await?;
    println!(
        "leader election after SIGKILL of node {old_leader}: node {new_leader} leads after {} ms",
        elapsed.as_millis()
    );
    assert_ne!(new_leader, old_leader);

    let survivors: Vec<u64> = (1..=3).filter(|n| *n != old_leader).collect();
    for (i, via) in survivors.iter().cycle().take(10).enumerate() {
        let id = format!("after-{i}");
        let response = cluster.put_subscription(*via, &id, "t").await?;
        assert!(response.status().is_success(), "{}", response.text().await?);
        ids.push(id);
    }
    for node in &survivors {
        cluster
            .wait_for_records(*node, &ids, Duration::from_secs(10))
            .await?;
    }

    info!(old_leader, "--- restart the killed node");
    cluster.restart(old_leader)?;
    cluster
        .wait_for_records(old_leader, &ids, Duration::from_secs(20))
        .await?;
    Ok(())
}
