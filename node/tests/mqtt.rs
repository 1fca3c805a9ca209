//! The gateway on MQTT, against Mosquitto (Debian's package, installed by `.ci/run`; each test
//! starts its own on loopback ports): webhook receiver → WebSub, → WebSocket, → SSE; MQTT
//! devices publishing straight to the broker; the broker stopped and started again mid-stream.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::Method;
use common::callback::CallbackServer;
use common::stream::{ws_next, ws_open};
use common::websub::{subscribe, T};
use eventgate_chaos_tests::mosquitto::Mosquitto;
use eventgate_chaos_tests::sse::Sse;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_tungstenite::tungstenite::Message;

fn config(mosquitto: &Mosquitto, extra: &str) -> String {
    format!(
        "[broker]\nkind = \"mqtt\"\ntopic_prefix = \"eg/\"\nprobe_interval = \"200ms\"\n[broker.mqtt]\naddress = \"{}\"\ncontent_type = \"text/plain\"\nrequest_timeout = \"2s\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"50ms\"\nretry_max = \"500ms\"\n{extra}",
        mosquitto.address()
    )
}

/// A plain MQTT client (a device), its events on a channel of publishes.
async fn device(
    mosquitto: &Mosquitto,
    id: &str,
    subscribe_to: Option<&str>,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    if let Some(filter) = subscribe_to {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    let wait_suback = subscribe_to.is_some();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::ConnAck(_)) if !wait_suback => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(format!(
                        "{} {}",
                        p.topic,
                        String::from_utf8_lossy(&p.payload)
                    ));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(T, ready_rx).await.unwrap().unwrap();
    (client, rx)
}

async fn publish(node: &common::TestNode, body: &str) -> reqwest::Response {
    node.client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_to_websub_ws_and_sse_on_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    let node = common::start(&config(&mosquitto, "")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/m"), &[("hub.secret", "s")]).await;
    let mut sse = Sse::open(&format!("{}/sse/orders", node.base), None).await;
    let mut ws = ws_open(&format!(
        "{}/ws/orders",
        node.base.replace("http://", "ws://")
    ))
    .await;
    let (_watcher, mut on_broker) = device(&mosquitto, "watcher", Some("eg/#")).await;
    let ws_base = node.base.replace("http://", "ws://");

    let mut sent = Vec::new();
    for i in 0..50 {
        let body = format!("m{i}");
        let r = publish(&node, &body).await;
        assert_eq!(r.status(), 202);
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            answer,
            serde_json::json!({ "topic": "orders" }),
            "no offsets on MQTT"
        );
        sent.push(body);
    }
    // A device publishing straight to the broker reaches every entrypoint too.
    let (device_client, _) = device(&mosquitto, "sensor-1", None).await;
    device_client
        .publish("eg/orders", QoS::AtLeastOnce, false, "from-device")
        .await
        .unwrap();
    sent.push("from-device".to_owned());

    let posts = cb.wait_for(&Method::POST, "/m", sent.len(), T).await;
    let got: Vec<String> = posts
        .iter()
        .map(|p| String::from_utf8(p.body.to_vec()).unwrap())
        .collect();
    assert_eq!(got, sent, "WebSub: all, in order");
    assert_eq!(posts[0].headers["content-type"], "text/plain");
    assert!(posts[0].headers.get("x-hub-signature").is_some());

    let mut ids = BTreeSet::new();
    for want in &sent {
        let event = sse.expect(T, "an SSE event").await;
        assert_eq!(&event.data, want);
        ids.insert(event.id.expect("an id"));
    }
    assert_eq!(ids.len(), sent.len(), "distinct resume tokens");
    for want in &sent {
        match ws_next(&mut ws, T).await {
            Ok(Message::Text(text)) => assert_eq!(text.as_str(), want),
            other => panic!("{other:?}"),
        }
    }
    // On the broker, under the broker's name.
    for want in &sent {
        let seen = tokio::time::timeout(T, on_broker.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, format!("eg/orders {want}"));
    }

    // Resuming on the same node from a token inside its window: exactly the rest.
    let mut resumed = Sse::open(
        &format!("{}/sse/orders", node.base),
        Some(&sse.last_id.clone().unwrap()),
    )
    .await;
    publish(&node, "after-resume").await;
    assert_eq!(resumed.expect(T, "next").await.data, "after-resume");
    // A token this node never issued (another node's, or one from before a restart) reads live
    // after a gap marker whose count is unknown.
    let mut foreign = Sse::open(&format!("{}/sse/orders", node.base), Some("7")).await;
    let gap = foreign.expect(T, "gap").await;
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert_eq!(gap.data, r#"{"missed":null}"#);
    publish(&node, "live").await;
    assert_eq!(foreign.expect(T, "live").await.data, "live");

    // WS publishing goes to the broker as well; the ack has no offset.
    let mut publisher = ws_open(&format!("{ws_base}/ws/orders?envelope=json")).await;
    use futures_util::SinkExt;
    publisher
        .send(Message::Text("via-ws".into()))
        .await
        .unwrap();
    loop {
        let Ok(Message::Text(text)) = ws_next(&mut publisher, T).await else {
            panic!("no ack")
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        if doc["type"] == "ack" {
            assert!(doc.get("offset").is_none());
            break;
        }
    }
    let posts = cb.wait_for(&Method::POST, "/m", sent.len() + 3, T).await;
    assert_eq!(posts.last().unwrap().body, "via-ws");

    // Wildcards cannot be published to: a mapped filter refuses publishes clearly.
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_topic_reads_many_mqtt_topics_and_refuses_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    let node = common::start(&config(
        &mosquitto,
        "[broker.topic_map]\ntemperatures = \"plant/+/temperature\"\n",
    ))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "temperatures", &cb.url("/t"), &[]).await;
    let mut sse = Sse::open(&format!("{}/sse/temperatures", node.base), None).await;
    let (device_client, _) = device(&mosquitto, "plant", None).await;
    for (topic, value) in [
        ("plant/a/temperature", "21"),
        ("plant/b/humidity", "40"),
        ("plant/b/temperature", "19"),
    ] {
        device_client
            .publish(topic, QoS::AtLeastOnce, false, value)
            .await
            .unwrap();
    }
    let posts = cb.wait_for(&Method::POST, "/t", 2, T).await;
    let got: Vec<&[u8]> = posts.iter().map(|p| p.body.as_ref()).collect();
    assert_eq!(got, [b"21".as_slice(), b"19".as_slice()]);
    // Which device sent each: the concrete MQTT topic travels with the message.
    let sent_on: Vec<&str> = posts
        .iter()
        .map(|p| p.headers["x-message-header-mqtt-topic"].to_str().unwrap())
        .collect();
    assert_eq!(sent_on, ["plant/a/temperature", "plant/b/temperature"]);
    assert_eq!(sse.expect(T, "first").await.data, "21");
    assert_eq!(sse.expect(T, "second").await.data, "19");
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=temperatures", node.base))
        .body("22")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("wildcards"),
        "{problem}"
    );
    // Over WebSocket: 1008 (the client's mistake), not 1011 (which says "reconnect").
    let ws_url = node.base.replace("http://", "ws://");
    let mut ws = ws_open(&format!("{ws_url}/ws/temperatures")).await;
    futures_util::SinkExt::send(&mut ws, Message::Text("22".into()))
        .await
        .unwrap();
    let closed = loop {
        if let Err(code) = ws_next(&mut ws, T).await {
            break code;
        }
    };
    assert_eq!(closed, Some(1008));
    node.stop().await;
}

