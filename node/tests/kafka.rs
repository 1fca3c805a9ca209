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

/// Kafka goes down: a publish answers 503 problem+json with `Retry-After` within the request
/// timeout and nothing is half-accepted; when Kafka is back, publishing works again and every
/// accepted message reaches the subscriber, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_gives_503_then_delivery_resumes_without_loss() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\nprobe_interval = \"200ms\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\nrequest_timeout = \"2s\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"50ms\"\nretry_max = \"500ms\"\n",
        mock.bootstrap_servers()
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/outage"), &[]).await;
    let publish = |body: String| {
        let client = node.client.clone();
        let url = format!("{}/webhook-receiver?topic=orders", node.base);
        async move {
            client
                .post(url)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let mut accepted = Vec::new();
    for i in 0..10 {
        let r = publish(format!("before-{i}")).await;
        assert_eq!(r.status(), 202);
        accepted.push(format!("before-{i}"));
    }
    cb.wait_for(&Method::POST, "/outage", 10, T).await;

    node.wait_broker_up("kafka", 1).await;
    mock.broker_down(1).unwrap();
    let started = tokio::time::Instant::now();
    let r = publish("during".to_owned()).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://eventgate.dev/problems/broker-unavailable"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "bounded: {elapsed:?}"
    );

    // The connectivity metric says so too.
    node.wait_broker_up("kafka", 0).await;
    mock.broker_up(1).unwrap();
    node.wait_broker_up("kafka", 1).await;
    let deadline = tokio::time::Instant::now() + 2 * T;
    let mut i = 0;
    while accepted.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never recovered"
        );
        let body = format!("after-{i}");
        if publish(body.clone()).await.status() == 202 {
            accepted.push(body);
            i += 1;
        }
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got: Vec<String> = cb
            .requests(&Method::POST, "/outage")
            .iter()
            .map(|p| String::from_utf8(p.body.to_vec()).unwrap())
            .filter(|b| b != "during")
            .collect();
        // At least once and in order: without repeats, exactly what was accepted.
        let mut seen = std::collections::BTreeSet::new();
        let firsts: Vec<String> = got.into_iter().filter(|b| seen.insert(b.clone())).collect();
        if firsts == accepted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {firsts:?}, accepted {accepted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.stop().await;
    drop(mock);
}

/// Gateway topic names map to broker names (a prefix, and renames): clients see the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_are_mapped_to_the_brokers() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("prod.orders.v1", 1, 1).unwrap();
    mock.create_topic("eg.audit", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\ntopic_prefix = \"eg.\"\n[broker.topic_map]\norders = \"prod.orders.v1\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\", \"audit\"]\n",
        mock.bootstrap_servers()
    ))
    .await;
    let mut sse =
        eventgate_chaos_tests::sse::Sse::open(&format!("{}/sse/orders", node.base), None).await;
    for (topic, body) in [("orders", "o1"), ("audit", "a1")] {
        let r = node
            .client
            .post(format!("{}/webhook-receiver?topic={topic}", node.base))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["topic"], topic, "the answer names the gateway's topic");
    }
    let event = sse.expect(T, "the mapped topic's message").await;
    assert_eq!(event.data, "o1");
    // On the broker, under the broker's names.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message as _;
    for (broker_topic, body) in [("prod.orders.v1", "o1"), ("eg.audit", "a1")] {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "check")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(broker_topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let message = consumer
            .poll(std::time::Duration::from_secs(10))
            .expect("a message")
            .unwrap();
        assert_eq!(message.payload(), Some(body.as_bytes()), "{broker_topic}");
    }
    // Unknown gateway topics are refused under the gateway's name.
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=nope", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    node.stop().await;
}

/// A webhook payload of exactly `webhook_receiver.max_body_bytes` (1 MiB by default) goes
/// through Kafka to a WebSub subscriber and an SSE reader byte for byte; librdkafka's own
/// default limit (1,000,000 bytes) refused it before. One byte more is refused by the gateway
/// with 413 naming the real limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_payload_goes_through_kafka_end_to_end() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("big", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"big\"]\n[websub]\nallow_private_callbacks = true\n",
        mock.bootstrap_servers()
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "big", &cb.url("/big"), &[]).await;
    let mut sse =
        eventgate_chaos_tests::sse::Sse::open(&format!("{}/sse/big", node.base), None).await;
    let payload: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=big", node.base))
        .header("content-type", "text/plain")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let posts = cb.wait_for(&Method::POST, "/big", 1, T).await;
    assert_eq!(posts[0].body.len(), payload.len());
    assert!(posts[0].body.as_ref() == payload.as_bytes());
    let event = sse.expect(T, "the 1 MiB event").await;
    assert_eq!(event.data.len(), payload.len());
    assert!(event.data == payload);

    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=big", node.base))
        .header("content-type", "text/plain")
        .body(format!("{payload}!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("1048576"),
        "{problem}"
    );
}

