//! `SubscriptionActor`: delivers one WebSub subscription's topic to its callback, in order and
//! at least once.
//!
//! Model: the subscription is a cursor over its topic (per partition), like a consumer group of
//! one. The head message is posted; the cursor moves past it once the callback answered 2xx, or
//! once it was dead-lettered after `max_attempts` attempts or `max_age`. While the head fails, its
//! retry schedule (attempt, next attempt time) is replicated, so a new owner after a failover
//! continues the schedule instead of restarting it. Cursor moves are committed in batches
//! (fenced: only the owner's commits count), so a failover re-delivers at most the last
//! uncommitted batch and loses nothing. `410 Gone` ends the subscription.
//!
//! The network work runs in a task owned by the actor; a failure of that task fails the actor,
//! and its supervisor ([`crate::hub::HubSupervisor`]) restarts it with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eventgate_raft_store::control::ControlPlane;
use eventgate_raft_store::{Command, CursorCommit, DeadLetter, NodeId, RetryEntry, Subscription};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerDriver, Message, StartAt};
use crate::callback::{CallbackMethod, CallbackRequest, WebhookClient};
use crate::websub::{link_header, retry_delay, SignatureAlgorithm};

/// Header naming the delivery (`<subscription>:<partition>:<offset>`), the same on every
/// attempt, so subscribers can drop duplicates.
pub const DELIVERY_HEADER: &str = "x-eventgate-delivery";
/// Header counting attempts of this delivery, from 1.
pub const ATTEMPT_HEADER: &str = "x-eventgate-attempt";

/// Cursor commits are batched: at most this long after a move, or this many moves.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
const COMMIT_EVERY_MOVES: u64 = 256;
/// Messages read from the broker at a time.
const READ_BATCH: usize = 128;

/// Retry and signing policy of deliveries.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A message still failing this long after its first attempt is dead-lettered.
    pub max_age: Duration,
    pub signature: SignatureAlgorithm,
}

/// What deliveries need from the node.
#[derive(Clone)]
pub struct DeliveryContext {
    pub node_id: NodeId,
    pub control: ControlPlane,
    pub broker: Arc<dyn BrokerDriver>,
    pub client: Arc<dyn WebhookClient>,
    pub settings: DeliverySettings,
    /// Base URL of the gateway as subscribers see it (hub and topic URLs derive from it).
    pub public_url: String,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
pub struct SubscriptionState {
    record: watch::Sender<Subscription>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Delivers one subscription; see the module documentation.
#[derive(Debug, Default)]
pub struct SubscriptionActor;

impl Actor for SubscriptionActor {
    type Msg = SubscriptionMsg;
    type State = SubscriptionState;
    type Arguments = SubscriptionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (record, watch_record) = watch::channel(args.subscription.clone());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(deliver_subscription(
            args.ctx,
            watch_record,
            cancel.clone(),
            myself,
        ));
        tracing::info!(subscription = %args.subscription.id, topic = %args.subscription.topic, "SubscriptionStarted");
        Ok(SubscriptionState {
            record,
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
        // The task commits its cursor when cancelled; wait for it (bounded).
        state.cancel.cancel();
        if let Some(task) = state.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        Ok(())
    }
}

async fn deliver_subscription(
    ctx: DeliveryContext,
    record: watch::Receiver<Subscription>,
    cancel: CancellationToken,
    actor: ActorRef<SubscriptionMsg>,
) {
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
    for partition in 0..partitions {
        let ctx = ctx.clone();
        let record = record.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move { deliver_partition(ctx, record, partition, cancel).await });
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
    DeadLettered,
    Gone,
    Cancelled,
}

struct CursorBatch {
    id: String,
    partition: u32,
    pending: Option<u64>,
    moves: u64,
    last_commit: Instant,
}

impl CursorBatch {
    fn moved(&mut self, next: u64) {
        self.pending = Some(next);
        self.moves += 1;
    }

    fn due(&self) -> bool {
        self.pending.is_some()
            && (self.moves >= COMMIT_EVERY_MOVES || self.last_commit.elapsed() >= COMMIT_EVERY)
    }

