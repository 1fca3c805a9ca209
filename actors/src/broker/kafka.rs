//! The Kafka driver (rdkafka / librdkafka).
//!
//! - Produce: idempotent, `acks=all`; answered only once the broker acknowledged. The message
//!   key comes from the gateway (a header or query parameter); headers are mapped both ways and
//!   the content type travels as the `content-type` header.
//! - Consume: positional, not group-based: each reader assigns one partition at an offset
//!   (assign + seek). The gateway's cursors and resume tokens hold the offsets; no consumer group
//!   offsets are committed.
//! - Metadata (partition counts) is cached for [`METADATA_TTL`] and refreshed after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::{
    validate_topic_name, BrokerDriver, BrokerError, BrokerResult, Message, OutgoingMessage,
    PartitionConsumer, Position, StartAt,
};

/// How long a topic's partition count is trusted.
pub const METADATA_TTL: Duration = Duration::from_secs(30);
/// Longest wait of a fetch on an idle partition (see [`KafkaBroker::consumer`]).
const FETCH_WAIT_MAX_MS: &str = "20";
/// Header carrying a message's content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// Settings of the Kafka driver.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    pub client_id: String,
    /// Partitions and replication of topics the gateway creates.
    pub default_partitions: i32,
    pub replication_factor: i32,
    /// Bound on produce, metadata and admin requests.
    pub request_timeout: Duration,
    /// Further librdkafka properties (security, tuning), applied to every client.
    pub properties: Vec<(String, String)>,
    /// Largest payload the gateway publishes (`broker.max_message_bytes`): the producer's
    /// `message.max.bytes` is set to hold it with its key and headers.
    pub max_message_bytes: usize,
    /// The content type of a message that carries none (another producer's): without it,
    /// such a message is `application/octet-stream`.
    pub content_type: Option<String>,
}

/// Room for a record's key, headers and framing on top of its payload.
const RECORD_OVERHEAD: usize = 64 * 1024;

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "eventgate".to_owned(),
            default_partitions: 1,
            replication_factor: 1,
            request_timeout: Duration::from_secs(10),
            properties: Vec::new(),
            max_message_bytes: 1024 * 1024,
            content_type: None,
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            // Reconnect within a second of the broker's return (librdkafka backs off to 10 s).
            .set("reconnect.backoff.max.ms", "1000");
        c
    }

    /// Applies the operator's properties last, so that they override our defaults.
    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable {
        reason: format!("kafka: {e}"),
    }
}

