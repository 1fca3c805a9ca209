use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eventgate_chaos_tests::subscriber::{subscribe, Subscriber};
use eventgate_chaos_tests::{init_logging, wait, ClusterOptions, ProcessCluster};
use rdkafka::mocking::MockCluster;
use tokio::time::Instant;
use tracing::info;

/// Three `eventgate` processes on one Kafka (librdkafka's mock cluster, on loopback TCP): 10k
/// messages published at a steady rate to a topic with three subscribers owned by three
/// different nodes; SIGKILL of one owner mid-stream. Every message reaches every subscriber at
/// least once and in order; duplicates and the time to resume are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websub_survives_sigkill_of_an_owner_without_loss() -> anyhow::Result<()> {
    init_logging();
    let mock = MockCluster::new(1)?;
    mock.create_topic("orders", 1, 1)?;
    owner_sigkill_without_loss(format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n",
        mock.bootstrap_servers()
    ))
    .await?;
    drop(mock);
    Ok(())
}

/// The scenario above on any broker: `broker_toml` points the nodes at it; the topic is
/// `orders`.
pub(crate) async fn owner_sigkill_without_loss(broker_toml: String) -> anyhow::Result<()> {
    let subscriber = Subscriber::start().await?;
    let log = subscriber.log.clone();

    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "{broker_toml}[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"50ms\"\nretry_max = \"500ms\"\n"
        ),
        ..Default::default()
    })
    .await?;

    // Three callbacks whose subscriptions rendezvous-hash to three different nodes.
    let chosen = subscriber.one_per_node("orders", &[1, 2, 3]);
    for (via, url) in &chosen {
        let base = cluster.nodes[via].base_url();
        let status = subscribe(cluster.client(), &base, "orders", url, Some("chaos")).await?;
        assert_eq!(status, 202);
    }
    let owners = wait::until(
        "three owned subscriptions",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let list = eventgate_chaos_tests::get_json(
                cluster.client(),
                &format!("{}/admin/subscriptions", cluster.nodes[&1].base_url()),
            )
            .await
            .ok()?;
            let owners: BTreeMap<String, u64> = list
                .as_array()?
                .iter()
                .filter(|s| s["state"] == "active")
                .filter_map(|s| Some((s["callback"].as_str()?.to_owned(), s["owner"].as_u64()?)))
                .collect();
            (owners.len() == 3).then_some(owners)
        },
    )
    .await?;
    info!(?owners, "--- subscriptions owned");
    let distinct: BTreeSet<u64> = owners.values().copied().collect();
    assert_eq!(distinct.len(), 3, "owners {owners:?}");

    let (leader, _) = cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    let victim = (1..=3).find(|n| *n != leader).expect("a follower");
    let victim_path = chosen[&victim].rsplit('/').next().unwrap().to_owned();
    let publishers: Vec<String> = (1..=3)
        .filter(|n| *n != victim)
        .map(|n| cluster.nodes[&n].base_url())
        .collect();

    let total = 10_000u32;
    let client = cluster.client().clone();
    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..total {
            // A steady 2000 messages a second.
            let due = started + Duration::from_micros(500 * u64::from(i));
            tokio::time::sleep_until(due).await;
            let base = &publishers[i as usize % publishers.len()];
            let r = client
                .post(format!("{base}/webhook-receiver?topic=orders"))
                .header("content-type", "text/plain")
                .body(i.to_string())
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 202, "publish {i}");
        }
    });

    wait::until(
        "3000 deliveries to the victim's subscriber",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async {
            let n = log.lock().unwrap().get(&victim_path).map_or(0, Vec::len);
            (n >= 3000).then_some(())
        },
    )
    .await?;
    info!(victim, "--- SIGKILL the owner of {victim_path}");
    cluster.kill(victim)?;
    let killed_at = Instant::now();
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
        let got = &log[path];
        let mut seen = BTreeSet::new();
        let firsts: Vec<u32> = got
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| seen.insert(*n))
            .collect();
        assert_eq!(
            firsts,
            (0..total).collect::<Vec<_>>(),
            "{path}: missing or out of order"
        );
        println!(
            "{path}: {} deliveries of {total} messages, {} duplicates",
            got.len(),
            got.len() - total as usize
        );
    }
    let resumed = log[&victim_path]
        .iter()
        .map(|(_, at)| *at)
        .find(|at| *at > killed_at)
        .expect("the killed owner's subscription resumed");
    println!(
        "{victim_path}: delivery resumed {} ms after SIGKILL of its owner (node {victim})",
        (resumed - killed_at).as_millis()
    );
    Ok(())
}