    async fn commit(&mut self, ctx: &DeliveryContext) {
        let Some(offset) = self.pending else { return };
        let command = Command::CommitCursors {
            node: ctx.node_id,
            commits: vec![CursorCommit {
                id: self.id.clone(),
                partition: self.partition,
                offset,
            }],
        };
        match ctx.control.write(command).await {
            Ok(_) => {
                self.pending = None;
                self.moves = 0;
                self.last_commit = Instant::now();
            }
            // Keep it pending: the next commit carries the newest position anyway.
            Err(e) => {
                tracing::warn!(subscription = %self.id, error = %e, "cursor commit failed; will retry")
            }
        }
    }
}

async fn deliver_partition(
    ctx: DeliveryContext,
    record: watch::Receiver<Subscription>,
    partition: u32,
    cancel: CancellationToken,
) -> Result<PartitionEnd, String> {
    let sub = record.borrow().clone();
    let (cursor, retry) = ctx.control.reader().read(|s| {
        let cursor = s
            .cursors
            .get(&sub.id)
            .and_then(|c| c.get(&partition))
            .copied();
        let retry = s
            .retries
            .get(&sub.id)
            .and_then(|r| r.iter().find(|e| e.partition == partition).cloned());
        (cursor, retry)
    });
    let start = cursor.map_or(StartAt::Latest, StartAt::Offset);
    let mut consumer = ctx
        .broker
        .consumer(&sub.topic, partition, start)
        .await
        .map_err(|e| format!("open consumer of `{}`: {e}", sub.topic))?;
    let mut batch = CursorBatch {
        id: sub.id.clone(),
        partition,
        pending: None,
        moves: 0,
        last_commit: Instant::now(),
    };
    let mut resume = retry;
    loop {
        if cancel.is_cancelled() {
            batch.commit(&ctx).await;
            return Ok(PartitionEnd::Cancelled);
        }
        let messages = tokio::select! {
            biased;
            () = cancel.cancelled() => continue,
            read = consumer.next_batch(READ_BATCH, Duration::from_millis(250)) => {
                read.map_err(|e| format!("read `{}`: {e}", sub.topic))?
            }
        };
        if messages.is_empty() {
            batch.commit(&ctx).await;
            continue;
        }
        for message in messages {
            let prior = resume.take().filter(|r| r.offset == message.offset);
            match deliver_one(&ctx, &record, &message, prior, &cancel).await {
                Outcome::Delivered | Outcome::DeadLettered => {
                    batch.moved(message.offset + 1);
                    if batch.due() {
                        batch.commit(&ctx).await;
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
                    batch.commit(&ctx).await;
                    return Ok(PartitionEnd::Cancelled);
                }
            }
        }
    }
}

fn delivery_request(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
) -> CallbackRequest {
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
            link_header(&ctx.hub_url(), &ctx.topic_url(&sub.topic)),
        ),
        (
            DELIVERY_HEADER.to_owned(),
            format!("{}:{}:{}", sub.id, message.partition, message.offset),
        ),
        (ATTEMPT_HEADER.to_owned(), attempt.to_string()),
    ];
    if let Some(secret) = &sub.secret {
        headers.push((
            "x-hub-signature".to_owned(),
            ctx.settings
                .signature
                .sign(secret.as_bytes(), &message.payload),
        ));
    }
    CallbackRequest {
        method: CallbackMethod::Post,
        url: sub.callback.clone(),
        headers,
        body: Bytes::clone(&message.payload),
    }
}

async fn deliver_one(
    ctx: &DeliveryContext,
    record: &watch::Receiver<Subscription>,
    message: &Message,
    prior: Option<RetryEntry>,
    cancel: &CancellationToken,
) -> Outcome {
    let settings = &ctx.settings;
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
                () = cancel.cancelled() => return Outcome::Cancelled,
            }
        }
    }
    loop {
        let sub = record.borrow().clone();
        attempt += 1;
        let request = delivery_request(ctx, &sub, message, attempt);
        let result = tokio::select! {
            r = ctx.client.send(request) => r,
            () = cancel.cancelled() => return Outcome::Cancelled,
        };
        let error = match result {
            Ok(response) if (200..300).contains(&response.status) => {
                if attempt > 1 {
                    clear_retries(ctx, &sub.id).await;
                }
                return Outcome::Delivered;
            }
            Ok(response) if response.status == 410 => return Outcome::Gone,
            Ok(response) => format!("callback answered {}", response.status),
            Err(e) => e.to_string(),
        };
        let age = Duration::from_millis(now_ms().saturating_sub(first_attempt_ms));
        if attempt >= settings.max_attempts || age >= settings.max_age {
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
                clear_retries(ctx, &sub.id).await;
                return Outcome::DeadLettered;
            }
        }
        let delay = retry_delay(attempt, settings.retry_base, settings.retry_max);
        tracing::debug!(subscription = %sub.id, offset = message.offset, attempt, %error, ?delay, "DeliveryRetried");
        let entry = RetryEntry {
            partition: message.partition,
            offset: message.offset,
            attempt,
            next_attempt_at_ms: now_ms() + delay.as_millis() as u64,
            first_attempt_at_ms: first_attempt_ms,
            last_error: Some(error),
        };
        let write = ctx.control.write(Command::SetRetries {
            node: ctx.node_id,
            id: sub.id.clone(),
            entries: vec![entry],
        });
        tokio::select! {
            result = write => if let Err(e) = result {
                tracing::debug!(subscription = %sub.id, error = %e, "retry schedule not replicated");
            },
            () = cancel.cancelled() => return Outcome::Cancelled,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Outcome::Cancelled,
        }
    }
}

/// One delivery attempt of `message` to `sub`, outside the subscription's stream (an operator's
/// re-drive of a dead letter). `Err` carries what went wrong.
pub async fn deliver_once(
    ctx: &DeliveryContext,
    sub: &Subscription,
    message: &Message,
    attempt: u32,
) -> Result<(), String> {
    let request = delivery_request(ctx, sub, message, attempt);
    match ctx.client.send(request).await {
        Ok(response) if (200..300).contains(&response.status) => Ok(()),
        Ok(response) => Err(format!("callback answered {}", response.status)),
        Err(e) => Err(e.to_string()),
    }
}

async fn clear_retries(ctx: &DeliveryContext, id: &str) {
    let command = Command::SetRetries {
        node: ctx.node_id,
        id: id.to_owned(),
        entries: Vec::new(),
    };
    if let Err(e) = ctx.control.write(command).await {
        tracing::debug!(subscription = %id, error = %e, "retry schedule not cleared");
    }
}