/// A key lands on the partition the Java client's partitioner (murmur2) gives it, as a
/// producer that is not the gateway — librdkafka configured like the Java client — puts it:
/// per-key order holds when the gateway's and other producers publish the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_where_java_compatible_producers_put_them() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("keyed", 12, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"keyed\"]\n",
        mock.bootstrap_servers()
    ))
    .await;
    let other: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let keys: Vec<String> = (0..12).map(|i| format!("customer-{i}")).collect();
    let mut spread = std::collections::BTreeSet::new();
    for key in &keys {
        let partition = other
            .send(
                FutureRecord::to("keyed").key(key.as_str()).payload("x"),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap()
            .partition;
        let r = node
            .client
            .post(format!(
                "{}/webhook-receiver?topic=keyed&key={key}",
                node.base
            ))
            .body("y")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["partition"].as_i64(),
            Some(i64::from(partition)),
            "key {key}"
        );
        spread.insert(partition);
    }
    assert!(spread.len() > 3, "keys spread: {spread:?}");
    node.stop().await;
}

/// Records of other producers: without a `content-type` header they take
/// `broker.kafka.content_type`; a `Content-Type` header (Java's spelling) counts whatever its
/// case; either way textual types reach SSE as text, not base64 `event: binary`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_producers_records_keep_their_text() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("feed", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\ncontent_type = \"application/json\"\n[topics]\nnames = [\"feed\"]\n",
        mock.bootstrap_servers()
    ))
    .await;
    let mut sse =
        eventgate_chaos_tests::sse::Sse::open(&format!("{}/sse/feed", node.base), None).await;
    let other: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let send = |payload: &'static str, headers: Option<OwnedHeaders>| {
        let mut record = FutureRecord::<(), str>::to("feed").payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        other.send(record, std::time::Duration::from_secs(10))
    };
    send("{\"city\":\"Zürich\"}", None).await.unwrap();
    send(
        "<city>Zürich</city>",
        Some(OwnedHeaders::new().insert(Header {
            key: "Content-Type",
            value: Some("application/xml"),
        })),
    )
    .await
    .unwrap();
    let first = sse.expect(T, "the JSON record").await;
    assert_eq!(first.event.as_deref(), None, "not `event: binary`");
    assert_eq!(first.data, "{\"city\":\"Zürich\"}");
    let second = sse.expect(T, "the XML record").await;
    assert_eq!(second.event.as_deref(), None);
    assert_eq!(second.data, "<city>Zürich</city>");
    node.stop().await;
}

/// Every record of `topic` (one partition) read by a consumer that is not the gateway.
fn records(bootstrap: &str, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} records",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

