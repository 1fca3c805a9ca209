//! The MQTT driver against rumqttd, embedded (a real MQTT broker on a loopback port).

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Starts rumqttd on a free port of 127.0.0.1 (its `start` blocks: own thread) and waits
/// until it accepts connections.
async fn rumqttd() -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = rumqttd::ServerSettings {
        name: "v4".to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 4 * 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "rumqttd did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    port
}

/// The driver on rumqttd's MQTT 3.1.1 listener (MQTT 5 is tested on Mosquitto, in
/// `node/tests/mqtt.rs`).
async fn driver(port: u16, window: usize) -> Arc<MqttBroker> {
    let mut config = MqttConfig::new("127.0.0.1", port);
    config.protocol = MqttVersion::V311;
    config.content_type = "text/plain".to_owned();
    config.tap_messages = window;
    config.request_timeout = Duration::from_secs(5);
    let broker = MqttBroker::new(config);
    assert!(broker.wait_connected(Duration::from_secs(10)).await);
    broker
}

fn message(payload: String) -> OutgoingMessage {
    OutgoingMessage {
        payload: payload.into(),
        ..Default::default()
    }
}

async fn read(consumer: &mut Box<dyn PartitionConsumer>, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n && Instant::now() < deadline {
        got.extend(
            consumer
                .next_batch(n - got.len(), Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    got
}

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn publishes_are_acknowledged_and_read_in_order_by_streams() {
    let port = rumqttd().await;
    let broker = driver(port, 1000).await;
    let mut reader = broker.consumer("t/a", 0, StartAt::Latest).await.unwrap();
    let start = reader.position();
    assert_eq!(start >> 32, broker.conn.taps()["t/a"].epoch);
    for i in 0..40 {
        assert_eq!(
            broker
                .publish("t/a", message(format!("m{i}")))
                .await
                .unwrap(),
            None
        );
    }
    // Concurrent publishes: each answered once acknowledged, none confused with another.
    let concurrent = futures_util::future::join_all(
        (40..240).map(|i| broker.publish("t/a", message(format!("m{i}")))),
    )
    .await;
    assert!(concurrent.iter().all(|r| matches!(r, Ok(None))));
    let got = read(&mut reader, 240).await;
    assert_eq!(got.len(), 240);
    let expected: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&got[..40]), expected);
    let mut rest = payloads(&got[40..]);
    rest.sort();
    let mut want: Vec<String> = (40..240).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(rest, want);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset, start + i as u64);
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
    }
    assert_eq!(
        broker.latest_offsets("t/a").await.unwrap(),
        vec![(0, start + 240)]
    );
}

#[tokio::test]
async fn wildcard_filters_are_read_and_cannot_be_published_to() {
    let port = rumqttd().await;
    let broker = driver(port, 50).await;
    let mut reader = broker
        .consumer("sensors/+/temp", 0, StartAt::Latest)
        .await
        .unwrap();
    broker
        .publish("sensors/a/temp", message("a".into()))
        .await
        .unwrap();
    broker
        .publish("other/a/temp", message("x".into()))
        .await
        .unwrap();
    broker
        .publish("sensors/b/temp", message("b".into()))
        .await
        .unwrap();
    assert_eq!(payloads(&read(&mut reader, 2).await), ["a", "b"]);
    assert!(matches!(
        broker.publish("sensors/+/temp", message("no".into())).await,
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert!(matches!(
        broker.consumer("a/#/b", 0, StartAt::Latest).await,
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert!(matches!(
        broker.consumer("sensors/+/temp", 1, StartAt::Latest).await,
        Err(BrokerError::PartitionNotFound { .. })
    ));
}

#[tokio::test]
async fn tokens_resume_in_the_window_and_foreign_ones_read_live() {
    let port = rumqttd().await;
    let broker = driver(port, 50).await;
    let mut live = broker.consumer("w", 0, StartAt::Latest).await.unwrap();
    let start = live.position();
    for i in 0..80 {
        broker.publish("w", message(format!("m{i}"))).await.unwrap();
    }
    // A reader that fell out of the window (50) goes on from its oldest.
    let got = read(&mut live, 80).await;
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].offset, start + 30);
    // Inside the window (50 messages): exactly from there.
    let mut again = broker
        .consumer("w", 0, StartAt::Offset(start + 60))
        .await
        .unwrap();
    assert_eq!(again.skipped_from(start + 60), Some(0));
    assert_eq!(payloads(&read(&mut again, 20).await)[0], "m60");
    // Older than the window: from its oldest, and the count of what was missed is known.
    let old = broker
        .consumer("w", 0, StartAt::Offset(start + 5))
        .await
        .unwrap();
    assert_eq!(old.position(), start + 30);
    assert_eq!(old.skipped_from(start + 5), Some(25));
    // Another tap's token (other high bits): live, count unknown.
    let foreign = (start >> 32) % ((1 << 31) - 1) + 1;
    let foreign = broker
        .consumer("w", 0, StartAt::Offset(foreign << 32 | 3))
        .await
        .unwrap();
    assert_eq!(foreign.position(), start + 80);
    assert_eq!(foreign.skipped_from(3), None);
    // Earliest: the oldest this node keeps.
    let earliest = broker.consumer("w", 0, StartAt::Earliest).await.unwrap();
    assert_eq!(earliest.position(), start + 30);
}

#[tokio::test]
async fn a_session_holds_messages_from_its_opening_and_redelivers_what_was_not_committed() {
    let port = rumqttd().await;
    let broker = driver(port, 50).await;
    broker.open_session("sub1", "orders").await.unwrap();
    // Published while nobody is connected to the session: the broker holds them.
    for i in 0..10 {
        broker
            .publish("orders", message(format!("m{i}")))
            .await
            .unwrap();
    }
    let mut first = broker
        .session_consumer("sub1", "orders", 0, StartAt::Offset(100))
        .await
        .unwrap();
    let got = read(&mut first, 10).await;
    assert_eq!(
        payloads(&got),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(got[0].offset, 100, "numbering continues the cursor");
    first.commit(104);
    // A clean handover: the acknowledgements reach the broker before the DISCONNECT.
    first.close().await;
    // A new owner: the broker redelivers what was not acknowledged, then what is new.
    let mut second = broker
        .session_consumer("sub1", "orders", 0, StartAt::Offset(104))
        .await
        .unwrap();
    broker
        .publish("orders", message("m10".into()))
        .await
        .unwrap();
    let got = read(&mut second, 7).await;
    assert_eq!(
        payloads(&got),
        (4..11).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    second.commit(111);
    second.close().await;
    // Closing forgets the session: what is published while none exists is not held, so the
    // first message a new session gets is one published after it was opened.
    broker.close_session("sub1").await.unwrap();
    broker
        .publish("orders", message("after".into()))
        .await
        .unwrap();
    let mut fresh = broker
        .session_consumer("sub1", "orders", 0, StartAt::Latest)
        .await
        .unwrap();
    broker
        .publish("orders", message("next".into()))
        .await
        .unwrap();
    assert_eq!(payloads(&read(&mut fresh, 1).await), ["next"]);
}

#[tokio::test]
async fn without_a_broker_publishes_fail_fast_with_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = MqttBroker::new(MqttConfig::new("127.0.0.1", port));
    let started = Instant::now();
    let result = broker.publish("t", message("x".into())).await;
    assert!(
        matches!(result, Err(BrokerError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(broker.ping().await.is_err());
    assert!(broker.consumer("t", 0, StartAt::Latest).await.is_err());
}
