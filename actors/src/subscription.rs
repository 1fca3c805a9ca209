//! `SubscriptionActor`: delivers one WebSub subscription's topic to its callback, in order and
//! at least once.
//!
//! Model: the subscription is a cursor over its topic (per partition), like a consumer group of
//! one. The head message is posted; the cursor moves past it once the callback answered 2xx, or
//! once it was dead-lettered after `max_attempts` attempts or `max_age`. While the head fails, its
//! retry schedule (attempt, next attempt time) is replicated, so a new owner after a failover
//! continues the schedule instead of restarting it. Cursor moves are committed in batches
//! for all subscriptions of the node at once by a [`CursorCommitter`] (fenced: only the owner's
//! commits count), so a failover re-delivers at most the last ~200 ms and loses nothing. `410 Gone` ends the subscription.
//!
//! On MQTT, which has no offsets, the reader is the subscription's persistent session
//! ([`BrokerDriver::session_consumer`]): each cursor move also acknowledges the messages
//! behind it to the broker, which redelivers the rest to the next owner.
//!
//! The network work runs in a task owned by the actor; a failure of that task fails the actor,
//! and its supervisor ([`crate::hub::HubSupervisor`]) restarts it with backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::{
    callback_origin, Command, CursorCommit, DeadLetter, NodeId, RetryEntry, Signing, Subscription,
};
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerDriver, Message, StartAt};
use crate::callback::{CallbackMethod, CallbackRequest, WebhookClient};
use crate::control::ControlPort;
use crate::ledger::{Attempt, AttemptKind, AttemptOutcome};
use crate::websub::{link_header, retry_delay, SignatureAlgorithm};

/// Header naming the delivery (`<subscription>:<partition>:<offset>`), the same on every
/// attempt, so subscribers can drop duplicates.
pub const DELIVERY_HEADER: &str = "x-eventgate-delivery";
/// Header counting attempts of this delivery, from 1.
pub const ATTEMPT_HEADER: &str = "x-eventgate-attempt";
/// During a WebSub subscription's secret rotation: the `X-Hub-Signature` of the previous
/// secret.
pub const PREVIOUS_SIGNATURE_HEADER: &str = "x-hub-signature-previous";

/// The shortest gap between two commits of a node's cursor moves. Moves are committed as
/// soon as there are any and the last commit is done, at most this often: a SIGKILLed owner's
/// successor repeats only what was delivered in about one commit's time.
pub const COMMIT_GAP: Duration = Duration::from_millis(25);
/// How long a stopping node tries to commit its last cursor moves.
const FINAL_COMMIT: Duration = Duration::from_secs(2);
/// How long a failed commit waits before it is tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(100);
/// Messages read from the broker at a time.
const READ_BATCH: usize = 128;
/// How long a stopping subscription lets its deliveries in flight finish before cutting them.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How often a delivery held by a withdrawn right looks again (the hub ends the subscription
/// meanwhile, which cancels it).
const WITHDRAWN_RECHECK: Duration = Duration::from_millis(100);

/// Retry and signing policy of deliveries.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Deliveries in flight per partition. 1 keeps arrival order strict; more raise throughput
    /// to slow callbacks, dispatching in order but letting completions interleave.
    pub window: usize,
    pub max_attempts: u32,
    /// The wait after a failed attempt.
    pub retry: RetryPolicy,
    /// A `Retry-After` of a 429 or 503 answer is honoured up to this long.
    pub retry_after_max: Duration,
    /// A message still failing this long after its first attempt is dead-lettered.
    pub max_age: Duration,
    pub signature: SignatureAlgorithm,
    /// After a subscription's secret is rotated, deliveries carry the previous secret's
    /// signature too for this long.
    pub secret_overlap: Duration,
}

/// When a failed delivery is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Doubling from `base`, capped at `max`, half of it random.
    Exponential { base: Duration, max: Duration },
    /// The wait after each failed attempt, in order (a tenth of it added at random, so that
    /// failures at one moment do not come back at one moment); past the last the message is a
    /// dead letter.
    Schedule(Vec<Duration>),
}

/// The default schedule, Standard Webhooks' example after the immediate first attempt:
/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (ten attempts over about three days).
pub const STANDARD_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1); none when the schedule has no more.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        match self {
            Self::Exponential { base, max } => Some(retry_delay(attempt, *base, *max)),
            Self::Schedule(waits) => {
                let wait = *waits.get(attempt.checked_sub(1)? as usize)?;
                let tenth = (wait / 10).as_millis() as u64;
                let jitter = rand::Rng::random_range(&mut rand::rng(), 0..=tenth);
                Some(wait + Duration::from_millis(jitter))
            }
        }
    }

    /// How many attempts the policy makes at most (the first and its retries).
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Self::Exponential { .. } => None,
            Self::Schedule(waits) => Some(waits.len() as u32 + 1),
        }
    }
}

