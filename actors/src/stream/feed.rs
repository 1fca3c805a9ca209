//! One reader's view of a topic: from where it starts to the live ring, without gaps.
//!
//! A reader stands at a position vector (next offset per partition). It subscribes to the
//! topic's ring first, which carries everything after the ring's positions at that instant;
//! whatever lies between the reader's positions and those is read from the broker (catch-up),
//! then the ring is followed. Ring frames the reader already has are skipped; a frame beyond
//! the reader's position in its partition (messages the ring no longer held) is preceded by a
//! broker read of what is missing, so that a reader sees every message exactly once, in order
//! per partition. Falling behind the ring while live is the slow-consumer case: by policy the
//! reader is closed, or jumps to the ring's oldest frame and is told how much it missed.
//!
//! Tokens: a ring frame carries the topic's position vector after it. When the reader's vector
//! equals it (the usual case), the frame and its encodings are shared; otherwise the reader
//! gets its own copy with its own token, so that resuming from any id a client saw never skips
//! a message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::broker::{BrokerDriver, BrokerError, PartitionConsumer, StartAt};

use super::frame::{Batch, Frame};
use super::token;
use super::topic::{StreamError, TopicRegistry};
use super::{CloseReason, SlowConsumerPolicy, StreamSettings};

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The next message published.
    Latest,
    /// The oldest message retained.
    Earliest,
    /// After the message whose resume token this is.
    After(Vec<u64>),
}

impl Start {
    /// Parses `earliest`, `latest` or a resume token.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        match value {
            "latest" => Ok(Start::Latest),
            "earliest" => Ok(Start::Earliest),
            token => token::parse(token).map(Start::After),
        }
    }
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Chunk {
    /// Frames `start..end` of `batch`, in order.
    Frames {
        batch: Arc<Batch>,
        start: usize,
        end: usize,
    },
    /// `missed` messages this reader will never get (gone by retention, or dropped as a slow
    /// consumer under drop-oldest); `None` when the count is unknown (an MQTT resume token
    /// of another node: MQTT cannot replay).
    Gap { missed: Option<u64> },
}

impl Chunk {
    /// The frames of this chunk (none for a gap).
    pub fn frames(&self) -> &[Frame] {
        match self {
            Chunk::Frames { batch, start, end } => &batch.frames[*start..*end],
            Chunk::Gap { .. } => &[],
        }
    }
}

/// Consecutive empty broker reads after which offsets below the target are taken as absent
/// (Kafka leaves holes: transaction markers, compaction).
const EMPTY_READS_BEFORE_SKIP: u32 = 3;

/// One reader of one topic.
pub struct Feed {
    topic: Arc<str>,
    broker: Arc<dyn BrokerDriver>,
    rx: broadcast::Receiver<Arc<Batch>>,
    positions: Vec<u64>,
    target: Vec<u64>,
    earliest: Vec<bool>,
    current: Option<(Arc<Batch>, usize)>,
    catchup: HashMap<u32, Box<dyn PartitionConsumer>>,
    empty_reads: u32,
    policy: SlowConsumerPolicy,
    batch_max: usize,
    tolerate_lag: bool,
    resync: bool,
    pending_gap: u64,
    /// The pending gap's size is unknown.
    gap_unknown: bool,
    registry: TopicRegistry,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    skipped: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("topic", &self.topic)
            .field("positions", &self.positions)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Errors of opening a feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the resume token names {given} partitions; the topic has {has}")]
    TokenPartitions { given: usize, has: usize },
}

