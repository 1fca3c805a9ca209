use std::time::Duration;

use bytes::Bytes;

use super::*;

fn message(payload: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        key: None,
        headers: Vec::new(),
        content_type: Some("application/octet-stream".to_owned()),
        payload: Bytes::copy_from_slice(payload),
        sticky: None,
    }
}

async fn read_all(broker: &EmbeddedBroker, topic: &str, from: StartAt) -> Vec<Message> {
    let mut consumer = broker.consumer(topic, 0, from).await.unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer
            .next_batch(100, Duration::from_millis(50))
            .await
            .unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn messages_come_back_byte_for_byte_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    broker.ensure_topic("orders").await.unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let first = OutgoingMessage {
        key: Some(Bytes::from_static(b"k1")),
        headers: vec![("x-trace".to_owned(), Bytes::from_static(b"abc"))],
        content_type: Some("application/json".to_owned()),
        payload: Bytes::from_static(br#"{"a":1}"#),
        sticky: None,
    };
    assert_eq!(
        broker
            .publish("orders", first.clone())
            .await
            .unwrap()
            .unwrap()
            .offset,
        0
    );
    assert_eq!(
        broker
            .publish("orders", message(&binary))
            .await
            .unwrap()
            .unwrap()
            .offset,
        1
    );
    let got = read_all(&broker, "orders", StartAt::Earliest).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].offset, 0);
    assert_eq!(got[0].key, first.key);
    let sent: Vec<_> = first
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    assert_eq!(got[0].headers, sent);
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(got[0].payload, first.payload);
    assert_eq!(got[1].offset, 1);
    assert_eq!(got[1].payload.as_ref(), binary.as_slice());
}

#[tokio::test]
async fn unknown_and_invalid_topics_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    assert!(!broker.topic_exists("nope").await.unwrap());
    assert!(matches!(
        broker.publish("nope", message(b"x")).await,
        Err(BrokerError::TopicNotFound { .. })
    ));
    for bad in ["", "..", "a/b", "spaces here", &"x".repeat(250)] {
        assert!(
            matches!(
                broker.ensure_topic(bad).await,
                Err(BrokerError::InvalidTopic { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        broker.consumer("nope", 0, StartAt::Earliest).await,
        Err(BrokerError::TopicNotFound { .. })
    ));
}

#[tokio::test]
async fn oversized_messages_are_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.max_message_bytes = 1024;
    let broker = EmbeddedBroker::open(config).unwrap();
    broker.ensure_topic("t").await.unwrap();
    assert!(matches!(
        broker.publish("t", message(&[0; 1025])).await,
        Err(BrokerError::MessageTooLarge {
            size: 1025,
            limit: 1024
        })
    ));
    assert_eq!(broker.offsets("t").unwrap(), (0, 0));
}

#[tokio::test]
async fn concurrent_publishers_get_dense_unique_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    broker.ensure_topic("t").await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..8u8 {
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..200u8 {
                let p = broker
                    .publish("t", message(&[task, i]))
                    .await
                    .unwrap()
                    .unwrap();
                offsets.push(p.offset);
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let offsets = t.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "per publisher order"
        );
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(all, (0..1600).collect::<Vec<u64>>());
}

#[tokio::test]
async fn reopening_recovers_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        broker.ensure_topic("t").await.unwrap();
        for i in 0..10u8 {
            broker.publish("t", message(&[i; 10])).await.unwrap();
        }
    }
    // A crash in the middle of a write: half a frame at the end of the segment.
    let segment = dir.path().join("t").join(format!("{:020}.log", 0));
    let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);

    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    assert_eq!(broker.offsets("t").unwrap(), (0, 10));
    let p = broker
        .publish("t", message(b"after"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.offset, 10);
    let got = read_all(&broker, "t", StartAt::Earliest).await;
    assert_eq!(got.len(), 11);
    assert_eq!(got[3].payload.as_ref(), &[3u8; 10]);
    assert_eq!(got[10].payload.as_ref(), b"after");
}

