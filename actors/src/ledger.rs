//! The delivery ledger: every attempt to deliver a WebSub message (time, message id, offset,
//! attempt number, outcome, HTTP status, latency, error, the first bytes of the answer), kept
//! per subscription, bounded in count and age, queryable on every node.
//!
//! Where it lives, and why: in the broker, not in Raft. Attempts happen at the delivery rate
//! (100k/s on one machine); one Raft entry per attempt, or even per batch, would multiply the
//! replicated log and its fsyncs for data nobody needs consensus on. So each node appends its
//! attempts, in batches (one broker message per `flush_interval`), to an internal topic
//! (`websub.ledger.topic`), and every node follows that topic into an in-memory index bounded
//! per subscription (`max_entries`, `max_age`). The broker keeps the ledger durable and
//! replicated like any message (Kafka, the embedded log), so it survives the loss of the node
//! that made the attempts: a restarted or new node rebuilds its index from the topic's last
//! `rebuild_messages` batches. On MQTT, which keeps no history, every node indexes the attempts
//! it sees live; a node that restarts starts with an empty ledger.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::{NodeId, StateReader};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerDriver, OutgoingMessage, StartAt};

/// Content type of a ledger batch on its topic: a JSON array of [`Attempt`]s.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.eventgate.ledger+json";
/// Attempts waiting for their flush at most; past it the oldest are dropped (the broker is
/// down for long), with a warning.
const MAX_PENDING: usize = 100_000;
/// How long creating the ledger's topic may take.
const ENSURE_TOPIC: Duration = Duration::from_secs(30);
/// How often the index forgets subscriptions that ended.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Settings of the ledger (`websub.ledger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    pub enabled: bool,
    pub topic: String,
    /// Attempts kept per subscription, newest first.
    pub max_entries: usize,
    /// Attempts older than this are forgotten.
    pub max_age: Duration,
    /// Bytes of a callback's answer kept.
    pub response_bytes: usize,
    /// How long attempts gather before they are appended together.
    pub flush_interval: Duration,
    /// Batches read back, per partition, when a node starts.
    pub rebuild_messages: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "eventgate.ledger".to_owned(),
            max_entries: 100,
            max_age: Duration::from_secs(3 * 24 * 3600),
            response_bytes: 256,
            flush_interval: Duration::from_millis(200),
            rebuild_messages: 10_000,
        }
    }
}

/// What an attempt was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// An ordinary delivery or retry.
    Delivery,
    /// The probe of a paused endpoint.
    Probe,
    /// An operator's replay or re-drive.
    Manual,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// 2xx.
    Succeeded,
    /// Any other answer, or none.
    Failed,
    /// 410: the subscription ended.
    Gone,
}

impl AttemptOutcome {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "gone" => Some(Self::Gone),
            _ => None,
        }
    }
}

/// One attempt to deliver a message to a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub subscription: String,
    /// The delivery id (`webhook-id`, `X-Eventgate-Delivery`).
    pub message_id: String,
    pub partition: u32,
    pub offset: u64,
    /// 1 for the first attempt of the message.
    pub attempt: u32,
    pub kind: AttemptKind,
    pub outcome: AttemptOutcome,
    /// The callback's HTTP status, if it answered.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first bytes of the answer's body (lossy UTF-8).
    pub response: Option<String>,
    pub node: NodeId,
}

/// Which attempts a query wants; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub outcome: Option<AttemptOutcome>,
    pub status: Option<u16>,
    pub message_id: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: usize,
}

impl AttemptFilter {
    fn matches(&self, a: &Attempt) -> bool {
        self.outcome.is_none_or(|o| o == a.outcome)
            && self.status.is_none_or(|s| a.status == Some(s))
            && self.message_id.as_ref().is_none_or(|m| *m == a.message_id)
            && self.since_ms.is_none_or(|t| a.at_ms >= t)
            && self.until_ms.is_none_or(|t| a.at_ms <= t)
    }
}

