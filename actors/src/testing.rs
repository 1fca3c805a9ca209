//! What the delivery actors' unit tests share: a subscriber's callback answered by a script
//! (no socket), a broker whose partitions are embedded logs in a temporary directory, the
//! in-memory control plane, and a bounded wait for a condition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::{Command, NodeId, Subscription, SubscriptionState};
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};
use crate::broker::{
    BrokerDriver, BrokerResult, Message, OutgoingMessage, PartitionConsumer, Position, StartAt,
};
use crate::callback::{
    CallbackError, CallbackMethod, CallbackRequest, CallbackResponse, WebhookClient,
};
use crate::control::{ControlPort, MemoryControl};
use crate::subscription::{
    CursorCommitter, DeliveryContext, DeliveryMetrics, DeliverySettings, ATTEMPT_HEADER,
    DELIVERY_HEADER,
};
use crate::websub::SignatureAlgorithm;

/// Waits until `condition` holds, checking every 5 ms for at most 10 s; panics with `what`
/// otherwise.
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the scripted callback answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16),
    /// This status after this long.
    Slow(u16, Duration),
    /// 200 once the test opens the gate ([`ScriptedCallback::open_gate`]).
    Gated,
    /// 200 with the `hub.challenge` of the request's query as the body.
    Echo,
    /// This status and body.
    Body(u16, &'static str),
    /// No answer: the connection failed.
    Unreachable,
}

/// A request the callback received, as the test reads it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: CallbackMethod,
    pub(crate) url: String,
    /// (partition, offset) from the delivery header, for content deliveries.
    pub(crate) position: Option<(u32, u64)>,
    pub(crate) attempt: Option<u32>,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
}

impl Seen {
    /// The value of query parameter `name` of the request URL.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.url.split_once('?')?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A subscriber's callback without a socket: each request is recorded and answered as the
/// script says.
pub(crate) struct ScriptedCallback {
    script: Box<Script>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ScriptedCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedCallback").finish_non_exhaustive()
    }
}

impl ScriptedCallback {
    pub(crate) fn new(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            seen: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        })
    }

    /// Every request so far, in the order they arrived.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Content deliveries (POSTs) so far.
    pub(crate) fn deliveries(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == CallbackMethod::Post)
            .collect()
    }

    /// The most requests that were waiting for an answer at once.
    pub(crate) fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// Lets every [`Reply::Gated`] request, waiting or to come, be answered.
    pub(crate) fn open_gate(&self) {
        self.gate
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

fn header<'a>(request: &'a CallbackRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl WebhookClient for ScriptedCallback {
    fn send(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackResponse, CallbackError>> {
        Box::pin(async move {
            let position = header(&request, DELIVERY_HEADER).and_then(|v| {
                let mut parts = v.rsplitn(3, ':');
                let offset = parts.next()?.parse().ok()?;
                let partition = parts.next()?.parse().ok()?;
                Some((partition, offset))
            });
            let seen = Seen {
                method: request.method,
                url: request.url.clone(),
                position,
                attempt: header(&request, ATTEMPT_HEADER).and_then(|v| v.parse().ok()),
                body: request.body.clone(),
                at: Instant::now(),
            };
            let reply = (self.script)(&seen);
            self.seen.lock().unwrap().push(seen.clone());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let answer = match reply {
                Reply::Status(status) => Ok((status, Bytes::new())),
                Reply::Slow(status, after) => {
                    tokio::time::sleep(after).await;
                    Ok((status, Bytes::new()))
                }
                Reply::Gated => {
                    self.gate.acquire().await.expect("gate open").forget();
                    Ok((200, Bytes::new()))
                }
                Reply::Echo => Ok((
                    200,
                    Bytes::from(seen.query("hub.challenge").unwrap_or_default()),
                )),
                Reply::Body(status, body) => Ok((status, Bytes::from_static(body.as_bytes()))),
                Reply::Unreachable => {
                    Err(CallbackError::Connect("scripted: unreachable".to_owned()))
                }
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer.map(|(status, body)| CallbackResponse {
                status,
                body,
                retry_after: None,
            })
        })
    }
}

/// A broker whose topics have `partitions` partitions, each an embedded log of its own
/// (`<topic>.p<n>`): the embedded broker numbers one partition per topic.
#[derive(Debug)]
pub(crate) struct PartitionedBroker {
    logs: Arc<EmbeddedBroker>,
    partitions: u32,
    _dir: tempfile::TempDir,
}

impl PartitionedBroker {
    pub(crate) fn new(partitions: u32) -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let logs = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        Arc::new(Self {
            logs,
            partitions,
            _dir: dir,
        })
    }

    fn log(topic: &str, partition: u32) -> String {
        format!("{topic}.p{partition}")
    }

    /// Publishes `payload` to `partition` of `topic`.
    pub(crate) async fn publish_to(&self, topic: &str, partition: u32, payload: String) -> u64 {
        let message = OutgoingMessage {
            key: None,
            headers: Vec::new(),
            content_type: Some("text/plain".to_owned()),
            payload: Bytes::from(payload),
            sticky: None,
        };
        let log = Self::log(topic, partition);
        self.logs.ensure_topic(&log).await.unwrap();
        self.logs
            .publish(&log, message)
            .await
            .unwrap()
            .unwrap()
            .offset
    }
}

#[derive(Debug)]
struct RenumberedConsumer {
    inner: Box<dyn PartitionConsumer>,
    partition: u32,
}

impl PartitionConsumer for RenumberedConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let mut batch = self.inner.next_batch(max, wait).await?;
            for m in &mut batch {
                m.partition = self.partition;
            }
            Ok(batch)
        })
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }
}