/// The Kafka driver.
pub struct KafkaBroker {
    config: KafkaConfig,
    producer: FutureProducer,
    metadata: Arc<BaseConsumer>,
    admin: AdminClient<DefaultClientContext>,
    partitions: Mutex<HashMap<String, (u32, Instant)>>,
    /// The largest payload known to go through: the configured one, lowered to what the
    /// broker accepts once that is known ([`KafkaBroker::broker_message_limit`]).
    limit: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("bootstrap_servers", &self.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl KafkaBroker {
    /// Creates the clients; they connect lazily.
    pub fn new(config: KafkaConfig) -> BrokerResult<Arc<Self>> {
        let timeout_ms = config.request_timeout.as_millis().to_string();
        let mut producer = config.client();
        producer
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // The Java client's partitioner (murmur2 of the key; keyless: random), so that a
            // key lands where Java, kafka-python's and Confluent's Java-compatible producers
            // put it and per-key order holds when producers are mixed. librdkafka's default
            // (consistent_random, CRC32) agrees on few keys. `properties` may override it.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", &timeout_ms)
            // A webhook provider waits for the 202: linger 1 ms, not librdkafka's 5 ms.
            // Concurrent publishes still batch; `properties` may override it.
            .set("linger.ms", "1")
            // librdkafka refuses records over 1,000,000 bytes by default, below the gateway's
            // own limit: make room for the largest payload the gateway accepts.
            .set(
                "message.max.bytes",
                (config.max_message_bytes + RECORD_OVERHEAD)
                    .clamp(1000, 1_000_000_000)
                    .to_string(),
            );
        let producer: FutureProducer = config.finish(producer).create().map_err(unavailable)?;
        let mut metadata = config.client();
        metadata
            .set("group.id", "eventgate-metadata")
            .set("allow.auto.create.topics", "false");
        let metadata: BaseConsumer = config.finish(metadata).create().map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> = config
            .finish(config.client())
            .create()
            .map_err(unavailable)?;
        Ok(Arc::new(Self {
            limit: std::sync::atomic::AtomicUsize::new(config.max_message_bytes),
            config,
            producer,
            metadata: Arc::new(metadata),
            admin,
            partitions: Mutex::new(HashMap::new()),
        }))
    }

    /// The partition count of `topic`, or `None` if it does not exist.
    async fn partition_count(&self, topic: &str) -> BrokerResult<Option<u32>> {
        validate_topic_name(topic)?;
        if let Some((n, at)) = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            if at.elapsed() < METADATA_TTL {
                return Ok(Some(*n));
            }
        }
        let client = self.metadata.clone();
        let name = topic.to_owned();
        let timeout = self.config.request_timeout;
        let found = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(Some(&name), timeout)?;
            Ok::<_, KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().len() as u32)
                    .filter(|n| *n > 0),
            )
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        if let Some(n) = found {
            self.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(topic.to_owned(), (n, Instant::now()));
        }
        Ok(found)
    }

    /// The broker's `message.max.bytes` (the largest record batch it accepts), asked of one
    /// of its brokers; from then on, publishes larger than it allows (less record framing)
    /// are refused here with that limit, without a round trip.
    pub async fn broker_message_limit(&self) -> BrokerResult<usize> {
        use rdkafka::admin::{AdminOptions, ResourceSpecifier};
        let client = self.metadata.clone();
        let timeout = self.config.request_timeout;
        let broker = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, timeout)?;
            Ok::<_, KafkaError>(metadata.brokers().first().map(|b| b.id()))
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?
        .ok_or_else(|| unavailable("the cluster names no broker"))?;
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let described = self
            .admin
            .describe_configs(&[ResourceSpecifier::Broker(broker)], &options)
            .await
            .map_err(unavailable)?;
        let value = described
            .into_iter()
            .next()
            .and_then(|r| r.ok())
            .and_then(|r| r.get("message.max.bytes").and_then(|e| e.value.clone()))
            .ok_or_else(|| unavailable("the broker does not tell its message.max.bytes"))?;
        let batch: usize = value
            .parse()
            .map_err(|_| unavailable(format!("message.max.bytes `{value}`")))?;
        // A batch of one record: its framing (~70 bytes) and the headers and key.
        let payload = batch.saturating_sub(1024);
        self.limit
            .fetch_min(payload, std::sync::atomic::Ordering::Relaxed);
        Ok(batch)
    }

    /// The largest payload known to go through.
    pub fn message_limit(&self) -> usize {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn require_partitions(&self, topic: &str) -> BrokerResult<u32> {
        self.partition_count(topic)
            .await?
            .ok_or_else(|| BrokerError::TopicNotFound {
                topic: topic.to_owned(),
            })
    }
}

