//! The gateway on Kafka (librdkafka's in-process mock cluster): webhook receiver → WebSub
//! delivery, per-key order across partitions, unknown topics.

mod common;

use std::collections::BTreeMap;

use axum::http::Method;
use common::callback::CallbackServer;
use common::start;
use common::websub::{subscribe, T};
use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_to_websub_on_kafka() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 3, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n",
        mock.bootstrap_servers()
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/k"), &[("hub.secret", "s")]).await;

    let mut partitions = BTreeMap::new();
    for i in 0..30u32 {
        let key = format!("key{}", i % 5);
        let r = node
            .client
            .post(format!(
                "{}/webhook-receiver?topic=orders&key={key}",
                node.base
            ))
            .header("content-type", "text/plain")
            .body(format!("{key}:{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        partitions.insert(body["partition"].as_u64().unwrap(), ());
    }
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );

    let posts = cb.wait_for(&Method::POST, "/k", 30, T).await;
    // Per key (hence per partition) the order of publication is kept.
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    for post in &posts {
        let text = String::from_utf8(post.body.to_vec()).unwrap();
        let (key, n) = text.split_once(':').unwrap();
        let n: u32 = n.parse().unwrap();
        if let Some(prev) = last.insert(key.to_owned(), n) {
            assert!(n > prev, "{key}: {n} after {prev}");
        }
        assert_eq!(post.headers["content-type"], "text/plain");
        assert!(post.headers.get("x-hub-signature").is_some());
    }
    assert_eq!(last.len(), 5);

    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=missing", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    node.stop().await;
    drop(mock);
}