/// How long `latest` waits for the broker's end offsets before it settles for this node's ring.
const LATEST_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Where `latest` starts: after the last message the broker had acknowledged when the reader
/// connected. This node's ring can lag the broker by a moment (the topic reader has not yet
/// read what was just appended), so the broker's end offsets are asked and the ring's frames
/// below them skipped: a message whose publish was answered before the client connected is
/// never its first. Without global offsets (MQTT numbers what reaches this node), or when the
/// broker does not answer within [`LATEST_BOUND`], the ring's head is the start.
async fn latest_at_connect(broker: &Arc<dyn BrokerDriver>, topic: &str, ring: &[u64]) -> Vec<u64> {
    let mut from = ring.to_vec();
    if !broker.offsets_global(topic) {
        return from;
    }
    match tokio::time::timeout(LATEST_BOUND, broker.latest_offsets(topic)).await {
        Ok(Ok(ends)) => {
            for (p, end) in ends {
                if let Some(pos) = from.get_mut(p as usize) {
                    *pos = (*pos).max(end);
                }
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(%topic, error = %e, "end offsets unknown; `latest` starts at this node's ring")
        }
        Err(_) => {
            tracing::debug!(%topic, "end offsets not answered in time; `latest` starts at this node's ring")
        }
    }
    from
}

impl Feed {
    /// Opens a reader of `topic` from `start`.
    pub async fn open(
        registry: &TopicRegistry,
        broker: Arc<dyn BrokerDriver>,
        topic: &str,
        start: Start,
        settings: &StreamSettings,
    ) -> Result<Self, FeedError> {
        let live = registry.subscribe(topic).await?;
        let target = live.positions;
        let n = target.len();
        let mut gap_unknown = false;
        let (positions, earliest) = match start {
            Start::Latest => (
                latest_at_connect(&broker, topic, &target).await,
                vec![false; n],
            ),
            Start::Earliest => (vec![0; n], vec![true; n]),
            Start::After(mut given) => {
                if given.len() > n {
                    return Err(FeedError::TokenPartitions {
                        given: given.len(),
                        has: n,
                    });
                }
                // Partitions added since the token was issued are read from their start.
                let added = given.len()..n;
                given.resize(n, 0);
                let mut earliest = vec![false; n];
                for p in added {
                    earliest[p] = true;
                }
                // Ahead of this node's ring is fine (the ring lags the broker by moments; the
                // frames up to the token are skipped), ahead of the broker is not: such a
                // token comes from elsewhere, and reads from the end.
                if given.iter().zip(&target).any(|(g, t)| g > t) {
                    // Without global offsets (MQTT), such a token is another node's: what it
                    // missed cannot be known.
                    gap_unknown = !broker.offsets_global(topic);
                    let latest = broker
                        .latest_offsets(topic)
                        .await
                        .map_err(StreamError::from)?;
                    let global = broker.offsets_global(topic);
                    for (p, end) in latest {
                        if let Some(pos) = given.get_mut(p as usize) {
                            if *pos > end {
                                if global {
                                    tracing::warn!(%topic, partition = p, token = *pos, end, "resume token is beyond the end of the partition (a token of another broker?); reading from the end");
                                } else {
                                    // MQTT numbers messages per node: an ordinary event when a
                                    // client resumes on another node, not a fault.
                                    tracing::debug!(%topic, token = *pos, end, "resume token of another node (MQTT has no shared offsets); reading live after a gap of unknown size");
                                }
                                *pos = end;
                            }
                        }
                    }
                }
                (given, earliest)
            }
        };
        let tolerate_lag = positions != target;
        Ok(Self {
            topic: topic.into(),
            broker,
            rx: live.rx,
            positions,
            target,
            earliest,
            current: None,
            catchup: HashMap::new(),
            empty_reads: 0,
            policy: settings.slow_consumer,
            batch_max: settings.batch_max.max(1),
            tolerate_lag,
            resync: false,
            pending_gap: 0,
            gap_unknown,
            registry: registry.clone(),
            permit: None,
            skipped: settings.skipped_offsets.clone(),
        })
    }

    /// The reader's position as a resume token.
    pub fn token(&self) -> String {
        token::format(&self.positions)
    }

    /// Whether this reader has reached the live ring's head since it opened (or since it
    /// last fell behind): what it gets now is live, not a catch-up from the past.
    pub fn live(&self) -> bool {
        !self.tolerate_lag
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next chunk that is ready without waiting for a new message (catch-up reads from the
    /// broker are awaited); `None` at the head of the ring. Not cancel-safe: await it to the end.
    pub async fn next_ready(&mut self) -> Result<Option<Chunk>, CloseReason> {
        loop {
            if self.pending_gap > 0 || self.gap_unknown {
                let missed = std::mem::take(&mut self.pending_gap);
                let unknown = std::mem::take(&mut self.gap_unknown);
                return Ok(Some(Chunk::Gap {
                    missed: (!unknown).then_some(missed),
                }));
            }
            if let Some(p) = (0..self.positions.len()).find(|&p| self.positions[p] < self.target[p])
            {
                if let Some(chunk) = self.catch_up(p as u32).await? {
                    return Ok(Some(chunk));
                }
                continue;
            }
            if let Some((batch, index)) = self.current.take() {
                if let Some(chunk) = self.scan(batch, index) {
                    return Ok(Some(chunk));
                }
                continue;
            }
            match self.rx.try_recv() {
                Ok(batch) => self.current = Some((batch, 0)),
                Err(TryRecvError::Empty) => {
                    // At the head of the ring: from now on, falling behind is being slow.
                    self.tolerate_lag = false;
                    self.resync = false;
                    self.catchup.clear();
                    self.permit = None;
                    return Ok(None);
                }
                Err(TryRecvError::Lagged(_)) => self.lagged()?,
                Err(TryRecvError::Closed) => return Err(CloseReason::InternalError),
            }
        }
    }

    /// Waits until the ring has something for this reader. Cancel-safe.
    pub async fn wait(&mut self) -> Result<(), CloseReason> {
        if self.current.is_some() || self.pending_gap > 0 || self.gap_unknown {
            return Ok(());
        }
        match self.rx.recv().await {
            Ok(batch) => {
                self.current = Some((batch, 0));
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(_)) => self.lagged(),
            Err(broadcast::error::RecvError::Closed) => Err(CloseReason::InternalError),
        }
    }

    fn lagged(&mut self) -> Result<(), CloseReason> {
        if self.tolerate_lag {
            // Still catching up: what the ring dropped is read from the broker.
            return Ok(());
        }
        match self.policy {
            SlowConsumerPolicy::Disconnect => Err(CloseReason::SlowConsumer),
            SlowConsumerPolicy::DropOldest => {
                self.resync = true;
                Ok(())
            }
        }
    }

    fn grow(&mut self, partition: usize) {
        if partition >= self.positions.len() {
            // The topic gained partitions: new ones are read from their start.
            self.positions.resize(partition + 1, 0);
            self.target.resize(partition + 1, 0);
            self.earliest.resize(partition + 1, true);
        }
    }

    /// Delivers from `batch` at `index`, or sets up a catch-up and answers `None`.
    fn scan(&mut self, batch: Arc<Batch>, mut index: usize) -> Option<Chunk> {
        let frames = &batch.frames;
        // Skip what this reader already has.
        while let Some(f) = frames.get(index) {
            self.grow(f.partition as usize);
            if f.offset >= self.positions[f.partition as usize] {
                break;
            }
            index += 1;
        }
        let first = frames.get(index)?;
        let p = first.partition as usize;
        if first.offset > self.positions[p] {
            if self.resync && first.after().len() == self.positions.len() {
                // Drop-oldest: take the ring's positions as they stood before this frame.
                let mut missed = first.offset - self.positions[p];
                for (q, (mine, theirs)) in self.positions.iter().zip(first.after()).enumerate() {
                    if q != p {
                        missed += theirs.saturating_sub(*mine);
                    }
                }
                self.positions.copy_from_slice(first.after());
                self.positions[p] = first.offset;
                self.pending_gap += missed;
                self.resync = false;
                self.current = Some((batch, index));
                return None;
            }
            // The ring no longer held what lies between: read it from the broker first.
            self.target[p] = first.offset;
            self.tolerate_lag = true;
            self.current = Some((batch, index));
            return None;
        }
        let start = index;
        while let Some(f) = frames.get(index) {
            let p = f.partition as usize;
            self.grow(p);
            if f.offset != self.positions[p] {
                break;
            }
            self.positions[p] = f.offset + 1;
            if self.positions[..] != *f.after() {
                if index == start {
                    // This reader stands elsewhere in other partitions: its own token.
                    let own = f.at(&self.positions);
                    if index + 1 < frames.len() {
                        self.current = Some((batch.clone(), index + 1));
                    }
                    let batch = Arc::new(Batch::new(vec![own]));
                    return Some(Chunk::Frames {
                        batch,
                        start: 0,
                        end: 1,
                    });
                }
                self.positions[p] = f.offset;
                break;
            }
            index += 1;
        }
        if index < frames.len() {
            self.current = Some((batch.clone(), index));
        }
        if index == start {
            return None;
        }
        Some(Chunk::Frames {
            batch,
            start,
            end: index,
        })
    }

    async fn catch_up(&mut self, partition: u32) -> Result<Option<Chunk>, CloseReason> {
        let p = partition as usize;
        self.tolerate_lag = true;
        if self.permit.is_none() {
            self.permit = self.registry.catchup_permit().await;
        }
        if !self.catchup.contains_key(&partition) {
            let start = if self.earliest[p] {
                StartAt::Earliest
            } else {
                StartAt::Offset(self.positions[p])
            };
            let consumer = self
                .broker
                .consumer(&self.topic, partition, start)
                .await
                .map_err(|e| {
                    close_reason(
                        &self.topic,
                        partition,
                        "catch-up could not open the partition",
                        e,
                    )
                })?;
            let from = consumer.position();
            if !self.earliest[p] {
                match consumer.skipped_from(self.positions[p]) {
                    Some(0) => {}
                    Some(missed) => {
                        tracing::info!(topic = %self.topic, partition, from = self.positions[p], to = from, "reader resumed before the oldest retained message");
                        self.pending_gap += missed;
                    }
                    None => {
                        tracing::info!(topic = %self.topic, partition, token = self.positions[p], "resume token of another node on a broker that cannot replay: reading live");
                        self.gap_unknown = true;
                    }
                }
            }
            // Where the broker starts this reader (later than asked past retention; on MQTT,
            // the live end for another node's token).
            self.positions[p] = from;
            self.earliest[p] = false;
            self.catchup.insert(partition, consumer);
            if self.positions[p] >= self.target[p] {
                self.catchup.remove(&partition);
                return Ok(None);
            }
        }
        let to = self.target[p];
        let want = (to - self.positions[p]).min(self.batch_max as u64) as usize;
        let consumer = self
            .catchup
            .get_mut(&partition)
            .ok_or(CloseReason::InternalError)?;
        let messages = consumer
            .next_batch(want, Duration::from_secs(2))
            .await
            .map_err(|e| close_reason(&self.topic, partition, "catch-up read failed", e))?;
        if messages.is_empty() {
            self.empty_reads += 1;
            if self.empty_reads >= EMPTY_READS_BEFORE_SKIP {
                // Messages may have been missed here (a broker that does not answer a fetch
                // inside a batch), or these were no messages at all: the client is told of a
                // gap of unknown size, the skip is counted and logged.
                let skipped = to - self.positions[p];
                tracing::warn!(topic = %self.topic, partition, from = self.positions[p], to, skipped, "no messages where the broker's offsets say there are some; going on from the end after a gap of unknown size");
                self.skipped.inc_by(skipped);
                self.gap_unknown = true;
                self.positions[p] = to;
                self.empty_reads = 0;
                self.catchup.remove(&partition);
            }
            return Ok(None);
        }
        self.empty_reads = 0;
        let mut frames = Vec::with_capacity(messages.len());
        for m in messages {
            if m.offset >= to {
                break;
            }
            if m.offset < self.positions[p] || m.partition != partition {
                continue;
            }
            self.positions[p] = m.offset + 1;
            frames.push(Frame::new(self.topic.clone(), m, &self.positions));
        }
        if consumer.position() >= to {
            // Whatever lies past the target comes from the ring.
            self.positions[p] = self.positions[p].max(to);
            self.catchup.remove(&partition);
        }
        if frames.is_empty() {
            return Ok(None);
        }
        let end = frames.len();
        Ok(Some(Chunk::Frames {
            batch: Arc::new(Batch::new(frames)),
            start: 0,
            end,
        }))
    }
}

/// Why a reader's stream ends when the broker fails it (logged with `what`).
fn close_reason(topic: &str, partition: u32, what: &str, e: BrokerError) -> CloseReason {
    tracing::warn!(%topic, partition, error = %e, "{what}");
    match e {
        BrokerError::TopicNotFound { .. } | BrokerError::PartitionNotFound { .. } => {
            CloseReason::TopicGone
        }
        e if e.is_retryable() => CloseReason::TryAgainLater,
        _ => CloseReason::InternalError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};
    use crate::broker::{BrokerResult, OutgoingMessage};
    use futures_util::future::BoxFuture;

    async fn setup(
        settings: &StreamSettings,
    ) -> (tempfile::TempDir, Arc<dyn BrokerDriver>, TopicRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let broker: Arc<dyn BrokerDriver> =
            EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        broker.ensure_topic("t").await.unwrap();
        let (registry, _) = TopicRegistry::start(broker.clone(), settings.clone())
            .await
            .unwrap();
        (dir, broker, registry)
    }

    async fn publish(broker: &Arc<dyn BrokerDriver>, n: u64) {
        broker
            .publish(
                "t",
                OutgoingMessage {
                    payload: bytes::Bytes::from(n.to_string()),
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    /// Reads `n` messages, checking offsets are consecutive from `from` and tokens follow them.
    async fn read(feed: &mut Feed, from: u64, n: u64) {
        let mut next = from;
        while next < from + n {
            match feed.next_ready().await.unwrap() {
                Some(Chunk::Gap { missed }) => panic!("gap of {missed:?} at {next}"),
                Some(chunk) => {
                    for f in chunk.frames() {
                        assert_eq!(f.offset, next, "offsets consecutive");
                        assert_eq!(f.token(), (next + 1).to_string());
                        next += 1;
                    }
                }
                None => tokio::time::timeout(Duration::from_secs(5), feed.wait())
                    .await
                    .expect("a message in time")
                    .unwrap(),
            }
        }
    }

    /// A broker whose end offsets run past what its fetches return (as tansu's in-memory
    /// storage did inside multi-record batches): the embedded log, with every end offset told
    /// `extra` higher.
    #[derive(Debug)]
    struct EndPastFetches {
        inner: Arc<dyn BrokerDriver>,
        extra: u64,
    }

    impl BrokerDriver for EndPastFetches {
        fn name(&self) -> &'static str {
            "end-past-fetches"
        }
        fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
            self.inner.topic_exists(topic)
        }
        fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
            self.inner.ensure_topic(topic)
        }
        fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
            self.inner.partitions(topic)
        }
        fn latest_offsets<'a>(
            &'a self,
            topic: &'a str,
        ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
            Box::pin(async move {
                let ends = self.inner.latest_offsets(topic).await?;
                Ok(ends.into_iter().map(|(p, e)| (p, e + self.extra)).collect())
            })
        }
        fn publish<'a>(
            &'a self,
            topic: &'a str,
            message: OutgoingMessage,
        ) -> BoxFuture<'a, BrokerResult<Option<crate::broker::Position>>> {
            self.inner.publish(topic, message)
        }
        fn consumer<'a>(
            &'a self,
            topic: &'a str,
            partition: u32,
            start: StartAt,
        ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
            self.inner.consumer(topic, partition, start)
        }
    }

    /// Where the broker's offsets promise messages its reads never return, the reader goes on
    /// from the end after three empty reads, and says so: a gap of unknown size to the client
    /// and the offsets counted as skipped — never a silent jump.
    #[tokio::test]
    async fn offsets_without_messages_are_a_gap_not_a_silent_jump() {
        let settings = StreamSettings::default();
        let (_dir, embedded, _) = setup(&settings).await;
        for n in 0..5 {
            publish(&embedded, n).await;
        }
        let broker: Arc<dyn BrokerDriver> = Arc::new(EndPastFetches {
            inner: embedded,
            extra: 3,
        });
        let (registry, _) = TopicRegistry::start(broker.clone(), settings.clone())
            .await
            .unwrap();
        let mut feed = Feed::open(&registry, broker, "t", Start::After(vec![2]), &settings)
            .await
            .unwrap();
        read(&mut feed, 2, 3).await;
        let gap = loop {
            match feed.next_ready().await.unwrap() {
                Some(Chunk::Gap { missed }) => break missed,
                Some(chunk) => panic!("{} more frames", chunk.frames().len()),
                None => {}
            }
        };
        assert_eq!(gap, None, "the size is unknown: markers or lost messages");
        assert_eq!(settings.skipped_offsets.get(), 3);
        assert_eq!(feed.token(), "8");
    }

    /// A reader resuming from the past catches up from the broker while messages keep coming,
    /// and joins the live ring with no gap and no repeat at the seam.
    #[tokio::test]
    async fn catch_up_meets_the_ring_without_gap_or_repeat() {
        let settings = StreamSettings::default();
        let (_dir, broker, registry) = setup(&settings).await;
        for n in 0..500 {
            publish(&broker, n).await;
        }
        let mut live = Feed::open(&registry, broker.clone(), "t", Start::Latest, &settings)
            .await
            .unwrap();
        let mut resumed = Feed::open(
            &registry,
            broker.clone(),
            "t",
            Start::After(vec![100]),
            &settings,
        )
        .await
        .unwrap();
        let publisher = {
            let broker = broker.clone();
            tokio::spawn(async move {
                for n in 500..800 {
                    publish(&broker, n).await;
                }
            })
        };
        read(&mut resumed, 100, 700).await;
        read(&mut live, 500, 300).await;
        publisher.await.unwrap();
        assert_eq!(resumed.token(), "800");
        assert!(
            resumed.next_ready().await.unwrap().is_none(),
            "nothing more"
        );
    }

    /// Waits until the topic's ring carried offset `target - 1`.
    async fn ring_at(rx: &mut broadcast::Receiver<Arc<Batch>>, target: u64) {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Ok(batch)) if batch.frames.last().unwrap().offset + 1 >= target => return,
                Ok(_) => {}
                Err(_) => panic!("the topic's reader did not reach {target}"),
            }
        }
    }

    /// A ring too small for the catch-up still loses nothing: what the ring dropped is read
    /// from the broker; once at the head, falling behind is a slow consumer.
    #[tokio::test]
    async fn lag_while_catching_up_is_repaired_and_lag_at_the_head_closes() {
        let settings = StreamSettings {
            ring_batches: 2,
            batch_max: 1,
            ..StreamSettings::default()
        };
        let (_dir, broker, registry) = setup(&settings).await;
        publish(&broker, 0).await;
        let mut feed = Feed::open(&registry, broker.clone(), "t", Start::Earliest, &settings)
            .await
            .unwrap();
        for n in 1..50 {
            publish(&broker, n).await;
        }
        // Let the topic's reader push everything through the two-entry ring.
        let mut probe = registry.subscribe("t").await.unwrap();
        if probe.positions[0] < 50 {
            ring_at(&mut probe.rx, 50).await;
        }
        read(&mut feed, 0, 50).await;
        assert!(feed.next_ready().await.unwrap().is_none());
        // At the head now: overrun the ring without reading.
        for n in 50..60 {
            publish(&broker, n).await;
        }
        ring_at(&mut probe.rx, 60).await;
        assert_eq!(feed.wait().await.unwrap_err(), CloseReason::SlowConsumer);
    }

    #[tokio::test]
    async fn tokens_name_no_more_partitions_than_the_topic_has() {
        let settings = StreamSettings::default();
        let (_dir, broker, registry) = setup(&settings).await;
        let err = Feed::open(
            &registry,
            broker.clone(),
            "t",
            Start::After(vec![1, 2]),
            &settings,
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            FeedError::TokenPartitions { given: 2, has: 1 }
        ));
        // Beyond the end reads from the end.
        publish(&broker, 0).await;
        let feed = Feed::open(&registry, broker, "t", Start::After(vec![99]), &settings)
            .await
            .unwrap();
        assert_eq!(feed.token(), "1");
    }
}