/// The ledger of this node: records attempts, answers queries; off, it does neither.
#[derive(Clone)]
pub struct Ledger {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    settings: LedgerSettings,
    node: NodeId,
    broker: Arc<dyn BrokerDriver>,
    reader: StateReader,
    pending: Mutex<Vec<Attempt>>,
    recorded: Notify,
    index: RwLock<HashMap<String, VecDeque<Attempt>>>,
    appended: Counter,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("settings", &self.inner.as_ref().map(|i| &i.settings))
            .finish()
    }
}

impl Ledger {
    /// No ledger: nothing recorded.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// The ledger on `settings.topic` of `broker` (created when missing, in the background),
    /// appending and indexing until `stop`; `appended` counts the attempts this node appended.
    pub fn start(
        broker: Arc<dyn BrokerDriver>,
        reader: StateReader,
        node: NodeId,
        settings: LedgerSettings,
        appended: Counter,
        stop: CancellationToken,
    ) -> Self {
        if !settings.enabled {
            return Self::off();
        }
        let inner = Arc::new(Inner {
            settings,
            node,
            broker,
            reader,
            pending: Mutex::default(),
            recorded: Notify::new(),
            index: RwLock::default(),
            appended,
        });
        tokio::spawn(flush_loop(inner.clone(), stop.clone()));
        tokio::spawn(follow(inner.clone(), stop));
        Self { inner: Some(inner) }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// This node's id (attempts are recorded with it).
    pub fn node(&self) -> NodeId {
        self.inner.as_ref().map_or(0, |i| i.node)
    }

    /// Bytes of an answer kept (0 when off).
    pub fn response_bytes(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.settings.response_bytes)
    }

    /// Records an attempt; it is appended with the next batch.
    pub fn record(&self, attempt: Attempt) {
        let Some(inner) = &self.inner else {
            return;
        };
        let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
            tracing::warn!("ledger backlog full (broker unavailable?): oldest attempt dropped");
        }
        pending.push(attempt);
        drop(pending);
        inner.recorded.notify_one();
    }

    /// Subscription `id`'s attempts matching `filter`, newest first, at most `filter.limit`.
    pub fn query(&self, id: &str, filter: &AttemptFilter) -> Vec<Attempt> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let oldest = now_ms().saturating_sub(inner.settings.max_age.as_millis() as u64);
        let index = inner.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .get(id)
            .map(|entries| {
                entries
                    .iter()
                    .rev()
                    .filter(|a| a.at_ms >= oldest && filter.matches(a))
                    .take(filter.limit.max(1))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Appends what was recorded, one batch per `flush_interval` at most.
async fn flush_loop(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = inner.recorded.notified() => {}
            () = stop.cancelled() => break,
        }
        // Let a batch gather (group append): the cost per attempt is one broker append per
        // interval, not one per attempt.
        tokio::select! {
            () = tokio::time::sleep(inner.settings.flush_interval) => {}
            () = stop.cancelled() => break,
        }
        flush(&inner).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), flush(&inner)).await;
}

async fn flush(inner: &Inner) {
    let batch: Vec<Attempt> =
        std::mem::take(&mut *inner.pending.lock().unwrap_or_else(|p| p.into_inner()));
    if batch.is_empty() {
        return;
    }
    let payload = match serde_json::to_vec(&batch) {
        Ok(p) => Bytes::from(p),
        Err(e) => {
            tracing::warn!(error = %e, "ledger batch not encoded");
            return;
        }
    };
    let message = OutgoingMessage {
        key: Some(Bytes::from(inner.node.to_string())),
        headers: Vec::new(),
        content_type: Some(BATCH_CONTENT_TYPE.to_owned()),
        payload,
        sticky: None,
    };
    match inner.broker.publish(&inner.settings.topic, message).await {
        Ok(_) => {
            inner.appended.inc_by(batch.len() as u64);
        }
        Err(e) => {
            tracing::warn!(error = %e, attempts = batch.len(), "ledger batch not appended; kept for the next one");
            let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::replace(&mut *pending, batch);
            pending.extend(newer);
            let excess = pending.len().saturating_sub(MAX_PENDING);
            pending.drain(..excess);
        }
    }
}

