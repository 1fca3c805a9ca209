use std::collections::BTreeSet;
use std::time::Duration;

use eventgate_chaos_tests::subscriber::{subscribe, Deliveries, Subscriber};
use eventgate_chaos_tests::{get_json, init_logging, wait, ClusterOptions, ProcessCluster};
use rdkafka::mocking::MockCluster;
use tokio::time::Instant;
use tracing::info;

/// The longest gap between two deliveries to `path` that arrived within `around` of `at`.
fn longest_pause(log: &Deliveries, path: &str, at: Instant, around: Duration) -> Duration {
    let log = log.lock().unwrap();
    let times: Vec<Instant> = log[path]
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t + around >= at && *t <= at + around)
        .collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

async fn owner(cluster: &ProcessCluster, via: u64, callback: &str) -> Option<u64> {
    let list = get_json(
        cluster.client(),
        &format!("{}/admin/subscriptions", cluster.nodes[&via].base_url()),
    )
    .await
    .ok()?;
    list.as_array()?
        .iter()
        .find(|s| s["callback"] == callback && s["handover_to"].is_null())
        .and_then(|s| s["owner"].as_u64())
}

/// Planned moves repeat nothing. Three `eventgate` processes on one Kafka, three subscribers
/// owned by three nodes, 200 messages a second. SIGTERM of one owner (a rolling restart): its
/// subscription is handed over — drained, at its exact cursor — before the process exits,
/// pausing it for moments. The node comes back: once it has answered for the settling time,
/// rendezvous hashing gives the subscription back to it, by the same handover. Every message
/// reaches every subscriber exactly once and in order; the pauses are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_return_move_subscriptions_without_repeats() -> anyhow::Result<()> {
    init_logging();
    let mock = MockCluster::new(1)?;
    mock.create_topic("orders", 1, 1)?;
    let subscriber = Subscriber::start().await?;
    let log = subscriber.log.clone();

    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n",
            mock.bootstrap_servers()
        ),
        ..Default::default()
    })
    .await?;
    let chosen = subscriber.one_per_node("orders", &[1, 2, 3]);
    for url in chosen.values() {
        let base = cluster.nodes[&1].base_url();
        assert_eq!(
            subscribe(cluster.client(), &base, "orders", url, None).await?,
            202
        );
    }
    for (node, url) in &chosen {
        wait::until(
            &format!("{url} owned by node {node}"),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { (owner(&cluster, 1, url).await == Some(*node)).then_some(()) },
        )
        .await?;
    }
    let (leader, _) = cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    // The owner that is not the leader goes (a rolling restart takes any node; the leader
    // case adds an election, which WebSub deliveries do not wait for).
    let victim = (1..=3).find(|n| *n != leader).expect("a follower");
    let steady = (1..=3).find(|n| *n != victim).expect("another node");
    let victim_url = chosen[&victim].clone();
    let victim_path = victim_url.rsplit('/').next().unwrap().to_owned();

    let total = 4000u32;
    let client = cluster.client().clone();
    let publisher = cluster.nodes[&steady].base_url();
    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(started + Duration::from_millis(5 * u64::from(i))).await;
            let r = client
                .post(format!("{publisher}/webhook-receiver?topic=orders"))
                .header("content-type", "text/plain")
                .body(i.to_string())
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 202, "publish {i}");
        }
    });
    wait::until(
        "500 deliveries to the victim's subscriber",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async {
            let n = log.lock().unwrap().get(&victim_path).map_or(0, Vec::len);
            (n >= 500).then_some(())
        },
    )
    .await?;
    info!(victim, "--- SIGTERM the owner of {victim_path}");
    let terminated_at = Instant::now();
    let code = cluster.terminate(victim, Duration::from_secs(20)).await?;
    let exited_in = terminated_at.elapsed();
    assert_eq!(code, Some(0), "a clean exit");
    let new_owner = owner(&cluster, steady, &victim_url).await;
    assert!(
        new_owner.is_some_and(|o| o != victim),
        "handed over before exiting: {new_owner:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term_pause = longest_pause(&log, &victim_path, terminated_at, Duration::from_secs(1));

    info!(victim, "--- restart node {victim}");
    cluster.restart(victim)?;
    let restarted_at = Instant::now();
    let back = wait::until(
        "the subscription moved back to its rendezvous owner",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            (owner(&cluster, steady, &victim_url).await == Some(victim)).then_some(Instant::now())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back_pause = longest_pause(&log, &victim_path, back, Duration::from_secs(1));
    publishing.await?;

    for url in chosen.values() {
        let path = url.rsplit('/').next().unwrap().to_owned();
        wait::until(
            &format!("{path} to receive all {total}"),
            Duration::from_secs(120),
            Duration::from_millis(50),
            || async {
                let log = log.lock().unwrap();
                let distinct: BTreeSet<u32> = log.get(&path)?.iter().map(|(n, _)| *n).collect();
                (distinct.len() == total as usize).then_some(())
            },
        )
        .await?;
    }
    let log = log.lock().unwrap();
    for url in chosen.values() {
        let path = url.rsplit('/').next().unwrap();
        let got: Vec<u32> = log[path].iter().map(|(n, _)| *n).collect();
        println!(
            "{path}: {} deliveries of {total} messages, {} duplicates",
            got.len(),
            got.len() - total as usize
        );
        assert_eq!(
            got,
            (0..total).collect::<Vec<_>>(),
            "{path}: exactly once, in order"
        );
    }
    println!(
        "{victim_path}: SIGTERM of its owner (node {victim}): longest pause {} ms; the node exited {} ms after the signal",
        term_pause.as_millis(),
        exited_in.as_millis()
    );
    println!(
        "{victim_path}: back on node {victim} {} ms after its restart; longest pause at that move {} ms",
        (back - restarted_at).as_millis(),
        back_pause.as_millis()
    );
    assert!(
        term_pause < Duration::from_millis(500),
        "a SIGTERM pauses a subscription less than 500 ms: {term_pause:?}"
    );
    drop(mock);
    Ok(())
}