/// Collects cursor moves of every subscription this node delivers and commits them together:
/// one `CommitCursors` for all subscriptions, as soon as the previous one is done (at most one
/// per [`COMMIT_GAP`]). A move not yet committed when a node dies is delivered again by the
/// next owner (at least once).
#[derive(Clone)]
pub struct CursorCommitter {
    inner: Arc<CommitterInner>,
}

struct CommitterInner {
    node_id: NodeId,
    control: Arc<dyn ControlPort>,
    pending: std::sync::Mutex<std::collections::BTreeMap<(String, u32), u64>>,
    /// Wakes the committing loop when a move is recorded.
    moved: tokio::sync::Notify,
}

impl std::fmt::Debug for CursorCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorCommitter").finish_non_exhaustive()
    }
}

impl CursorCommitter {
    pub fn new(node_id: NodeId, control: Arc<dyn ControlPort>) -> Self {
        Self {
            inner: Arc::new(CommitterInner {
                node_id,
                control,
                pending: std::sync::Mutex::default(),
                moved: tokio::sync::Notify::new(),
            }),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, u32), u64>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that subscription `id`'s cursor on `partition` moved to `offset`.
    pub fn record(&self, id: &str, partition: u32, offset: u64) {
        let mut pending = self.pending();
        let slot = pending.entry((id.to_owned(), partition)).or_insert(offset);
        *slot = (*slot).max(offset);
        drop(pending);
        self.inner.moved.notify_one();
    }

    /// Commits every recorded move now. Moves that could not be committed are kept; answers
    /// whether every move recorded before the call is committed.
    pub async fn flush(&self) -> bool {
        // Copied, not taken: a flush abandoned half-way (a stopping node) loses nothing, and
        // moves recorded meanwhile stay for the next one.
        let snapshot = self.pending().clone();
        if snapshot.is_empty() {
            return true;
        }
        let commits = snapshot
            .iter()
            .map(|((id, partition), offset)| CursorCommit {
                id: id.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let command = Command::CommitCursors {
            node: self.inner.node_id,
            commits,
        };
        if let Err(e) = self.inner.control.write(command).await {
            tracing::warn!(error = %e, moves = snapshot.len(), "cursor commit failed; will retry");
            return false;
        }
        let mut pending = self.pending();
        for (key, offset) in snapshot {
            if pending.get(&key).is_some_and(|now| *now <= offset) {
                pending.remove(&key);
            }
        }
        true
    }

    /// Commits recorded moves as they come (see [`CursorCommitter`]) until `cancel`, then
    /// once more.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.inner.moved.notified() => {}
            }
            // A stopping node does not wait out a commit that cannot happen (no quorum).
            let committed = tokio::select! {
                ok = self.flush() => ok,
                () = cancel.cancelled() => break,
            };
            let pause = if committed { COMMIT_GAP } else { COMMIT_RETRY };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
            // Moves left over from a failed commit are tried again without waiting for more.
            if !self.pending().is_empty() {
                self.inner.moved.notify_one();
            }
        }
        if tokio::time::timeout(FINAL_COMMIT, self.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                "last cursor moves not committed before stopping; the next owner repeats them"
            );
        }
    }
}

/// What a subscription's plan says about its next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Deliver it (no plan, no limit, or within the limit).
    Deliver,
    /// Over the limit, and the plan drops: skip it (the cursor moves past it).
    Drop,
    /// Over the limit, and the plan pauses: ask again after this long.
    Wait(Duration),
}

/// What the node's policies say about WebSub subscriptions: whether a subscriber may still
/// read its topic, and the plans' delivery quota (`deliveries`). The actors know nothing of
/// APIs, applications or plans; the node does.
pub trait DeliveryPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// Why `subscription`'s subscriber may no longer read its topic, if so: the API key it
    /// was made with revoked, its application disabled or deleted, the application's access
    /// to the API or its permission withdrawn, the topic now behind credentials. Decided on
    /// this node's applied state, before every delivery attempt.
    fn withdrawn(&self, subscription: &Subscription) -> Option<String>;

    /// Whether subscription `id` may deliver one more message now.
    fn allow<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Allowance>;
}

/// Counters of WebSub deliveries, registered by the node (`eventgate_websub_*`).
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Requests made to callbacks (first attempts and retries).
    pub attempts: Counter,
    /// Messages a callback accepted (2xx).
    pub delivered: Counter,
    /// Attempts that failed (an answer other than 2xx or 410, or no answer).
    pub failures: Counter,
    /// Attempts that were retries of an earlier failure.
    pub retries: Counter,
    /// Messages given up on and recorded as dead letters.
    pub dead_letters: Counter,
    /// Messages skipped over a plan's delivery limit (`on_delivery_limit = "drop"`).
    pub dropped: Counter,
    /// From the broker's append to the callback's 2xx, in seconds (retries included).
    pub latency: prometheus_client::metrics::histogram::Histogram,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            attempts: Counter::default(),
            delivered: Counter::default(),
            failures: Counter::default(),
            retries: Counter::default(),
            dead_letters: Counter::default(),
            dropped: Counter::default(),
            // 1 ms to about 4.5 h: a delivery through retries takes hours.
            latency: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 24),
            ),
        }
    }
}

