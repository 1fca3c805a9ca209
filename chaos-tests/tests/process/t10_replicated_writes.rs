use std::time::Duration;

use eventgate_chaos_tests::{init_logging, run_ok, ClusterOptions, ProcessCluster};
use tracing::info;

/// Three processes: a write accepted by any node is readable from every node, and
/// `eventgate cluster status` shows one leader and three voters, all caught up.
#[tokio::test]
async fn write_through_any_node_is_readable_from_all() -> anyhow::Result<()> {
    init_logging();
    let cluster = ProcessCluster::start(ClusterOptions::default()).await?;
    let mut ids = Vec::new();
    for via in 1..=3u64 {
        for i in 0..5 {
            let id = format!("via{via}-{i}");
            let response = cluster.put_subscription(via, &id, "orders").await?;
            assert_eq!(response.status(), 201, "{}", response.text().await?);
            ids.push(id);
        }
    }
    info!("--- every node must hold all {} records", ids.len());
    for node in 1..=3 {
        cluster
            .wait_for_records(node, &ids, Duration::from_secs(10))
            .await?;
    }

    let url = cluster.nodes[&2].base_url();
    let table = run_ok(cluster.bin(), &["cluster", "status", "--node", &url])?;
    info!("cluster status:\n{table}");
    assert_eq!(table.matches(" voter ").count(), 3, "{table}");
    assert_eq!(table.matches("Leader").count(), 1, "{table}");
    let json = run_ok(
        cluster.bin(),
        &["cluster", "status", "--node", &url, "--json"],
    )?;
    let status: serde_json::Value = serde_json::from_str(&json)?;
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["reachable"], true, "{m}");
        assert!(m["applied_index"].as_u64().is_some(), "{m}");
    }
    Ok(())
}
