use std::time::Duration;

use eventgate_chaos_tests::init_logging;
use eventgate_raft_store::control::ControlError;
use eventgate_raft_store::Command;
use tracing::info;

use eventgate_chaos_tests::inprocess::{subscription, Cluster};

/// The leader is isolated: its minority cannot commit (the write fails after the bounded
/// wait), the majority elects a new leader and commits, and after healing all three converge
/// on the majority's history — the minority's uncommitted write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_cannot_commit_majority_can_then_all_converge() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(3, Duration::from_secs(2)).await?;
    let old = cluster
        .wait_for_leader(1, None, Duration::from_secs(10))
        .await?;
    cluster.nodes[&old]
        .write(Command::UpsertSubscription(subscription("before")))
        .await?;

    info!(old, "--- isolate the leader");
    cluster.router.isolate(old);
    let minority = cluster.nodes[&old]
        .write(Command::UpsertSubscription(subscription("minority")))
        .await;
    assert!(
        matches!(
            minority,
            Err(ControlError::Timeout { .. } | ControlError::NoLeader { .. })
        ),
        "the isolated leader must not commit: {minority:?}"
    );

    let other = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != old)
        .expect("a peer");
    let new = cluster
        .wait_for_leader(other, Some(old), Duration::from_secs(10))
        .await?;
    info!(new, "--- the majority elected a leader; write through it");
    cluster.nodes[&other]
        .write(Command::UpsertSubscription(subscription("majority")))
        .await?;

    info!("--- heal");
    cluster.router.heal();
    cluster.wait_converged(0, Duration::from_secs(10)).await?;
    let expected = vec!["before".to_owned(), "majority".to_owned()];
    for id in cluster.nodes.keys() {
        assert_eq!(cluster.ids(*id), expected, "node {id}");
    }
    Ok(())
}