fn headers_of(m: &rdkafka::message::OwnedMessage) -> Vec<(String, String)> {
    use rdkafka::message::Headers as _;
    use rdkafka::Message as _;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Headers both ways: `X-Message-Header-*` of a webhook publish and the trace context become
/// Kafka headers (a repeated one kept twice); a WebSocket publish envelope sets key and
/// headers; another producer's headers reach the WebSub callback as `X-Message-Header-*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_headers_travel_both_ways() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::Message as _;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("h", 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{bootstrap}\"\n[topics]\nnames = [\"h\"]\n[websub]\nallow_private_callbacks = true\n[streams]\nallow_publish = true\n"
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "h", &cb.url("/h"), &[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=h", node.base))
        .header("x-message-header-region", "eu")
        .header("x-message-header-tag", "a")
        .header("X-Message-Header-Tag", "b")
        .header("traceparent", traceparent)
        .body("one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let ws_url = node.base.replace("http://", "ws://");
    let mut ws = common::stream::ws_open(&format!("{ws_url}/ws/h?envelope=json")).await;
    let publish = serde_json::json!({
        "type": "publish",
        "key": "customer-7",
        "headers": [["tag", "x"], ["tag", "y"]],
        "content_type": "application/json",
        "payload": "{\"two\":2}",
    });
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(publish.to_string().into()),
    )
    .await
    .unwrap();
    // The ack (messages of the topic may come first: the stream reads it too).
    loop {
        let frame = common::stream::ws_next(&mut ws, T).await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if doc["type"] == "ack" {
            break;
        }
        assert_ne!(doc["type"], "nack", "{doc}");
    }

    let other: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    other
        .send(
            FutureRecord::<(), str>::to("h").payload("three").headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "tenant",
                    value: Some("acme"),
                }),
            ),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();

    let got = records(&bootstrap, "h", 3);
    let first = headers_of(&got[0]);
    for pair in [
        ("region", "eu"),
        ("tag", "a"),
        ("tag", "b"),
        ("traceparent", traceparent),
    ] {
        assert!(
            first.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{pair:?} in {first:?}"
        );
    }
    assert_eq!(got[1].key(), Some(b"customer-7".as_slice()));
    let second = headers_of(&got[1]);
    assert!(second.contains(&("tag".to_owned(), "x".to_owned())));
    assert!(second.contains(&("tag".to_owned(), "y".to_owned())));
    assert!(second.contains(&("content-type".to_owned(), "application/json".to_owned())));

    let posts = cb.wait_for(&Method::POST, "/h", 3, T).await;
    let values = |post: &common::callback::Received, name: &str| -> Vec<String> {
        post.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&posts[0], "x-message-header-tag"), ["a", "b"]);
    assert_eq!(values(&posts[0], "traceparent"), [traceparent]);
    assert_eq!(values(&posts[1], "x-message-header-tag"), ["x", "y"]);
    assert_eq!(posts[2].body, "three");
    assert_eq!(values(&posts[2], "x-message-header-tenant"), ["acme"]);

    // A malformed envelope is refused with a nack; nothing is stored.
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(
            r#"{"type":"publish","payload":"x","payload_base64":"eA=="}"#.into(),
        ),
    )
    .await
    .unwrap();
    loop {
        let frame = common::stream::ws_next(&mut ws, T).await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if doc["type"] == "nack" {
            assert_eq!(doc["reason"], "invalid-envelope");
            break;
        }
    }
    node.stop().await;
}