impl BrokerDriver for KafkaBroker {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        Box::pin(async move { Ok(self.partition_count(topic).await?.is_some()) })
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            if self.partition_count(topic).await?.is_some() {
                return Ok(());
            }
            let new = NewTopic::new(
                topic,
                self.config.default_partitions,
                TopicReplication::Fixed(self.config.replication_factor),
            );
            let options = AdminOptions::new().operation_timeout(Some(self.config.request_timeout));
            let results = self
                .admin
                .create_topics([&new], &options)
                .await
                .map_err(unavailable)?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(unavailable(format!("create topic `{name}`: {code}")))
                    }
                }
            }
            Ok(())
        })
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        Box::pin(self.require_partitions(topic))
    }

    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async move {
            let client = self.metadata.clone();
            let timeout = self.config.request_timeout;
            tokio::task::spawn_blocking(move || {
                let metadata = client.fetch_metadata(None, timeout)?;
                if metadata.brokers().is_empty() {
                    return Err(KafkaError::MetadataFetch(
                        RDKafkaErrorCode::BrokerNotAvailable,
                    ));
                }
                Ok(())
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
        })
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        Box::pin(async move {
            let n = self.require_partitions(topic).await?;
            let client = self.metadata.clone();
            let name = topic.to_owned();
            let timeout = self.config.request_timeout;
            tokio::task::spawn_blocking(move || {
                (0..n)
                    .map(|p| {
                        let (_, high) = client.fetch_watermarks(&name, p as i32, timeout)?;
                        Ok((p, high.max(0) as u64))
                    })
                    .collect::<Result<Vec<_>, KafkaError>>()
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        Box::pin(async move {
            let limit = self.message_limit();
            if message.payload.len() > limit {
                return Err(BrokerError::MessageTooLarge {
                    size: message.payload.len(),
                    limit,
                });
            }
            let partitions = self.require_partitions(topic).await?;
            let mut headers = OwnedHeaders::new();
            if let Some(ct) = &message.content_type {
                headers = headers.insert(Header {
                    key: CONTENT_TYPE_HEADER,
                    value: Some(ct.as_bytes()),
                });
            }
            for (k, v) in &message.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_ref()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .payload(message.payload.as_ref())
                .headers(headers);
            match (&message.key, message.sticky) {
                (Some(key), _) => record = record.key(key.as_ref()),
                (None, Some(sticky)) if partitions > 0 => {
                    record = record.partition((sticky % partitions) as i32)
                }
                (None, _) => {}
            }
            match self
                .producer
                .send(record, Timeout::After(self.config.request_timeout))
                .await
            {
                Ok(delivery) => Ok(Some(Position {
                    partition: delivery.partition as u32,
                    offset: delivery.offset as u64,
                })),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    Err(BrokerError::MessageTooLarge {
                        size: message.payload.len(),
                        limit: self.message_limit(),
                    })
                }
                Err((e, _)) => Err(unavailable(e)),
            }
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            let n = self.require_partitions(topic).await?;
            if partition >= n {
                return Err(BrokerError::PartitionNotFound {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            let mut reader = self.config.client();
            reader
                .set("group.id", "eventgate-reader")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("allow.auto.create.topics", "false")
                // Kafka answers a fetch as soon as data is there; brokers that hold it for the
                // whole wait (tansu does) would otherwise add librdkafka's 500 ms default to
                // every delivery. `properties` may override it.
                .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
            let consumer: StreamConsumer =
                self.config.finish(reader).create().map_err(unavailable)?;
            let (low, high) = {
                let client = self.metadata.clone();
                let name = topic.to_owned();
                let timeout = self.config.request_timeout;
                tokio::task::spawn_blocking(move || {
                    client.fetch_watermarks(&name, partition as i32, timeout)
                })
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?
            };
            let next = match start {
                StartAt::Earliest => low.max(0) as u64,
                StartAt::Latest => high.max(0) as u64,
                StartAt::Offset(o) => o.max(low.max(0) as u64),
            };
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(topic, partition as i32, Offset::Offset(next as i64))
                .map_err(unavailable)?;
            consumer.assign(&assignment).map_err(unavailable)?;
            Ok(Box::new(KafkaConsumer {
                consumer,
                topic: topic.to_owned(),
                partition,
                next,
                content_type: self.config.content_type.clone(),
            }) as Box<dyn PartitionConsumer>)
        })
    }
}

/// A positional reader of one Kafka partition.
struct KafkaConsumer {
    consumer: StreamConsumer,
    topic: String,
    partition: u32,
    next: u64,
    /// For messages without a `content-type` header.
    content_type: Option<String>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("next", &self.next)
            .finish()
    }
}

/// A record as a message. The content type is the first `content-type` header, whatever its
/// case (Java producers write `Content-Type`), else `default`.
fn to_message(m: &rdkafka::message::BorrowedMessage<'_>, default: Option<&String>) -> Message {
    let mut content_type = None;
    let mut headers = Vec::new();
    if let Some(h) = m.headers() {
        for header in h.iter() {
            match header.value {
                Some(value)
                    if header.key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER)
                        && content_type.is_none() =>
                {
                    content_type = Some(String::from_utf8_lossy(value).into_owned());
                }
                // A header without a value stays one (`null` in the envelope).
                value => headers.push((header.key.to_owned(), value.map(Bytes::copy_from_slice))),
            }
        }
    }
    Message {
        partition: m.partition() as u32,
        offset: m.offset() as u64,
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0).max(0) as u64,
        key: m.key().map(Bytes::copy_from_slice),
        headers,
        content_type: content_type.or_else(|| default.cloned()),
        payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        tombstone: m.payload().is_none(),
    }
}

impl KafkaConsumer {
    /// librdkafka's position on the partition (past control records), if it has one.
    fn fetch_position(&self) -> Option<u64> {
        let list = self.consumer.position().ok()?;
        let element = list.find_partition(&self.topic, self.partition as i32)?;
        match element.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }
    }
}

impl PartitionConsumer for KafkaConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) => {
                    // Nothing came: librdkafka's own position may still have moved past
                    // offsets that hold no message (transaction markers, compacted records),
                    // which a reader waiting for them must not take for missing messages.
                    self.next = self.next.max(self.fetch_position().unwrap_or(0));
                    return Ok(out);
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Ok(Ok(m)) => out.push(to_message(&m, self.content_type.as_ref())),
            }
            while out.len() < max.max(1) {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => out.push(to_message(&m, self.content_type.as_ref())),
                    Some(Err(e)) => return Err(unavailable(e)),
                    None => break,
                }
            }
            if let Some(last) = out.last() {
                self.next = last.offset + 1;
            }
            Ok(out)
        })
    }

    fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests;