impl BrokerDriver for PartitionedBroker {
    fn name(&self) -> &'static str {
        "partitioned-embedded"
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        Box::pin(async move { self.logs.topic_exists(&Self::log(topic, 0)).await })
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            for p in 0..self.partitions {
                self.logs.ensure_topic(&Self::log(topic, p)).await?;
            }
            Ok(())
        })
    }

    fn partitions<'a>(&'a self, _topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        Box::pin(async move { Ok(self.partitions) })
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for p in 0..self.partitions {
                let latest = self.logs.latest_offsets(&Self::log(topic, p)).await?;
                out.push((p, latest.first().map_or(0, |(_, o)| *o)));
            }
            Ok(out)
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        Box::pin(async move {
            let position = self.logs.publish(&Self::log(topic, 0), message).await?;
            Ok(position.map(|p| Position { partition: 0, ..p }))
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            let inner = self
                .logs
                .consumer(&Self::log(topic, partition), 0, start)
                .await?;
            Ok(Box::new(RenumberedConsumer { inner, partition }) as Box<dyn PartitionConsumer>)
        })
    }
}

/// Delivery settings for tests: fast retries.
pub(crate) fn settings(window: usize) -> DeliverySettings {
    DeliverySettings {
        window,
        max_attempts: 10,
        retry: crate::subscription::RetryPolicy::Exponential {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        retry_after_max: Duration::from_secs(1),
        max_age: Duration::from_secs(60),
        signature: SignatureAlgorithm::Sha256,
        secret_overlap: Duration::from_secs(60),
    }
}

/// The delivery context of node `node` of `control`'s cluster.
pub(crate) fn context(
    control: &MemoryControl,
    node: NodeId,
    broker: Arc<dyn BrokerDriver>,
    client: Arc<ScriptedCallback>,
    settings: DeliverySettings,
) -> DeliveryContext {
    let port: Arc<dyn ControlPort> = Arc::new(control.as_node(node));
    DeliveryContext {
        node_id: node,
        control: port.clone(),
        broker,
        client,
        cursors: CursorCommitter::new(node, port.clone()),
        settings,
        public_url: "http://gateway.test".to_owned(),
        policy: None,
        secrets: Arc::new(crate::secrets::SecretSealer::default()),
        metrics: DeliveryMetrics::default(),
        endpoints: crate::endpoints::Endpoints::start(
            port.clone(),
            crate::endpoints::BreakerSettings::default(),
            crate::endpoints::OperatorEvents::none(),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        ),
        ledger: crate::ledger::Ledger::off(),
        trace: None,
    }
}

/// Records an active subscription `id` to `topic`, owned by `owner`, whose cursor starts at
/// each partition's current end.
pub(crate) async fn subscribe(
    control: &MemoryControl,
    broker: &dyn BrokerDriver,
    id: &str,
    topic: &str,
    owner: NodeId,
) -> Subscription {
    broker.ensure_topic(topic).await.unwrap();
    let now = eventgate_raft_store::clock::now_ms();
    let subscription = Subscription {
        id: id.to_owned(),
        topic: topic.to_owned(),
        callback: format!("http://subscriber.test/{id}"),
        secret: Some("s3cret".to_owned()),
        lease_seconds: 3600,
        lease_expires_at_ms: now + 3_600_000,
        state: SubscriptionState::Active,
        owner: Some(owner),
        created_at_ms: now,
        updated_at_ms: now,
        handover_to: None,
        topic_url: None,
        signing: Default::default(),
        previous_secret: None,
    };
    let start_offsets = broker.latest_offsets(topic).await.unwrap();
    control.apply(Command::ActivateSubscription {
        subscription: subscription.clone(),
        start_offsets,
    });
    subscription
}

/// The committed cursor of subscription `id` on each partition.
pub(crate) fn cursors(control: &MemoryControl, id: &str) -> HashMap<u32, u64> {
    control.reader().read(|s| {
        s.cursors
            .get(id)
            .map(|c| c.iter().map(|(p, o)| (*p, *o)).collect())
            .unwrap_or_default()
    })
}
