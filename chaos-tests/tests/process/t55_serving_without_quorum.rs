use std::time::Duration;

use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::subscriber::{subscribe, Subscriber};
use eventgate_chaos_tests::{get_json, init_logging, wait, ClusterOptions, ProcessCluster};
use rdkafka::mocking::MockCluster;
use tokio::time::Instant;
use tracing::info;

async fn readyz(client: &reqwest::Client, base: &str, path: &str) -> (u16, serde_json::Value) {
    match client.get(format!("{base}{path}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or_default())
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// The data plane does not need Raft. Two of three nodes SIGKILLed: the survivor stays ready
/// for the load balancer (`/readyz` 200, `control_plane: no-quorum`) while `/readyz/control`
/// fails; it accepts publishes, streams them over SSE and keeps delivering the WebSub
/// subscription it owns; it refuses a new subscription at once with 503 `no-quorum`. When the
/// others return, the control plane is back and the cursor moves made meanwhile are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_quorum_keeps_serving_its_data_plane() -> anyhow::Result<()> {
    init_logging();
    let mock = MockCluster::new(1)?;
    mock.create_topic("orders", 1, 1)?;
    let subscriber = Subscriber::start().await?;
    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n",
            mock.bootstrap_servers()
        ),
        ..Default::default()
    })
    .await?;
    let survivor = 1u64;
    let base = cluster.nodes[&survivor].base_url();
    let client = cluster.client().clone();
    // A subscriber whose subscription the survivor owns.
    let callback_url = subscriber.one_per_node("orders", &[1, 2, 3])[&survivor].clone();
    let callback_path = callback_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        subscribe(&client, &base, "orders", &callback_url, None).await?,
        202
    );
    wait::until(
        "the subscription owned by the survivor",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let list = get_json(&client, &format!("{base}/admin/subscriptions"))
                .await
                .ok()?;
            let owned = list
                .as_array()?
                .iter()
                .any(|s| s["owner"] == survivor && s["state"] == "active");
            owned.then_some(())
        },
    )
    .await?;

    info!("--- SIGKILL nodes 2 and 3");
    cluster.kill(2)?;
    cluster.kill(3)?;
    let killed_at = Instant::now();
    let degraded = wait::until(
        "the survivor to report no quorum",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let (status, body) = readyz(&client, &base, "/readyz").await;
            (status == 200 && body["control_plane"] == "no-quorum").then_some(body)
        },
    )
    .await?;
    println!(
        "survivor degraded {} ms after losing its quorum: {degraded}",
        killed_at.elapsed().as_millis()
    );
    let (strict, _) = readyz(&client, &base, "/readyz/control").await;
    assert_eq!(strict, 503, "/readyz/control needs a quorum");

    let mut sse = Sse::try_open(&format!("{base}/sse/orders"), None).await?;
    let total = 50u32;
    let mut accepted = 0;
    for i in 0..total {
        let r = client
            .post(format!("{base}/webhook-receiver?topic=orders"))
            .header("content-type", "text/plain")
            .body(i.to_string())
            .send()
            .await?;
        if r.status() == 202 {
            accepted += 1;
        }
    }
    println!("publishes accepted without quorum: {accepted} of {total}");
    assert_eq!(
        accepted, total,
        "publishing does not need the control plane"
    );
    for i in 0..total {
        let event = sse.expect(Duration::from_secs(10), "an SSE event").await;
        assert_eq!(event.data, i.to_string());
    }
    wait::until(
        "WebSub deliveries without quorum",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (subscriber.received(&callback_path).len() >= total as usize).then_some(()) },
    )
    .await?;
    assert_eq!(
        subscriber.received(&callback_path),
        (0..total).collect::<Vec<_>>()
    );

    let asked = Instant::now();
    let late = form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.topic", "orders")
        .append_pair("hub.callback", &subscriber.url("late"))
        .finish();
    let r = client
        .post(format!("{base}/hub"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(late)
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    println!(
        "subscribe without quorum: {status} after {} ms: {body}",
        asked.elapsed().as_millis()
    );
    assert_eq!(status, 503);
    assert!(
        body["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("no-quorum"),
        "{body}"
    );

    info!("--- restart nodes 2 and 3");
    cluster.restart(2)?;
    cluster.restart(3)?;
    wait::until(
        "the control plane back",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { (readyz(&client, &base, "/readyz/control").await.0 == 200).then_some(()) },
    )
    .await?;
    wait::until(
        "the cursor moves made without quorum committed",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let list = get_json(&client, &format!("{base}/admin/subscriptions"))
                .await
                .ok()?;
            let cursor = list.as_array()?.iter().find_map(|s| {
                (s["callback"] == callback_url.as_str()).then(|| s["cursor"]["0"].as_u64())
            })??;
            (cursor >= u64::from(total)).then_some(())
        },
    )
    .await?;
    drop(mock);
    Ok(())
}