/// What deliveries need from the node.
#[derive(Clone)]
pub struct DeliveryContext {
    pub node_id: NodeId,
    pub control: Arc<dyn ControlPort>,
    pub broker: Arc<dyn BrokerDriver>,
    pub client: Arc<dyn WebhookClient>,
    pub cursors: CursorCommitter,
    pub settings: DeliverySettings,
    /// Base URL of the gateway as subscribers see it (hub and topic URLs derive from it).
    pub public_url: String,
    /// Rights and plans' delivery limits; none: everything is allowed, unlimited.
    pub policy: Option<Arc<dyn DeliveryPolicy>>,
    /// Seals subscribers' secrets before they are stored, opens them to sign.
    pub secrets: Arc<crate::secrets::SecretSealer>,
    pub metrics: DeliveryMetrics,
    /// The circuit breakers of callback endpoints, and the operator events.
    pub endpoints: crate::endpoints::Endpoints,
    /// Where attempts are recorded.
    pub ledger: crate::ledger::Ledger,
    /// Traces of deliveries (the node's OpenTelemetry), when on.
    pub trace: Option<Arc<dyn DeliveryTrace>>,
}

/// How a delivery attempt is traced: the span it runs in (continuing the trace stored with the
/// message) and the trace context headers it sends to the callback (`traceparent`).
pub trait DeliveryTrace: Send + Sync + std::fmt::Debug + 'static {
    /// The attempt's span (ended when the returned guard is dropped, after the attempt) and
    /// the trace context headers to send.
    fn delivery(
        &self,
        sub: &Subscription,
        message: &Message,
        attempt: u32,
    ) -> (Box<dyn std::any::Any + Send>, Vec<(String, String)>);
}

/// The span guard and trace headers of an attempt (none: the message's own `traceparent`
/// goes on).
fn trace_attempt(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
) -> (Box<dyn std::any::Any + Send>, Vec<(String, String)>) {
    match &ctx.trace {
        Some(trace) => trace.delivery(sub, message, attempt),
        None => (Box::new(()), Vec::new()),
    }
}

impl std::fmt::Debug for DeliveryContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryContext")
            .field("node_id", &self.node_id)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl DeliveryContext {
    pub fn hub_url(&self) -> String {
        format!("{}/hub", self.public_url)
    }

    pub fn topic_url(&self, topic: &str) -> String {
        format!("{}/topics/{topic}", self.public_url)
    }
}

/// Messages of [`SubscriptionActor`].
#[derive(Debug)]
pub enum SubscriptionMsg {
    /// The subscription's record changed (renewed lease, new secret).
    Update(Box<Subscription>),
    /// The delivery task failed; the actor fails with it (its supervisor restarts it).
    TaskFailed(String),
}

/// Start-up arguments of [`SubscriptionActor`].
#[derive(Debug)]
pub struct SubscriptionArgs {
    pub ctx: DeliveryContext,
    pub subscription: Subscription,
}