/// Mosquitto is stopped and started again while messages are being published: publishes
/// during the outage get 503 problem+json with `Retry-After`; every message that was accepted
/// (202) reaches the WebSub subscriber (its persistent session, kept by Mosquitto across the
/// restart) and the SSE reader, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restart_mid_stream_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    let node = common::start(&config(&mosquitto, "")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/r"), &[]).await;
    let mut sse = Sse::open(&format!("{}/sse/orders", node.base), None).await;
    node.wait_broker_up("mqtt", 1).await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    let mut publish_some = async |n: usize, accepted: &mut Vec<String>, refused: &mut u32| {
        let until = accepted.len() + n;
        let deadline = tokio::time::Instant::now() + 2 * T;
        while accepted.len() < until {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing never recovered"
            );
            let body = format!("m{i}");
            i += 1;
            let r = publish(&node, &body).await;
            match r.status().as_u16() {
                202 => accepted.push(body),
                503 => {
                    assert!(r.headers().get("retry-after").is_some());
                    let problem: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(
                        problem["type"],
                        "https://eventgate.dev/problems/broker-unavailable"
                    );
                    *refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("publish answered {other}"),
            }
        }
    };
    publish_some(100, &mut accepted, &mut refused).await;
    mosquitto.stop().unwrap();
    node.wait_broker_up("mqtt", 0).await;
    let r = publish(&node, "during").await;
    assert_eq!(r.status(), 503);
    mosquitto.restart().await.unwrap();
    publish_some(100, &mut accepted, &mut refused).await;
    node.wait_broker_up("mqtt", 1).await;

    let deadline = tokio::time::Instant::now() + 2 * T;
    loop {
        let got: Vec<String> = cb
            .requests(&Method::POST, "/r")
            .iter()
            .map(|p| String::from_utf8(p.body.to_vec()).unwrap())
            .collect();
        let mut seen = BTreeSet::new();
        let firsts: Vec<String> = got.into_iter().filter(|b| seen.insert(b.clone())).collect();
        if firsts == accepted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "WebSub delivered {} of {} accepted ({firsts:?})\n{}",
            firsts.len(),
            accepted.len(),
            mosquitto.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The SSE reader (the node's own connection, a persistent session too) got them all.
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    while firsts.len() < accepted.len() {
        let event = sse.expect(T, "an accepted message on SSE").await;
        if event.event.is_none() && seen.insert(event.data.clone()) {
            firsts.push(event.data);
        }
    }
    assert_eq!(firsts, accepted);
    println!(
        "accepted {}, refused during the outage {refused}",
        accepted.len()
    );
    node.stop().await;
}

/// Topics on two brokers at once: `orders` on Kafka (the default broker, librdkafka's mock
/// cluster), `temperatures` on Mosquitto (`[brokers.plant]`); each entrypoint reaches the
/// right one, and each broker has its own connectivity metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_live_on_the_broker_they_are_routed_to() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    let node = common::start(&format!(
        "[broker]\nkind = \"kafka\"\nprobe_interval = \"200ms\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[brokers.plant]\nkind = \"mqtt\"\ntopics = [\"temperatures\"]\ntopic_prefix = \"plant/\"\nprobe_interval = \"200ms\"\n[brokers.plant.mqtt]\naddress = \"{}\"\ncontent_type = \"text/plain\"\n[topics]\nnames = [\"orders\", \"temperatures\"]\n[websub]\nallow_private_callbacks = true\n",
        mock.bootstrap_servers(),
        mosquitto.address()
    ))
    .await;
    let (_watcher, mut on_mosquitto) = device(&mosquitto, "watcher", Some("#")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/orders"), &[]).await;
    subscribe(&node, "temperatures", &cb.url("/temperatures"), &[]).await;
    let mut sse = Sse::open(&format!("{}/sse/temperatures", node.base), None).await;
    for (topic, body) in [("orders", "o1"), ("temperatures", "21.5")] {
        let r = node
            .client
            .post(format!("{}/webhook-receiver?topic={topic}", node.base))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let answer: serde_json::Value = r.json().await.unwrap();
        // Kafka numbers messages, MQTT does not.
        assert_eq!(
            answer.get("offset").is_some(),
            topic == "orders",
            "{answer}"
        );
    }
    assert_eq!(
        cb.wait_for(&Method::POST, "/orders", 1, T).await[0].body,
        "o1"
    );
    assert_eq!(
        cb.wait_for(&Method::POST, "/temperatures", 1, T).await[0].body,
        "21.5"
    );
    assert_eq!(sse.expect(T, "the MQTT topic's message").await.data, "21.5");
    let seen = tokio::time::timeout(T, on_mosquitto.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, "plant/temperatures 21.5");
    // Only the MQTT topic's messages go to Mosquitto: after another Kafka message, the next
    // thing Mosquitto carries is the next temperature.
    for (topic, body) in [("orders", "o2"), ("temperatures", "22.0")] {
        let r = node
            .client
            .post(format!("{}/webhook-receiver?topic={topic}", node.base))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(
        cb.wait_for(&Method::POST, "/orders", 2, T).await[1].body,
        "o2"
    );
    let seen = tokio::time::timeout(T, on_mosquitto.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, "plant/temperatures 22.0");
    node.wait_broker_up("kafka", 1).await;
    node.wait_broker_up("plant", 1).await;
    node.stop().await;
    drop(mock);
}

/// MQTT 5 carries what MQTT 3.1.1 cannot: a device publishing with a content type, user
/// properties and a key (`eventgate-key`) reaches a WebSub subscriber with that content type
/// and a WebSocket reader with all three in its envelope; a webhook publish's content type
/// travels to the broker and back. On `protocol = "3.1.1"` every message gets the configured
/// content type and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_carries_content_type_headers_and_key_end_to_end() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    let node = common::start(&config(&mosquitto, "")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/m5"), &[]).await;
    let mut ws = ws_open(&format!(
        "{}/ws/orders?envelope=json",
        node.base.replace("http://", "ws://")
    ))
    .await;

    // A device speaking MQTT 5.
    let mut options = rumqttc::v5::MqttOptions::new("sensor-5", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (device, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let properties = PublishProperties {
        content_type: Some("application/xml".to_owned()),
        user_properties: vec![
            ("trace".to_owned(), "abc-123".to_owned()),
            ("eventgate-key".to_owned(), "device-7".to_owned()),
        ],
        ..Default::default()
    };
    device
        .publish_with_properties(
            "eg/orders",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "<reading v=\"7\"/>",
            properties,
        )
        .await
        .unwrap();
    // The device's message first (its client sends in the background), then a webhook
    // provider's JSON.
    cb.wait_for(&Method::POST, "/m5", 1, T).await;
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("content-type", "application/json")
        .body(r#"{"v":8}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let posts = cb.wait_for(&Method::POST, "/m5", 2, T).await;
    assert_eq!(posts[0].headers["content-type"], "application/xml");
    assert_eq!(posts[0].body.as_ref(), b"<reading v=\"7\"/>");
    assert_eq!(posts[1].headers["content-type"], "application/json");

    let mut envelopes = Vec::new();
    for _ in 0..2 {
        match ws_next(&mut ws, T).await {
            Ok(Message::Text(text)) => {
                envelopes.push(serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap())
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(envelopes[0]["content_type"], "application/xml");
    assert_eq!(envelopes[0]["headers"]["trace"], "abc-123");
    assert_eq!(envelopes[0]["key"], "device-7");
    assert_eq!(envelopes[0]["payload"], "<reading v=\"7\"/>");
    assert_eq!(envelopes[1]["content_type"], "application/json");
    assert_eq!(envelopes[1]["payload"], r#"{"v":8}"#);
    // Offsets stay exact as JavaScript numbers (below 2^53).
    for envelope in &envelopes {
        let offset = envelope["offset"].as_u64().unwrap();
        assert!(offset < 1 << 53, "{offset}");
    }

    // The same on MQTT 3.1.1: payloads only, the configured content type.
    let node311 = common::start(&config(&mosquitto, "").replace(
        "[broker.mqtt]\n",
        "[broker.mqtt]\nprotocol = \"3.1.1\"\nclient_id = \"eg311\"\n",
    ))
    .await;
    subscribe(&node311, "orders", &cb.url("/m311"), &[]).await;
    let r = node311
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node311.base))
        .header("content-type", "application/json")
        .body(r#"{"v":9}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let posts = cb.wait_for(&Method::POST, "/m311", 1, T).await;
    assert_eq!(posts[0].headers["content-type"], "text/plain");
}

/// Retained messages are a topic's current value, not events: a device's retained reading
/// (MQTT 5) reaches neither the WebSub subscriber (its session subscribing) nor a stream (the
/// tap subscribing), nor a stream opened after the tap was dropped and subscribed again;
/// readings published while they read arrive, a retained one among them (the broker forwards
/// it as an ordinary message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_not_replayed_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path()).await.unwrap();
    // A device speaking MQTT 5, its reading retained before anyone reads.
    let mut options = rumqttc::v5::MqttOptions::new("thermo-5", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (device, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) =
                event
            {
                let _ = acked_tx.send(());
            }
        }
    });
    let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    let send = |value: &'static str, retain: bool| {
        let device = device.clone();
        async move {
            device
                .publish("plant/p1/temperature", qos, retain, value)
                .await
                .unwrap();
        }
    };
    send("20", true).await;
    tokio::time::timeout(T, acked.recv())
        .await
        .unwrap()
        .unwrap();

    let node = common::start(&config(
        &mosquitto,
        "[broker.topic_map]\ntemperatures = \"plant/+/temperature\"\n[streams]\ntopic_linger = \"100ms\"\n",
    ).replace("request_timeout = \"2s\"\n", "request_timeout = \"2s\"\nstream_linger = \"200ms\"\n"))
    .await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "temperatures", &cb.url("/t"), &[]).await;
    let mut sse = Sse::open(&format!("{}/sse/temperatures", node.base), None).await;
    send("21", false).await;
    send("22", true).await;
    let posts = cb.wait_for(&Method::POST, "/t", 2, T).await;
    let got: Vec<&[u8]> = posts.iter().map(|p| p.body.as_ref()).collect();
    assert_eq!(
        got,
        [b"21".as_slice(), b"22".as_slice()],
        "not the retained 20"
    );
    // Which device: the concrete topic of the MQTT 5 publish, through the wildcard mapping.
    assert_eq!(
        posts[0].headers["x-message-header-mqtt-topic"],
        "plant/p1/temperature"
    );
    assert_eq!(sse.expect(T, "the first live reading").await.data, "21");
    assert_eq!(sse.expect(T, "the second").await.data, "22");

    // No reader: the topic's consumption and the MQTT tap go; a new reader subscribes the
    // tap again, and the broker sends its retained 22 with the subscription.
    drop(sse);
    node.wait_metric("eventgate_topic_consumptions 0").await;
    // The tap outlives the consumption by its linger.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut sse = Sse::open(&format!("{}/sse/temperatures", node.base), None).await;
    send("23", false).await;
    assert_eq!(
        sse.expect(T, "the next live reading").await.data,
        "23",
        "not the retained 22 again"
    );
    assert_eq!(
        cb.wait_for(&Method::POST, "/t", 3, T).await[2]
            .body
            .as_ref(),
        b"23"
    );
    node.stop().await;
}