/// Follows the ledger topic into the index, from the last `rebuild_messages` batches of each
/// partition.
async fn follow(inner: Arc<Inner>, stop: CancellationToken) {
    let topic = inner.settings.topic.clone();
    // In the background: a broker slow to create topics does not hold the node's start.
    match tokio::time::timeout(ENSURE_TOPIC, inner.broker.ensure_topic(&topic)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%topic, error = %e, "ledger topic not created"),
        Err(_) => tracing::warn!(%topic, "ledger topic not created in time"),
    }
    let partitions = loop {
        match inner.broker.partitions(&topic).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::debug!(%topic, error = %e, "ledger topic not readable yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    let latest: HashMap<u32, u64> = inner
        .broker
        .latest_offsets(&topic)
        .await
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..partitions {
        let start = if inner.broker.offsets_global(&topic) {
            let end = latest.get(&partition).copied().unwrap_or(0);
            StartAt::Offset(end.saturating_sub(inner.settings.rebuild_messages))
        } else {
            StartAt::Latest
        };
        tasks.spawn(follow_partition(
            inner.clone(),
            partition,
            start,
            stop.clone(),
        ));
    }
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = prune.tick() => prune_ended(&inner),
        }
    }
    tasks.shutdown().await;
}

async fn follow_partition(
    inner: Arc<Inner>,
    partition: u32,
    start: StartAt,
    stop: CancellationToken,
) {
    let topic = inner.settings.topic.clone();
    let mut start = start;
    loop {
        let consumer = tokio::select! {
            c = inner.broker.consumer(&topic, partition, start) => c,
            () = stop.cancelled() => return,
        };
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "ledger not readable; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        loop {
            let batch = tokio::select! {
                b = consumer.next_batch(256, Duration::from_secs(1)) => b,
                () = stop.cancelled() => return,
            };
            match batch {
                Ok(messages) => {
                    for message in messages {
                        match serde_json::from_slice::<Vec<Attempt>>(&message.payload) {
                            Ok(attempts) => index(&inner, attempts),
                            Err(e) => {
                                tracing::debug!(offset = message.offset, error = %e, "not a ledger batch; skipped")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%topic, partition, error = %e, "ledger read failed; reopening");
                    start = StartAt::Offset(consumer.position());
                    break;
                }
            }
        }
    }
}

fn index(inner: &Inner, attempts: Vec<Attempt>) {
    let oldest = now_ms().saturating_sub(inner.settings.max_age.as_millis() as u64);
    let mut index = inner.index.write().unwrap_or_else(|p| p.into_inner());
    for attempt in attempts {
        if attempt.at_ms < oldest {
            continue;
        }
        let entries = index.entry(attempt.subscription.clone()).or_default();
        // Batches of several nodes interleave: keep each subscription's entries in time order.
        let at = entries.partition_point(|a| a.at_ms <= attempt.at_ms);
        entries.insert(at, attempt);
        while entries.len() > inner.settings.max_entries
            || entries.front().is_some_and(|a| a.at_ms < oldest)
        {
            entries.pop_front();
        }
    }
}

/// Forgets the attempts of subscriptions that ended, and those too old.
fn prune_ended(inner: &Inner) {
    let live: std::collections::HashSet<String> = inner
        .reader
        .read(|s| s.subscriptions.keys().cloned().collect());
    let oldest = now_ms().saturating_sub(inner.settings.max_age.as_millis() as u64);
    let mut index = inner.index.write().unwrap_or_else(|p| p.into_inner());
    index.retain(|id, entries| {
        while entries.front().is_some_and(|a| a.at_ms < oldest) {
            entries.pop_front();
        }
        live.contains(id) && !entries.is_empty()
    });
}