/// State of [`SubscriptionActor`].
#[derive(Debug)]
pub struct SubscriptionActorState {
    record: watch::Sender<Subscription>,
    /// Stops dispatching; what is in flight finishes.
    drain: CancellationToken,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Delivers one subscription; see the module documentation.
#[derive(Debug, Default)]
pub struct SubscriptionActor;

impl Actor for SubscriptionActor {
    type Msg = SubscriptionMsg;
    type State = SubscriptionActorState;
    type Arguments = SubscriptionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (record, watch_record) = watch::channel(args.subscription.clone());
        let cancel = CancellationToken::new();
        let drain = CancellationToken::new();
        let task = tokio::spawn(deliver_subscription(
            args.ctx,
            watch_record,
            Stop {
                drain: drain.clone(),
                cancel: cancel.clone(),
            },
            myself,
        ));
        tracing::info!(subscription = %args.subscription.id, topic = %args.subscription.topic, "SubscriptionStarted");
        Ok(SubscriptionActorState {
            record,
            drain,
            cancel,
            task: Some(task),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SubscriptionMsg::Update(sub) => {
                state.record.send_replace(*sub);
                Ok(())
            }
            SubscriptionMsg::TaskFailed(reason) => Err(reason.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Let what is in flight finish (bounded), so that the cursor the task records as it
        // ends covers every delivery made; then cut whatever still runs.
        state.drain.cancel();
        if let Some(mut task) = state.task.take() {
            if tokio::time::timeout(DRAIN_LIMIT, &mut task).await.is_err() {
                state.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
        Ok(())
    }
}

/// How a subscription's delivery stops: `drain` dispatches nothing more and ends once what is
/// in flight has finished (a wait for a retry ends at once; the schedule is replicated);
/// `cancel` cuts everything.
#[derive(Debug, Clone)]
struct Stop {
    drain: CancellationToken,
    cancel: CancellationToken,
}

impl Stop {
    fn draining(&self) -> bool {
        self.drain.is_cancelled() || self.cancel.is_cancelled()
    }

    /// Resolves once draining (or cancelled).
    async fn drained(&self) {
        tokio::select! {
            () = self.drain.cancelled() => {}
            () = self.cancel.cancelled() => {}
        }
    }
}

async fn deliver_subscription(
    ctx: DeliveryContext,
    record: watch::Receiver<Subscription>,
    stop: Stop,
    actor: ActorRef<SubscriptionMsg>,
) {
    let cancel = stop.cancel.clone();
    let sub = record.borrow().clone();
    let partitions = match ctx.broker.partitions(&sub.topic).await {
        Ok(n) => n,
        Err(e) => {
            let _ = actor.cast(SubscriptionMsg::TaskFailed(format!(
                "topic `{}`: {e}",
                sub.topic
            )));
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let book: RetryBook = Arc::default();
    for partition in 0..partitions {
        let ctx = ctx.clone();
        let record = record.clone();
        let stop = stop.clone();
        let book = book.clone();
        tasks.spawn(async move { deliver_partition(ctx, record, partition, stop, book).await });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(PartitionEnd::Cancelled)) => {}
            Ok(Ok(PartitionEnd::Gone)) => {
                // The subscription is removed; the supervisor stops this actor when the removal
                // is applied. Stop the other partitions now.
                cancel.cancel();
            }
            Ok(Err(reason)) => {
                cancel.cancel();
                let _ = actor.cast(SubscriptionMsg::TaskFailed(reason));
            }
            Err(e) => {
                cancel.cancel();
                let _ = actor.cast(SubscriptionMsg::TaskFailed(format!("delivery task: {e}")));
            }
        }
    }
}

enum PartitionEnd {
    Cancelled,
    Gone,
}

enum Outcome {
    Delivered,
    /// Skipped: over the plan's delivery limit, which drops.
    Dropped,
    DeadLettered,
    Gone,
    Cancelled,
}

/// Retry schedules of one subscription's failing deliveries, replicated as a whole.
type RetryBook = Arc<tokio::sync::Mutex<std::collections::BTreeMap<(u32, u64), RetryEntry>>>;

async fn deliver_partition(
    ctx: DeliveryContext,
    record: watch::Receiver<Subscription>,
    partition: u32,
    stop: Stop,
    book: RetryBook,
) -> Result<PartitionEnd, String> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    use std::collections::{BTreeSet, VecDeque};

    let sub = record.borrow().clone();
    let (cursor, retries) = ctx.control.reader().read(|s| {
        let cursor = s
            .cursors
            .get(&sub.id)
            .and_then(|c| c.get(&partition))
            .copied();
        let retries: Vec<RetryEntry> = s
            .retries
            .get(&sub.id)
            .map(|r| {
                r.iter()
                    .filter(|e| e.partition == partition)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (cursor, retries)
    });
    // Replicated retry schedules name messages by offset; where offsets are not global
    // (MQTT sessions number what the broker redelivers afresh) they cannot be matched, and
    // the new owner starts each schedule again.
    if ctx.broker.offsets_global(&sub.topic) {
        let mut book = book.lock().await;
        for entry in retries {
            book.insert((entry.partition, entry.offset), entry);
        }
    }
    let start = cursor.map_or(StartAt::Latest, StartAt::Offset);
    let mut consumer = ctx
        .broker
        .session_consumer(&sub.id, &sub.topic, partition, start)
        .await
        .map_err(|e| format!("open consumer of `{}`: {e}", sub.topic))?;
    let window = ctx.settings.window.max(1);
    let mut buffered: VecDeque<Message> = VecDeque::new();
    // Offsets dispatched, in order; the cursor moves past the longest completed prefix.
    let mut dispatched: VecDeque<u64> = VecDeque::new();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < window && !stop.draining() {
            let Some(message) = buffered.pop_front() else {
                break;
            };
            let prior = book.lock().await.get(&(partition, message.offset)).cloned();
            // A first attempt spends the plan's delivery quota (a retry was paid for).
            let mut dropped = false;
            if let (Some(policy), None) = (&ctx.policy, &prior) {
                let id = record.borrow().id.clone();
                loop {
                    match policy.allow(&id).await {
                        Allowance::Deliver => break,
                        Allowance::Drop => {
                            dropped = true;
                            break;
                        }
                        Allowance::Wait(d) => {
                            tokio::select! {
                                () = stop.drained() => break,
                                () = tokio::time::sleep(d) => {}
                            }
                        }
                    }
                }
                if stop.draining() {
                    buffered.push_front(message);
                    break;
                }
            }
            dispatched.push_back(message.offset);
            if dropped {
                ctx.metrics.dropped.inc();
                tracing::debug!(subscription = %sub.id, offset = message.offset, "over the plan's delivery limit: dropped");
                in_flight.push(Box::pin(async move { (message.offset, Outcome::Dropped) })
                    as BoxFuture<'_, (u64, Outcome)>);
                continue;
            }
            let (ctx, record, stop, book) = (&ctx, &record, &stop, &book);
            in_flight.push(Box::pin(async move {
                let outcome = deliver_one(ctx, record, &message, prior, stop, book).await;
                (message.offset, outcome)
            }));
        }
        let need_more = buffered.is_empty() && in_flight.len() < window;
        tokio::select! {
            biased;
            () = stop.drained(), if in_flight.is_empty() => {
                consumer.close().await;
                return Ok(PartitionEnd::Cancelled);
            }
            Some((offset, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                match outcome {
                    Outcome::Delivered | Outcome::DeadLettered | Outcome::Dropped => {
                        done.insert(offset);
                        let mut next = None;
                        while let Some(front) = dispatched.front().copied() {
                            if !done.remove(&front) {
                                break;
                            }
                            dispatched.pop_front();
                            next = Some(front + 1);
                        }
                        if let Some(next) = next {
                            ctx.cursors.record(&sub.id, partition, next);
                            consumer.commit(next);
                        }
                    }
                    Outcome::Gone => {
                        let id = record.borrow().id.clone();
                        tracing::info!(subscription = %id, "callback answered 410 Gone: subscription ends");
                        if let Err(e) = ctx.control.write(Command::RemoveSubscription { id }).await {
                            return Err(format!("remove after 410: {e}"));
                        }
                        return Ok(PartitionEnd::Gone);
                    }
                    Outcome::Cancelled => {
                        // Let the others in flight end too (they see the same cancellation),
                        // then commit what completed in order.
                    }
                }
            }
            read = consumer.next_batch(READ_BATCH, Duration::from_millis(250)), if need_more && !stop.draining() => {
                let messages = read.map_err(|e| format!("read `{}`: {e}", sub.topic))?;
                buffered.extend(messages);
            }
        }
    }
}

/// The id of a message's delivery to a subscription: `<subscription>:<partition>:<offset>` —
/// the same for every attempt, on every node (`X-Eventgate-Delivery`, and `webhook-id` under
/// Standard Webhooks).
/// On a delivery of a record that has no value at all (a Kafka tombstone): `true`.
pub const TOMBSTONE_HEADER: &str = "x-eventgate-tombstone";

pub fn delivery_id(sub: &Subscription, message: &Message) -> String {
    format!("{}:{}:{}", sub.id, message.partition, message.offset)
}

fn delivery_request(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
    trace_headers: Vec<(String, String)>,
) -> Result<CallbackRequest, String> {
    let traced = !trace_headers.is_empty();
    let mut headers = vec![
        (
            "content-type".to_owned(),
            message
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        ),
        (
            "link".to_owned(),
            link_header(
                &ctx.hub_url(),
                &sub.topic_url
                    .clone()
                    .unwrap_or_else(|| ctx.topic_url(&sub.topic)),
            ),
        ),
        (DELIVERY_HEADER.to_owned(), delivery_id(sub, message)),
        (ATTEMPT_HEADER.to_owned(), attempt.to_string()),
    ];
    // A message published as a CloudEvent (its attributes in `ce_*` headers, as the Kafka
    // binding keeps them) is delivered as one, in the HTTP binary mode.
    // Other message headers go out as `X-Message-Header-<name>` (the webhook receiver's
    // spelling, so a relay keeps them), the W3C trace context as it is; a header that cannot
    // be an HTTP header (a name that is not a token, a value with control bytes) stays behind.
    if message.tombstone {
        // A record without a value (a key's deletion under compaction), told apart from an
        // empty body.
        headers.push((TOMBSTONE_HEADER.to_owned(), "true".to_owned()));
    }
    for (name, value) in &message.headers {
        // A header without a value goes out empty: HTTP has no null.
        let value: &[u8] = value.as_deref().unwrap_or_default();
        if let Some(attribute) = name.strip_prefix("ce_") {
            headers.push((format!("ce-{attribute}"), cloudevent_header_value(value)));
            continue;
        }
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let printable = text
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if !token || !printable {
            continue;
        }
        let header = if matches!(name.as_str(), "traceparent" | "tracestate") {
            // The attempt's own context replaces the stored one when traces are on.
            if traced {
                continue;
            }
            name.clone()
        } else {
            format!("x-message-header-{}", name.to_ascii_lowercase())
        };
        headers.push((header, text.to_owned()));
    }
    headers.extend(trace_headers);
    // A secret that cannot be opened is a failed attempt: never an unsigned delivery.
    let secret = sub
        .secret
        .as_ref()
        .map(|stored| ctx.secrets.open(&sub.id, stored))
        .transpose()?;
    let previous = sub
        .previous_secret
        .as_ref()
        .filter(|p| p.until_ms > now_ms())
        .map(|p| ctx.secrets.open(&sub.id, &p.secret))
        .transpose()?;
    match sub.signing {
        Signing::WebSub => {
            let algorithm = ctx.settings.signature;
            if let Some(secret) = &secret {
                headers.push((
                    "x-hub-signature".to_owned(),
                    algorithm.sign(secret.as_bytes(), &message.payload),
                ));
            }
            // During a rotation's overlap the old secret's signature rides along, so a
            // subscriber still checking with it keeps accepting.
            if let Some(previous) = &previous {
                headers.push((
                    PREVIOUS_SIGNATURE_HEADER.to_owned(),
                    algorithm.sign(previous.as_bytes(), &message.payload),
                ));
            }
        }
        Signing::StandardWebhooks => {
            // The message id is the delivery id: the same for every attempt of the message to
            // this subscription, on whichever node makes it.
            let id = delivery_id(sub, message);
            let timestamp = now_ms() / 1000;
            let mut signatures = Vec::new();
            for secret in secret.iter().chain(previous.iter()) {
                let key = crate::standard_webhooks::key_of(secret)?;
                signatures.push(crate::standard_webhooks::signature(
                    &key,
                    &id,
                    timestamp,
                    &message.payload,
                ));
            }
            headers.push(("webhook-id".to_owned(), id));
            headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
            if !signatures.is_empty() {
                headers.push(("webhook-signature".to_owned(), signatures.join(" ")));
            }
        }
    }
    Ok(CallbackRequest {
        method: CallbackMethod::Post,
        url: sub.callback.clone(),
        headers,
        body: Bytes::clone(&message.payload),
    })
}

async fn deliver_one(
    ctx: &DeliveryContext,
    record: &watch::Receiver<Subscription>,
    message: &Message,
    prior: Option<RetryEntry>,
    stop: &Stop,
    book: &RetryBook,
) -> Outcome {
    let settings = &ctx.settings;
    let cancel = &stop.cancel;
    let (mut attempt, first_attempt_ms) = match &prior {
        Some(r) => (r.attempt, r.first_attempt_at_ms),
        None => (0, now_ms()),
    };
    // Continue a replicated schedule: wait for the recorded next attempt time.
    if let Some(r) = &prior {
        let wait = r.next_attempt_at_ms.saturating_sub(now_ms());
        if wait > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                () = stop.drained() => return Outcome::Cancelled,
            }
        }
    }
    loop {
        let mut sub = record.borrow().clone();
        // No delivery once the subscriber's right is withdrawn: the hub ends the subscription
        // (and tells the subscriber); until then, hold.
        while let Some(reason) = ctx.policy.as_ref().and_then(|p| p.withdrawn(&sub)) {
            tracing::debug!(subscription = %sub.id, %reason, "delivery held: right withdrawn");
            tokio::select! {
                () = tokio::time::sleep(WITHDRAWN_RECHECK) => {}
                () = stop.drained() => return Outcome::Cancelled,
            }
            sub = record.borrow().clone();
        }
        // A disabled subscription is not delivered (the hub stops it meanwhile); a paused
        // endpoint gets no attempts but its probes (see `crate::endpoints`).
        while ctx.endpoints.is_disabled(&sub.id) {
            let mut changed = ctx.endpoints.watch();
            if !ctx.endpoints.is_disabled(&sub.id) {
                break;
            }
            tokio::select! {
                _ = changed.changed() => {}
                () = stop.drained() => return Outcome::Cancelled,
            }
        }
        let origin = callback_origin(&sub.callback);
        let admission = tokio::select! {
            a = ctx.endpoints.admit(&origin) => a,
            () = stop.drained() => return Outcome::Cancelled,
        };
        attempt += 1;
        ctx.metrics.attempts.inc();
        if attempt > 1 {
            ctx.metrics.retries.inc();
        }
        let started = tokio::time::Instant::now();
        let (span, trace_headers) = trace_attempt(ctx, &sub, message, attempt);
        let result = match delivery_request(ctx, &sub, message, attempt, trace_headers) {
            Ok(request) => tokio::select! {
                r = ctx.client.send(request) => r.map_err(|e| e.to_string()),
                () = cancel.cancelled() => return Outcome::Cancelled,
            },
            Err(e) => Err(e),
        };
        // The attempt's span ends with the attempt.
        drop(span);
        let kind = match admission {
            crate::endpoints::Admission::Probe(_) => AttemptKind::Probe,
            crate::endpoints::Admission::Normal => AttemptKind::Delivery,
        };
        record_attempt(ctx, &sub, message, attempt, kind, &result, started);
        let answered = result.as_ref().ok().map(|r| r.status);
        let mut retry_after = None;
        let error = match result {
            Ok(response) if (200..300).contains(&response.status) => {
                ctx.endpoints.outcome(&origin, admission, Ok(()));
                ctx.metrics.delivered.inc();
                let since = now_ms().saturating_sub(message.timestamp_ms);
                ctx.metrics.latency.observe(since as f64 / 1000.0);
                if attempt > 1 {
                    forget_retry(ctx, &sub.id, book, message).await;
                }
                return Outcome::Delivered;
            }
            Ok(response) if response.status == 410 => {
                ctx.endpoints.outcome(&origin, admission, Ok(()));
                return Outcome::Gone;
            }
            // "Not now": the subscriber's own word on when to come back is taken (capped).
            Ok(response) if matches!(response.status, 429 | 503) => {
                retry_after = response
                    .retry_after
                    .map(|d| d.min(settings.retry_after_max));
                format!("callback answered {}", response.status)
            }
            // 3xx is a failure too: callbacks follow no redirects.
            Ok(response) => format!("callback answered {}", response.status),
            Err(e) => e,
        };
        ctx.metrics.failures.inc();
        // While its endpoint is paused a message waits for the breaker, not its schedule, and
        // is neither dead-lettered nor aged out: nothing is lost to an endpoint's outage.
        // The breaker counts what says the endpoint is unwell — no answer, 5xx, 408, 429 — not
        // an answer about this message (another 4xx, 3xx): a message the endpoint refuses
        // follows its schedule to a dead letter and does not hold the others back.
        let unwell = answered.is_none_or(|s| s >= 500 || s == 408 || s == 429);
        let paused = if unwell {
            ctx.endpoints.outcome(&origin, admission, Err(&error))
        } else {
            ctx.endpoints.outcome(&origin, admission, Ok(()))
        };
        let events = ctx.endpoints.events();
        if attempt == ctx.endpoints.settings().failing_after {
            events.emit(
                "attempt.failing",
                &sub.id,
                message_event(&sub, message, &origin, attempt, &error),
            );
        }
        let age = Duration::from_millis(now_ms().saturating_sub(first_attempt_ms));
        let next = retry_after.or_else(|| settings.retry.delay(attempt));
        if paused {
            tracing::debug!(subscription = %sub.id, offset = message.offset, attempt, %error, "DeliveryHeld: endpoint paused");
            let next_attempt_at_ms = ctx
                .endpoints
                .paused(&origin)
                .map_or(now_ms(), |h| h.next_probe_at_ms);
            let entry = RetryEntry {
                partition: message.partition,
                offset: message.offset,
                attempt,
                next_attempt_at_ms,
                first_attempt_at_ms: first_attempt_ms,
                last_error: Some(error),
            };
            if !set_retry(ctx, &sub.id, book, entry, cancel).await {
                return Outcome::Cancelled;
            }
            continue;
        }
        if attempt >= settings.max_attempts || age >= settings.max_age || next.is_none() {
            tracing::warn!(subscription = %sub.id, offset = message.offset, attempt, %error, "DeliveryDeadLettered");
            let letter = DeadLetter {
                id: sub.id.clone(),
                topic: sub.topic.clone(),
                partition: message.partition,
                offset: message.offset,
                attempts: attempt,
                last_error: error.clone(),
                at_ms: now_ms(),
            };
            if let Err(e) = ctx.control.write(Command::RecordDeadLetter(letter)).await {
                // Without the record the message would be skipped silently: keep retrying.
                tracing::warn!(subscription = %sub.id, error = %e, "dead letter not recorded; retrying the delivery");
            } else {
                ctx.metrics.dead_letters.inc();
                events.emit(
                    "message.dead_lettered",
                    &sub.id,
                    message_event(&sub, message, &origin, attempt, &error),
                );
                forget_retry(ctx, &sub.id, book, message).await;
                return Outcome::DeadLettered;
            }
        }
        let delay = next.unwrap_or_default();
        tracing::debug!(subscription = %sub.id, offset = message.offset, attempt, %error, ?delay, "DeliveryRetried");
        let entry = RetryEntry {
            partition: message.partition,
            offset: message.offset,
            attempt,
            next_attempt_at_ms: now_ms() + delay.as_millis() as u64,
            first_attempt_at_ms: first_attempt_ms,
            last_error: Some(error),
        };
        if !set_retry(ctx, &sub.id, book, entry, cancel).await {
            return Outcome::Cancelled;
        }
        // The schedule's wait, cut short if the endpoint's breaker opens and closes meanwhile.
        tokio::select! {
            () = ctx.endpoints.retry_wait(&origin, delay) => {}
            () = stop.drained() => return Outcome::Cancelled,
        }
    }
}

/// The `data` of an operator event about one message of a subscription.
fn message_event(
    sub: &Subscription,
    message: &Message,
    origin: &str,
    attempt: u32,
    error: &str,
) -> serde_json::Value {
    serde_json::json!({
        "subscription": sub.id,
        "topic": sub.topic,
        "origin": origin,
        "message_id": delivery_id(sub, message),
        "partition": message.partition,
        "offset": message.offset,
        "attempt": attempt,
        "error": error,
    })
}

/// Records `entry` in the subscription's retry schedule and replicates the schedule; `false`
/// when cancelled meanwhile.
async fn set_retry(
    ctx: &DeliveryContext,
    id: &str,
    book: &RetryBook,
    entry: RetryEntry,
    cancel: &CancellationToken,
) -> bool {
    let entries = {
        let mut book = book.lock().await;
        book.insert((entry.partition, entry.offset), entry);
        book.values().cloned().collect()
    };
    let write = ctx.control.write(Command::SetRetries {
        node: ctx.node_id,
        id: id.to_owned(),
        entries,
    });
    tokio::select! {
        result = write => if let Err(e) = result {
            tracing::debug!(subscription = %id, error = %e, "retry schedule not replicated");
        },
        () = cancel.cancelled() => return false,
    }
    true
}

/// Bytes a CloudEvents attribute's HTTP header value percent-encodes besides those outside
/// printable ASCII (HTTP binding, 3.1.3.2): space, `"` and `%`.
const CLOUDEVENT_HEADER: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

/// A CloudEvents attribute as an HTTP header value.
fn cloudevent_header_value(value: &[u8]) -> String {
    percent_encoding::percent_encode(value, CLOUDEVENT_HEADER).to_string()
}

/// Records an attempt in the delivery ledger.
fn record_attempt(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
    kind: AttemptKind,
    result: &Result<crate::callback::CallbackResponse, String>,
    started: tokio::time::Instant,
) {
    if !ctx.ledger.enabled() {
        return;
    }
    let (outcome, status, error, response) = match result {
        Ok(r) => {
            let outcome = match r.status {
                200..=299 => AttemptOutcome::Succeeded,
                410 => AttemptOutcome::Gone,
                _ => AttemptOutcome::Failed,
            };
            let error = (outcome == AttemptOutcome::Failed)
                .then(|| format!("callback answered {}", r.status));
            let body = &r.body[..r.body.len().min(ctx.ledger.response_bytes())];
            let response = (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned());
            (outcome, Some(r.status), error, response)
        }
        Err(e) => (AttemptOutcome::Failed, None, Some(e.clone()), None),
    };
    ctx.ledger.record(Attempt {
        at_ms: now_ms(),
        subscription: sub.id.clone(),
        message_id: delivery_id(sub, message),
        partition: message.partition,
        offset: message.offset,
        attempt,
        kind,
        outcome,
        status,
        latency_ms: started.elapsed().as_millis() as u64,
        error,
        response,
        node: ctx.node_id,
    });
}

/// One delivery attempt of `message` to `sub`, outside the subscription's stream (an operator's
/// re-drive of a dead letter). `Err` carries what went wrong.
pub async fn deliver_once(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
) -> Result<(), String> {
    // A re-drive or a replay is a delivery like any other: none once the right is withdrawn.
    if let Some(reason) = ctx.policy.as_ref().and_then(|p| p.withdrawn(sub)) {
        return Err(format!("not delivered: {reason}"));
    }
    let (span, trace_headers) = trace_attempt(ctx, sub, message, attempt);
    let request = delivery_request(ctx, sub, message, attempt, trace_headers)?;
    let started = tokio::time::Instant::now();
    let result = ctx.client.send(request).await.map_err(|e| e.to_string());
    drop(span);
    record_attempt(
        ctx,
        sub,
        message,
        attempt,
        AttemptKind::Manual,
        &result,
        started,
    );
    match result {
        Ok(response) if (200..300).contains(&response.status) => Ok(()),
        Ok(response) => Err(format!("callback answered {}", response.status)),
        Err(e) => Err(e),
    }
}

/// Drops `message`'s retry schedule and replicates what remains.
async fn forget_retry(ctx: &DeliveryContext, id: &str, book: &RetryBook, message: &Message) {
    let entries: Vec<RetryEntry> = {
        let mut book = book.lock().await;
        book.remove(&(message.partition, message.offset));
        book.values().cloned().collect()
    };
    let command = Command::SetRetries {
        node: ctx.node_id,
        id: id.to_owned(),
        entries,
    };
    if let Err(e) = ctx.control.write(command).await {
        tracing::debug!(subscription = %id, error = %e, "retry schedule not cleared");
    }
}

#[cfg(test)]
mod tests;