#[tokio::test]
async fn damage_in_a_closed_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 200;
    {
        let broker = EmbeddedBroker::open(config.clone()).unwrap();
        broker.ensure_topic("t").await.unwrap();
        for i in 0..20u8 {
            broker.publish("t", message(&[i; 50])).await.unwrap();
        }
    }
    let first = dir.path().join("t").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let err = EmbeddedBroker::open(config).unwrap_err();
    assert!(matches!(err, BrokerError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 300;
    let broker = EmbeddedBroker::open(config.clone()).unwrap();
    broker.ensure_topic("t").await.unwrap();
    for i in 0..30u8 {
        broker.publish("t", message(&[i; 40])).await.unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("t")).unwrap().count();
    assert!(segments > 3, "{segments} segments");
    let got = read_all(&broker, "t", StartAt::Offset(5)).await;
    assert_eq!(got.len(), 25);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset, 5 + i as u64);
        assert_eq!(m.payload.as_ref(), &[5 + i as u8; 40]);
    }
    drop(broker);
    let broker = EmbeddedBroker::open(config).unwrap();
    assert_eq!(broker.offsets("t").unwrap(), (0, 30));
}

#[tokio::test]
async fn retention_by_size_drops_oldest_segments_and_readers_skip_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 300;
    config.retention_bytes = Some(1000);
    let broker = EmbeddedBroker::open(config).unwrap();
    broker.ensure_topic("t").await.unwrap();
    let mut slow = broker.consumer("t", 0, StartAt::Earliest).await.unwrap();
    for i in 0..60u8 {
        broker.publish("t", message(&[i; 40])).await.unwrap();
    }
    let (start, end) = broker.offsets("t").unwrap();
    assert_eq!(end, 60);
    assert!(start > 0, "oldest segments deleted");
    let size: u64 = std::fs::read_dir(dir.path().join("t"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(size <= 1300, "{size} bytes kept");
    let batch = slow
        .next_batch(10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        batch[0].offset, start,
        "a reader behind retention resumes at the oldest kept"
    );
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_publish_and_times_out_empty() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    broker.ensure_topic("t").await.unwrap();
    broker.publish("t", message(b"old")).await.unwrap();
    let mut consumer = broker.consumer("t", 0, StartAt::Latest).await.unwrap();
    assert_eq!(consumer.position(), 1);
    let empty = consumer
        .next_batch(10, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(empty.is_empty());
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.publish("t", message(b"new")).await.unwrap() })
    };
    let got = consumer
        .next_batch(10, Duration::from_secs(10))
        .await
        .unwrap();
    publisher.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.as_ref(), b"new");
    assert_eq!(consumer.position(), 2);
}

#[test]
fn byte_fields_encode_exactly_as_sequences_of_u8_did() {
    #[derive(serde::Serialize)]
    struct AsSequences {
        timestamp_ms: u64,
        key: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
        content_type: Option<String>,
        payload: Vec<u8>,
    }
    let old = AsSequences {
        timestamp_ms: 7,
        key: Some(vec![1, 2, 3]),
        headers: vec![("h".to_owned(), vec![200, 201])],
        content_type: Some("text/plain".to_owned()),
        payload: (0..=255u8).collect(),
    };
    let new = StoredRecord {
        timestamp_ms: 7,
        key: Some(vec![1, 2, 3]),
        headers: vec![("h".to_owned(), serde_bytes::ByteBuf::from(vec![200, 201]))],
        content_type: Some("text/plain".to_owned()),
        payload: (0..=255u8).collect(),
    };
    assert_eq!(
        eventgate_raft_store::codec::encode(&old).unwrap(),
        eventgate_raft_store::codec::encode(&new).unwrap()
    );
}

#[tokio::test]
async fn age_retention_also_applies_to_idle_topics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 300;
    config.retention_age = Some(Duration::from_secs(3600));
    let broker = EmbeddedBroker::open(config).unwrap();
    broker.ensure_topic("t").await.unwrap();
    for i in 0..30u8 {
        broker.publish("t", message(&[i; 40])).await.unwrap();
    }
    assert_eq!(
        broker.offsets("t").unwrap().0,
        0,
        "nothing is an hour old yet"
    );
    // Nothing is written any more; an hour and a bit later the sweep removes every closed
    // segment, keeping the one being written.
    let later = now_ms() + 3_700_000;
    broker.enforce_retention_at(later);
    let (start, end) = broker.offsets("t").unwrap();
    assert_eq!(end, 30);
    assert!(start > 0, "closed segments past the age limit are gone");
    let segments = std::fs::read_dir(dir.path().join("t")).unwrap().count();
    assert_eq!(segments, 1);
}
