//! The broker-driver seam: every entrypoint publishes and consumes through [`BrokerDriver`], so
//! the embedded log ([`embedded`]), Kafka and MQTT plug in behind the same calls.
//!
//! Consumption is positional, not group-based: a consumer reads one partition from a position
//! the gateway chooses (a WebSub cursor, an SSE resume token), like Kafka's assign + seek. The
//! gateway's cursors, not the broker, remember where each reader is.

pub mod embedded;
pub mod kafka;
pub mod mapped;
pub mod mqtt;
pub mod routed;
pub mod typed;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub content_type: Option<String>,
    pub payload: Bytes,
    /// For a keyless message: its publisher (one WebSocket). Keyless messages with the same
    /// value land on the same partition (the value modulo the partition count), so one
    /// publisher's messages keep their order; without it, or with a key, the broker's
    /// partitioner decides. Single-partition brokers ignore it.
    pub sticky: Option<u32>,
}

/// A message read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: u32,
    pub offset: u64,
    /// Unix milliseconds at which the broker appended it.
    pub timestamp_ms: u64,
    pub key: Option<Bytes>,
    /// In order, a repeated name as often as it came; `None`: a header without a value (Kafka
    /// allows one), not an empty one.
    pub headers: Vec<(String, Option<Bytes>)>,
    pub content_type: Option<String>,
    pub payload: Bytes,
    /// The record has no value at all — a Kafka tombstone (a key's deletion under
    /// compaction) — as opposed to an empty one; `payload` is empty.
    pub tombstone: bool,
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest message still retained.
    Earliest,
    /// The next message to be published.
    Latest,
    /// This offset (clamped to what is retained).
    Offset(u64),
}

/// Errors of broker drivers.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic `{topic}` does not exist")]
    TopicNotFound { topic: String },
    #[error("`{topic}` is not a valid topic name: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("message of {size} bytes exceeds the broker's limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("partition {partition} of `{topic}` does not exist")]
    PartitionNotFound { topic: String, partition: u32 },
    #[error("broker unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("{path}: corrupt log: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl BrokerError {
    /// Whether the same call may succeed later (the broker is down or overloaded).
    pub fn is_retryable(&self) -> bool {
        matches!(self, BrokerError::Unavailable { .. })
    }
}

/// Result of broker operations.
pub type BrokerResult<T> = Result<T, BrokerError>;

/// A broker the gateway publishes to and consumes from.
pub trait BrokerDriver: Send + Sync + std::fmt::Debug + 'static {
    /// Short name for logs and metrics (`embedded`, `kafka`, `mqtt`).
    fn name(&self) -> &'static str;

    /// Whether `topic` exists.
    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>>;

    /// Creates `topic` if it does not exist.
    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>>;

    /// Number of partitions of `topic`.
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>>;

    /// The next offset of every partition of `topic`: where a reader starting "now" begins.
    fn latest_offsets<'a>(&'a self, topic: &'a str)
        -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>>;

    /// Appends `message` to `topic`; answers only once the broker holds it durably, with
    /// where it landed when the broker numbers messages (not MQTT).
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>>;

    /// Whether offsets name the same message on every node and across restarts (Kafka, the
    /// embedded log). MQTT numbers messages per node: resume tokens and cursors are local.
    fn offsets_global(&self, topic: &str) -> bool {
        let _ = topic;
        true
    }

    /// Makes the broker hold `topic`'s messages for WebSub subscription `subscription` from
    /// now on (MQTT: creates its persistent session). Positional brokers need nothing.
    fn open_session<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<()>> {
        let _ = (subscription, topic);
        Box::pin(async { Ok(()) })
    }

    /// Drops what the broker holds for `subscription` (it ended).
    fn close_session<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        let _ = subscription;
        Box::pin(async { Ok(()) })
    }

    /// The reader of one partition for WebSub subscription `subscription`, from `start`
    /// (its cursor). Positional brokers open a plain [`consumer`](Self::consumer); MQTT
    /// resumes the subscription's session, where the broker redelivers what was not
    /// committed and `start` only continues the numbering.
    fn session_consumer<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        let _ = subscription;
        self.consumer(topic, partition, start)
    }

    /// Checks that the broker answers (for readiness and the connectivity metric).
    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Opens a reader of one partition of `topic` from `start`.
    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>>;
}

/// A positional reader of one partition.
pub trait PartitionConsumer: Send + std::fmt::Debug {
    /// Up to `max` messages from the current position, waiting at most `wait` for the first
    /// one; empty when none came in time.
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>>;

    /// The offset of the next message this consumer will return.
    fn position(&self) -> u64;

    /// The reader is done with every message before `next` (MQTT sessions acknowledge them
    /// to the broker; positional brokers keep no state).
    fn commit(&mut self, next: u64) {
        let _ = next;
    }

    /// Ends the reader cleanly, after what it committed reached the broker (MQTT sessions:
    /// acknowledgements, then DISCONNECT, so a planned handover redelivers nothing). Dropping
    /// it instead is always safe: what was not acknowledged is redelivered.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// How many messages lie between `requested` (the start asked for) and this consumer's
    /// first position, or `None` when that is unknown (an MQTT token of another node).
    fn skipped_from(&self, requested: u64) -> Option<u64> {
        Some(self.position().saturating_sub(requested))
    }
}

/// Checks a topic name: 1 to 249 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..` (Kafka's
/// rules, so that a name valid here is valid on every broker).
pub fn validate_topic_name(topic: &str) -> BrokerResult<()> {
    let invalid = |reason| {
        Err(BrokerError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    if topic.is_empty() || topic.len() > 249 {
        return invalid("1 to 249 characters");
    }
    if topic == "." || topic == ".." {
        return invalid("`.` and `..` are reserved");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}
