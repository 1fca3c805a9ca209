use std::time::Duration;

use eventgate_chaos_tests::init_logging;
use eventgate_chaos_tests::inprocess::{subscription, Cluster};
use eventgate_raft_store::{Command, OwnerMove, Response};
use tracing::info;

/// A leader cut off from the others decides from what it sees — everybody else silent — and
/// moves a live member's subscription to itself. Its write cannot commit; when the partition
/// heals it is forwarded to the new leader. Ownership decisions carry the term they were made
/// in, so the new leader's log refuses it: the live owner keeps the subscription (before, it
/// lost it, and its subscriber got the last moments again from the deposed leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_ownership_decision_is_refused_after_the_partition() -> anyhow::Result<()>
{
    init_logging();
    let cluster = Cluster::start(3, Duration::from_secs(10)).await?;
    let old = cluster
        .wait_for_leader(1, None, Duration::from_secs(10))
        .await?;
    let owner = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != old)
        .expect("a follower");
    let mut sub = subscription("s");
    sub.owner = Some(owner);
    cluster.nodes[&old]
        .write(Command::UpsertSubscription(sub))
        .await?;
    let term = cluster.nodes[&old].raft().metrics().borrow().current_term;

    info!(
        old,
        owner, "--- isolate the leader; it takes the subscription"
    );
    cluster.router.isolate(old);
    let deposed = cluster.nodes[&old].clone();
    let decision = tokio::spawn(async move {
        deposed
            .write(Command::MoveOwners {
                term,
                moves: vec![OwnerMove {
                    id: "s".to_owned(),
                    from: Some(owner),
                    to: old,
                    drain: false,
                }],
            })
            .await
    });
    let new = cluster
        .wait_for_leader(owner, Some(old), Duration::from_secs(10))
        .await?;
    info!(new, "--- the majority elected a leader; heal");
    cluster.router.heal();
    let answer = decision.await?;
    info!(?answer, "--- the deposed leader's decision");
    assert!(
        matches!(answer, Ok(Response::Refused { .. }) | Err(_)),
        "{answer:?}"
    );
    cluster.wait_converged(0, Duration::from_secs(10)).await?;
    for id in cluster.nodes.keys() {
        let now = cluster.nodes[id]
            .reader()
            .read(|s| s.subscriptions["s"].owner);
        assert_eq!(now, Some(owner), "node {id}");
    }
    Ok(())
}
