//! The Kafka driver against librdkafka's in-process mock cluster (a real Kafka protocol peer).

use std::time::Duration;

use bytes::Bytes;
use rdkafka::mocking::MockCluster;

use super::*;

fn cluster(
    topics: &[(&str, i32)],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Arc<KafkaBroker>,
) {
    let mock = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in topics {
        mock.create_topic(topic, *partitions, 1)
            .expect("create topic");
    }
    let broker = KafkaBroker::new(KafkaConfig::new(mock.bootstrap_servers())).expect("clients");
    (mock, broker)
}

async fn drain(consumer: &mut Box<dyn PartitionConsumer>, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages",
            out.len()
        );
        out.extend(
            consumer
                .next_batch(100, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn messages_round_trip_with_key_headers_and_content_type() {
    let (_mock, broker) = cluster(&[("orders", 1)]);
    assert!(broker.topic_exists("orders").await.unwrap());
    assert!(!broker.topic_exists("nope").await.unwrap());
    let message = OutgoingMessage {
        key: Some(Bytes::from_static(b"k1")),
        headers: vec![("x-trace".to_owned(), Bytes::from_static(b"abc"))],
        content_type: Some("application/json".to_owned()),
        payload: Bytes::from_static(br#"{"a":1}"#),
        sticky: None,
    };
    let first = broker
        .publish("orders", message.clone())
        .await
        .unwrap()
        .unwrap();
    let second = broker
        .publish(
            "orders",
            OutgoingMessage {
                key: None,
                ..message.clone()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.partition, second.offset), (0, first.offset + 1));

    let mut consumer = broker
        .consumer("orders", 0, StartAt::Earliest)
        .await
        .unwrap();
    let got = drain(&mut consumer, 2).await;
    assert_eq!(got[0].offset, first.offset);
    assert_eq!(got[0].payload, message.payload);
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    let sent: Vec<_> = message
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    assert_eq!(got[0].headers, sent);
    assert_eq!(got[1].key, None);
    assert_eq!(consumer.position(), second.offset + 1);
}

#[tokio::test]
async fn consumers_start_where_told_and_latest_offsets_match() {
    let (_mock, broker) = cluster(&[("t", 2)]);
    assert_eq!(broker.partitions("t").await.unwrap(), 2);
    for i in 0..10u8 {
        broker
            .publish(
                "t",
                OutgoingMessage {
                    key: Some(Bytes::from(vec![i])),
                    payload: Bytes::from(vec![i]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let latest = broker.latest_offsets("t").await.unwrap();
    let total: u64 = latest.iter().map(|(_, o)| o).sum();
    assert_eq!(total, 10, "{latest:?}");
    for (partition, end) in latest {
        if end < 2 {
            continue;
        }
        let mut from = broker
            .consumer("t", partition, StartAt::Offset(end - 2))
            .await
            .unwrap();
        let got = drain(&mut from, 2).await;
        assert_eq!(
            got.iter().map(|m| m.offset).collect::<Vec<_>>(),
            vec![end - 2, end - 1]
        );
        let mut latest = broker
            .consumer("t", partition, StartAt::Latest)
            .await
            .unwrap();
        assert_eq!(latest.position(), end);
        let none = latest
            .next_batch(10, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(none.is_empty());
    }
    assert!(matches!(
        broker.consumer("t", 7, StartAt::Earliest).await,
        Err(BrokerError::PartitionNotFound { .. })
    ));
}

#[tokio::test]
async fn unknown_topics_are_not_found() {
    let (_mock, broker) = cluster(&[]);
    assert!(matches!(
        broker.publish("missing", OutgoingMessage::default()).await,
        Err(BrokerError::TopicNotFound { .. })
    ));
    assert!(matches!(
        broker.consumer("missing", 0, StartAt::Earliest).await,
        Err(BrokerError::TopicNotFound { .. })
    ));
}

#[tokio::test]
async fn a_payload_of_a_mebibyte_goes_through_and_a_larger_one_is_refused_with_the_limit() {
    // librdkafka's own default (`message.max.bytes` 1,000,000) refused these before.
    let (_mock, broker) = cluster(&[("big", 1)]);
    assert_eq!(broker.message_limit(), 1024 * 1024);
    let payload = Bytes::from(vec![b'x'; 1024 * 1024]);
    let position = broker
        .publish(
            "big",
            OutgoingMessage {
                key: None,
                headers: Vec::new(),
                content_type: Some("text/plain".to_owned()),
                payload: payload.clone(),
                sticky: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let mut consumer = broker
        .consumer("big", 0, StartAt::Offset(position.offset))
        .await
        .unwrap();
    let got = drain(&mut consumer, 1).await;
    assert_eq!(got[0].payload.len(), payload.len());
    assert_eq!(got[0].payload, payload);

    let refused = broker
        .publish(
            "big",
            OutgoingMessage {
                key: None,
                headers: Vec::new(),
                content_type: None,
                payload: Bytes::from(vec![b'x'; 1024 * 1024 + 1]),
                sticky: None,
            },
        )
        .await;
    match refused {
        Err(BrokerError::MessageTooLarge { size, limit }) => {
            assert_eq!((size, limit), (1024 * 1024 + 1, 1024 * 1024));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
}