/// A batching producer that is not ours (librdkafka, 500 records in few multi-record batches):
/// every record reaches a live SSE reader and an `earliest` WebSocket reader, in order, and a
/// reader resuming at an offset inside a batch gets the rest of it — nothing vanishes, no
/// gap. Then a transactional producer's committed records reach the live reader, and a reader
/// catching up to a fresh consumption (started at the broker's end) meets it without a gap
/// marker or a skipped-offset count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_and_transactional_records_all_arrive_without_gaps() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("batched", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\ncontent_type = \"text/plain\"\n[topics]\nnames = [\"batched\"]\n[streams]\ntopic_linger = \"100ms\"\n",
        mock.bootstrap_servers()
    ))
    .await;
    let mut live =
        eventgate_chaos_tests::sse::Sse::open(&format!("{}/sse/batched", node.base), None).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("linger.ms", "200")
        .set("batch.num.messages", "200")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..500)
        .map(|i| {
            let payload = format!("m{i}");
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::<(), str>::to("batched").payload(&payload),
                        std::time::Duration::from_secs(10),
                    )
                    .await
                    .map(|delivery| delivery.offset)
            }
        })
        .collect();
    let offsets: Vec<i64> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(offsets, (0..500).collect::<Vec<i64>>());
    for i in 0..500 {
        let event = live.expect(T, "a live record").await;
        assert_eq!(event.data, format!("m{i}"));
    }
    let ws = node.base.replacen("http://", "ws://", 1);
    let read = |from: &'static str, first: usize| {
        let url = format!("{ws}/ws/batched?from={from}");
        async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            for i in first..500 {
                let m = common::stream::ws_next(&mut socket, T).await.unwrap();
                assert_eq!(
                    m.into_text().unwrap().as_str(),
                    format!("m{i}"),
                    "from {from}"
                );
            }
        }
    };
    read("earliest", 0).await;
    // A resume token after offset 249: inside a batch of the producer's.
    read("250", 250).await;

    // Transactions: markers after each commit occupy offsets without messages.
    let txn: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("transactional.id", "eventgate-test-txn")
        .create()
        .unwrap();
    txn.init_transactions(T).unwrap();
    let mut txn_offsets = Vec::new();
    for t in 0..3 {
        txn.begin_transaction().unwrap();
        for j in 0..2 {
            let delivery = txn
                .send(
                    FutureRecord::<(), str>::to("batched").payload(&format!("t{t}.{j}")),
                    std::time::Duration::from_secs(10),
                )
                .await
                .unwrap();
            txn_offsets.push(delivery.offset);
        }
        txn.commit_transaction(T).unwrap();
    }
    // librdkafka's mock cluster writes no commit markers into the log (a real broker puts one
    // after each transaction's records), so the holes they leave are not exercised here: the
    // consumer's own position, which steps over them, is what the driver relies on there.
    assert_eq!(txn_offsets, [500, 501, 502, 503, 504, 505]);
    for t in 0..3 {
        for j in 0..2 {
            let event = live.expect(T, "a transactional record").await;
            assert_eq!(event.event.as_deref(), None, "{event:?}");
            assert_eq!(event.data, format!("t{t}.{j}"));
        }
    }
    // With no reader left, the topic's consumption stops; the next one starts at the broker's
    // end. A reader catching up to there from offset 500 gets the six records and then reads
    // on live: no gap marker before the next record.
    drop(live);
    node.wait_metric("eventgate_topic_consumptions 0").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}/ws/batched?from=500"))
        .await
        .unwrap();
    for t in 0..3 {
        for j in 0..2 {
            let m = common::stream::ws_next(&mut socket, T).await.unwrap();
            assert_eq!(m.into_text().unwrap().as_str(), format!("t{t}.{j}"));
        }
    }
    producer
        .send(
            FutureRecord::<(), str>::to("batched").payload("end"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let m = common::stream::ws_next(&mut socket, T).await.unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "end");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("eventgate_stream_offsets_skipped_total 0\n"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("skipped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node.stop().await;
    drop(mock);
}

/// `latest` on Kafka, where this node's topic reader trails the broker by a fetch: a message
/// whose publish was answered before a `from=latest` client connected is never its first
/// (30 rounds, the topic's consumption kept alive by another reader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_on_kafka_starts_after_what_was_acknowledged() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("race", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"race\"]\n",
        mock.bootstrap_servers()
    ))
    .await;
    let ws = node.base.replacen("http://", "ws://", 1);
    let (mut keeper, _) = tokio_tungstenite::connect_async(format!("{ws}/ws/race"))
        .await
        .unwrap();
    for round in 0..30 {
        common::websub::publish(
            &node,
            "race",
            "text/plain",
            format!("before-{round}").into_bytes(),
        )
        .await;
        let (mut reader, _) = tokio_tungstenite::connect_async(format!("{ws}/ws/race?from=latest"))
            .await
            .unwrap();
        common::websub::publish(
            &node,
            "race",
            "text/plain",
            format!("after-{round}").into_bytes(),
        )
        .await;
        let first = common::stream::ws_next(&mut reader, T).await.unwrap();
        assert_eq!(
            first.into_text().unwrap().as_str(),
            format!("after-{round}"),
            "round {round}"
        );
    }
    for round in 0..30 {
        for what in ["before", "after"] {
            let m = common::stream::ws_next(&mut keeper, T).await.unwrap();
            assert_eq!(m.into_text().unwrap().as_str(), format!("{what}-{round}"));
        }
    }
    node.stop().await;
    drop(mock);
}

/// One WebSocket's keyless frames stay on one partition (in order, as from one producer),
/// whichever it is; frames with a key go where Java's partitioner puts the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sockets_keyless_frames_stay_on_one_partition() {
    use futures_util::SinkExt;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("sticky", 6, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"sticky\"]\n[streams]\nallow_publish = true\n",
        mock.bootstrap_servers()
    ))
    .await;
    let ws_url = node.base.replace("http://", "ws://");
    // The partition of each ack, for `frames` sent on one socket.
    let acks = |frames: Vec<String>| {
        let url = format!("{ws_url}/ws/sticky?envelope=json");
        async move {
            let mut ws = common::stream::ws_open(&url).await;
            let mut partitions = Vec::new();
            for frame in frames {
                ws.send(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
                    .await
                    .unwrap();
                loop {
                    let m = common::stream::ws_next(&mut ws, T).await.unwrap();
                    let doc: serde_json::Value =
                        serde_json::from_str(m.into_text().unwrap().as_str()).unwrap();
                    if doc["type"] == "ack" {
                        partitions.push(doc["partition"].as_u64().unwrap());
                        break;
                    }
                }
            }
            partitions
        }
    };
    let mut chosen = std::collections::BTreeSet::new();
    for socket in 0..8 {
        let frames = (0..10).map(|i| format!("s{socket}-{i}")).collect();
        let partitions = acks(frames).await;
        assert_eq!(partitions.len(), 10);
        assert!(
            partitions.iter().all(|p| *p == partitions[0]),
            "socket {socket}: {partitions:?}"
        );
        chosen.insert(partitions[0]);
    }
    assert!(
        chosen.len() > 1,
        "sockets are not all on one partition: {chosen:?}"
    );
    // With a key, the key decides: the same key from two sockets, one partition.
    let keyed = || {
        vec![
            serde_json::json!({ "type": "publish", "key": "customer-7", "payload": "k" })
                .to_string(),
        ]
    };
    assert_eq!(acks(keyed()).await, acks(keyed()).await);
    node.stop().await;
    drop(mock);
}

