use std::time::Duration;

use eventgate_chaos_tests::init_logging;
use eventgate_raft_store::Command;
use tracing::info;

use eventgate_chaos_tests::inprocess::{subscription, Cluster};

/// With 10% of messages dropped and every message delayed 5 ms, writes still commit (Raft
/// retries) and all nodes converge on the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_and_converge_over_a_lossy_slow_network() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(3, Duration::from_secs(10)).await?;
    cluster
        .wait_for_leader(1, None, Duration::from_secs(10))
        .await?;
    info!("--- 10% loss, 5 ms delay");
    cluster.router.set_drop_probability(0.1);
    cluster.router.set_delay(Duration::from_millis(5));
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let id = format!("lossy-{i:02}");
        let via = 1 + i % 3;
        cluster.nodes[&via]
            .write(Command::UpsertSubscription(subscription(&id)))
            .await?;
        expected.push(id);
    }
    cluster.router.heal();
    cluster.wait_converged(0, Duration::from_secs(10)).await?;
    for id in cluster.nodes.keys() {
        assert_eq!(cluster.ids(*id), expected, "node {id}");
    }
    Ok(())
}