/// Another producer's records without a `content-type` header take their topic's default:
/// `topics.content_types` first, then the content type the topic's API declares for its
/// messages (an AsyncAPI document imported after the node started), then the broker's
/// `content_type`; a record's own header always wins; a topic with no default stays binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_content_types_by_topic_then_api_then_broker() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    for topic in ["configured", "lamps.brightness", "plain", "routed-raw"] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    let second = MockCluster::new(1).unwrap();
    second.create_topic("routed-raw", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\ncontent_type = \"text/plain\"\n\
         [brokers.raw]\nkind = \"kafka\"\ntopics = [\"routed-raw\"]\n[brokers.raw.kafka]\nbootstrap_servers = \"{}\"\n\
         [topics]\nnames = [\"configured\", \"lamps.brightness\", \"plain\", \"routed-raw\"]\n\
         [topics.content_types]\nconfigured = \"application/json\"\n",
        mock.bootstrap_servers(),
        second.bootstrap_servers()
    ))
    .await;
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/import/lamps-kafka-3.0.yaml"
    ))
    .unwrap();
    let r = node
        .client
        .post(format!(
            "{}/admin/apis/import?topic.brightnessMeasured=lamps.brightness&topic.lampDim=lamps.dim",
            node.base
        ))
        .body(fixture)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Published and keyless, so that the test's reader may read its topic.
    let api: serde_json::Value = node
        .client
        .get(format!("{}/admin/apis/smart-lamps-kafka-api", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["security"][0], "api_key");
    let r = node
        .client
        .put(format!(
            "{}/admin/apis/smart-lamps-kafka-api/lifecycle",
            node.base
        ))
        .json(&serde_json::json!({ "state": "published" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // An application with a key and access to it, to read its topic.
    let admin = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        node.client
            .request(method, format!("{}/admin{path}", node.base))
            .json(&body)
            .send()
    };
    admin(reqwest::Method::PUT, "/plans/open", serde_json::json!({}))
        .await
        .unwrap();
    admin(
        reqwest::Method::PUT,
        "/applications/reader",
        serde_json::json!({ "permissions": [{ "topics": "*", "subscribe": true }] }),
    )
    .await
    .unwrap();
    let key: serde_json::Value = admin(
        reqwest::Method::POST,
        "/applications/reader/keys",
        serde_json::json!({}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let r = admin(
        reqwest::Method::PUT,
        "/applications/reader/access/smart-lamps-kafka-api",
        serde_json::json!({ "plan": "open" }),
    )
    .await
    .unwrap();
    assert!(r.status().is_success());

    let producer = |bootstrap: &str| -> FutureProducer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap()
    };
    let (first, other) = (
        producer(&mock.bootstrap_servers()),
        producer(&second.bootstrap_servers()),
    );
    let send = |p: &FutureProducer,
                topic: &'static str,
                payload: &'static str,
                header: Option<&'static str>| {
        let mut record = FutureRecord::<(), str>::to(topic).payload(payload);
        if let Some(ct) = header {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        let p = p.clone();
        async move {
            p.send(record, std::time::Duration::from_secs(10))
                .await
                .unwrap()
        }
    };
    // What a WebSocket envelope reader of `topic` says of the first record there.
    let first_envelope = |topic: &'static str| {
        let url = format!(
            "{}/ws/{topic}?from=earliest&envelope=json&access_token={key}",
            node.base.replacen("http://", "ws://", 1)
        );
        async move {
            let mut ws = common::stream::ws_open(&url).await;
            let m = common::stream::ws_next(&mut ws, T).await.unwrap();
            serde_json::from_str::<serde_json::Value>(m.into_text().unwrap().as_str()).unwrap()
        }
    };
    send(&first, "configured", "{\"a\":1}", None).await;
    send(&first, "lamps.brightness", "{\"lumens\":7}", None).await;
    send(&first, "plain", "hello", None).await;
    send(&other, "routed-raw", "raw", None).await;
    let doc = first_envelope("configured").await;
    assert_eq!(doc["content_type"], "application/json", "{doc}");
    assert_eq!(doc["payload"], "{\"a\":1}");
    let doc = first_envelope("lamps.brightness").await;
    assert_eq!(doc["content_type"], "application/json", "the API's: {doc}");
    let doc = first_envelope("plain").await;
    assert_eq!(doc["content_type"], "text/plain", "the broker's: {doc}");
    let doc = first_envelope("routed-raw").await;
    assert!(
        doc["content_type"].is_null(),
        "its broker has no default: {doc}"
    );
    assert!(doc["payload_base64"].is_string(), "{doc}");
    // A record's own type wins over every default.
    send(&first, "configured", "<a/>", Some("application/xml")).await;
    let url = format!(
        "{}/ws/configured?from=1&envelope=json",
        node.base.replacen("http://", "ws://", 1)
    );
    let mut ws = common::stream::ws_open(&url).await;
    let m = common::stream::ws_next(&mut ws, T).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(m.into_text().unwrap().as_str()).unwrap();
    assert_eq!(doc["content_type"], "application/xml", "{doc}");
    node.stop().await;
    drop((mock, second));
}

/// Another producer's nulls stay nulls: a header without a value is `null` in the envelope
/// (an empty one `""`), a tombstone (a key with no value) has `"payload": null` where an empty
/// value has `""`, SSE says `event: tombstone`, and a WebSub delivery of it carries
/// `X-Eventgate-Tombstone: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_headers_and_tombstones_are_not_empty_values() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("compacted", 1, 1).unwrap();
    let node = start(&format!(
        "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\ncontent_type = \"application/json\"\n[topics]\nnames = [\"compacted\"]\n[websub]\nallow_private_callbacks = true\n",
        mock.bootstrap_servers()
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "compacted", &cb.url("/c"), &[]).await;
    let mut sse =
        eventgate_chaos_tests::sse::Sse::open(&format!("{}/sse/compacted", node.base), None).await;
    let ws_url = node.base.replace("http://", "ws://");
    let mut ws = common::stream::ws_open(&format!("{ws_url}/ws/compacted?envelope=json")).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "none",
            value: None::<&str>,
        })
        .insert(Header {
            key: "empty",
            value: Some(""),
        });
    producer
        .send(
            FutureRecord::to("compacted")
                .key("k1")
                .payload("")
                .headers(headers),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to("compacted").key("k1"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let envelope = |m: tokio_tungstenite::tungstenite::Message| {
        serde_json::from_str::<serde_json::Value>(m.into_text().unwrap().as_str()).unwrap()
    };
    let empty = envelope(common::stream::ws_next(&mut ws, T).await.unwrap());
    assert_eq!(empty["payload"], "", "{empty}");
    assert!(empty["headers"]["none"].is_null(), "{empty}");
    assert!(empty["headers"].get("none").is_some(), "{empty}");
    assert_eq!(empty["headers"]["empty"], "", "{empty}");
    let tombstone = envelope(common::stream::ws_next(&mut ws, T).await.unwrap());
    assert!(
        tombstone
            .get("payload")
            .is_some_and(serde_json::Value::is_null),
        "{tombstone}"
    );
    assert_eq!(tombstone["key"], "k1");
    let first = sse.expect(T, "the empty value").await;
    assert_eq!((first.event.as_deref(), first.data.as_str()), (None, ""));
    let second = sse.expect(T, "the tombstone").await;
    assert_eq!(second.event.as_deref(), Some("tombstone"));
    let posts = cb.wait_for(&Method::POST, "/c", 2, T).await;
    assert!(posts[0].headers.get("x-eventgate-tombstone").is_none());
    assert_eq!(posts[1].headers["x-eventgate-tombstone"], "true");
    assert!(posts[1].body.is_empty());
    node.stop().await;
    drop(mock);
}
