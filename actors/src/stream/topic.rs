//! One broker consumption per topic per node, shared by every local reader.
//!
//! [`TopicSupervisor`] starts a [`TopicActor`] the first time a local client reads a topic and
//! forgets it when it stops. A `TopicActor` runs one reader task per partition from the
//! topic's latest offsets; each batch read becomes one `Arc<Batch>` in a bounded broadcast ring
//! (`tokio::sync::broadcast`): a send is a pointer copy whatever the number of readers, each
//! reader has its own cursor in the ring, and one that falls further behind than the ring holds
//! learns it (a lag) instead of holding memory. The position vector and the ring are updated
//! under one lock, so a new reader gets "everything after these positions" atomically. A topic
//! with no reader for `topic_linger` stops its consumption.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broker::{BrokerDriver, BrokerError, Message, StartAt};

use super::frame::{Batch, Frame};
use super::StreamSettings;

/// What a new reader gets: the live ring from `positions` on.
#[derive(Debug)]
pub struct RingReader {
    pub rx: broadcast::Receiver<Arc<Batch>>,
    /// Next offset of every partition: the ring carries everything from here.
    pub positions: Vec<u64>,
}

/// One topic consumed on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic: String,
    /// Local readers (stream connections) of its ring.
    pub readers: usize,
    /// Next offset of every partition the consumption will read.
    pub positions: Vec<u64>,
}

/// Errors of opening a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the topic's consumption could not start: {0}")]
    Unavailable(String),
    #[error("this node is stopping")]
    Stopping,
}

#[derive(Debug)]
struct TopicShared {
    topic: Arc<str>,
    positions: Mutex<Vec<u64>>,
    tx: broadcast::Sender<Arc<Batch>>,
}

impl TopicShared {
    /// The topic's ring, at the topic's latest offsets.
    async fn open(
        broker: &Arc<dyn BrokerDriver>,
        topic: &str,
        settings: &StreamSettings,
    ) -> Result<Arc<Self>, BrokerError> {
        let latest = broker.latest_offsets(topic).await?;
        let partitions = latest
            .iter()
            .map(|(p, _)| *p as usize + 1)
            .max()
            .unwrap_or(0);
        let mut positions = vec![0; partitions];
        for (p, next) in &latest {
            positions[*p as usize] = *next;
        }
        let (tx, _) = broadcast::channel(settings.ring_batches.max(1));
        Ok(Arc::new(Self {
            topic: topic.into(),
            positions: Mutex::new(positions),
            tx,
        }))
    }

    fn subscribe(&self) -> RingReader {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        RingReader {
            rx: self.tx.subscribe(),
            positions: positions.clone(),
        }
    }

    fn publish(&self, messages: Vec<Message>) {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let frames = messages
            .into_iter()
            .filter_map(|m| {
                let slot = positions.get_mut(m.partition as usize)?;
                *slot = m.offset + 1;
                Some(Frame::new(self.topic.clone(), m, &positions))
            })
            .collect();
        // No receiver is not an error: the topic lingers for a while without readers.
        let _ = self.tx.send(Arc::new(Batch::new(frames)));
    }
}

/// Messages of [`TopicActor`].
#[derive(Debug)]
pub enum TopicMsg {
    /// A new reader.
    Subscribe(RpcReplyPort<RingReader>),
    /// Periodic: stop when nobody has read for the linger time.
    Tick,
    /// A partition reader hit an error it cannot get past.
    Failed(String),
}

/// Arguments of [`TopicActor`].
#[derive(Debug, Clone)]
pub struct TopicArgs {
    shared: Arc<TopicShared>,
    pub broker: Arc<dyn BrokerDriver>,
    pub settings: StreamSettings,
}

/// State of [`TopicActor`].
#[derive(Debug)]
pub struct TopicState {
    shared: Arc<TopicShared>,
    readers: Vec<JoinHandle<()>>,
    ticker: JoinHandle<()>,
    idle_since: Option<Instant>,
    linger: Duration,
}

/// One broker consumption of one topic, fanned out to this node's readers.
#[derive(Debug, Default)]
pub struct TopicActor;

impl Actor for TopicActor {
    type Msg = TopicMsg;
    type State = TopicState;
    type Arguments = TopicArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = args.shared;
        let positions = shared
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let readers = positions
            .iter()
            .enumerate()
            .map(|(p, next)| {
                tokio::spawn(read_partition(
                    myself.clone(),
                    shared.clone(),
                    args.broker.clone(),
                    p as u32,
                    *next,
                    args.settings.batch_max,
                ))
            })
            .collect();
        let linger = args.settings.topic_linger;
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval((linger / 2).max(Duration::from_millis(50)));
            loop {
                every.tick().await;
                if me.cast(TopicMsg::Tick).is_err() {
                    return;
                }
            }
        });
        tracing::debug!(topic = %shared.topic, partitions = positions.len(), "topic consumption started");
        Ok(TopicState {
            shared,
            readers,
            ticker,
            idle_since: None,
            linger,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TopicMsg::Subscribe(reply) => {
                state.idle_since = None;
                let _ = reply.send(state.shared.subscribe());
            }
            TopicMsg::Tick => {
                if state.shared.tx.receiver_count() > 0 {
                    state.idle_since = None;
                } else {
                    let since = *state.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= state.linger {
                        tracing::debug!(topic = %state.shared.topic, "no readers; topic consumption stops");
                        myself.stop(Some("idle".to_owned()));
                    }
                }
            }
            TopicMsg::Failed(reason) => return Err(reason.into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        for reader in &state.readers {
            reader.abort();
        }
        Ok(())
    }
}

async fn read_partition(
    actor: ActorRef<TopicMsg>,
    shared: Arc<TopicShared>,
    broker: Arc<dyn BrokerDriver>,
    partition: u32,
    mut next: u64,
    batch_max: usize,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut consumer = match broker
            .consumer(&shared.topic, partition, StartAt::Offset(next))
            .await
        {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                tracing::warn!(topic = %shared.topic, partition, error = %e, "topic reader: broker unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => {
                let _ = actor.cast(TopicMsg::Failed(e.to_string()));
                return;
            }
        };
        loop {
            match consumer.next_batch(batch_max, Duration::from_secs(1)).await {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    backoff = Duration::from_millis(100);
                    shared.publish(messages);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(topic = %shared.topic, partition, error = %e, "topic reader: read failed; reopening");
                    next = consumer.position();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    break;
                }
                Err(e) => {
                    let _ = actor.cast(TopicMsg::Failed(e.to_string()));
                    return;
                }
            }
        }
    }
}

/// Messages of [`TopicSupervisor`].
#[derive(Debug)]
pub enum TopicSupervisorMsg {
    /// The topic's actor, started if needed.
    Lookup(String, RpcReplyPort<Result<ActorRef<TopicMsg>, String>>),
    /// Topics consumed on this node, with their reader counts.
    List(RpcReplyPort<Vec<TopicInfo>>),
}

/// State of [`TopicSupervisor`].
#[derive(Debug)]
pub struct TopicSupervisorState {
    broker: Arc<dyn BrokerDriver>,
    settings: StreamSettings,
    topics: HashMap<String, (ActorRef<TopicMsg>, Arc<TopicShared>)>,
    ids: HashMap<ActorId, String>,
}

/// Starts and forgets this node's [`TopicActor`]s.
#[derive(Debug, Default)]
pub struct TopicSupervisor;

impl Actor for TopicSupervisor {
    type Msg = TopicSupervisorMsg;
    type State = TopicSupervisorState;
    type Arguments = (Arc<dyn BrokerDriver>, StreamSettings);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (broker, settings): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TopicSupervisorState {
            broker,
            settings,
            topics: HashMap::new(),
            ids: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TopicSupervisorMsg::Lookup(topic, reply) => {
                if let Some((actor, _)) = state.topics.get(&topic) {
                    let _ = reply.send(Ok(actor.clone()));
                    return Ok(());
                }
                let shared = match TopicShared::open(&state.broker, &topic, &state.settings).await {
                    Ok(shared) => shared,
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let args = TopicArgs {
                    shared: shared.clone(),
                    broker: state.broker.clone(),
                    settings: state.settings.clone(),
                };
                match Actor::spawn_linked(None, TopicActor, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.ids.insert(actor.get_id(), topic.clone());
                        let _ = reply.send(Ok(actor.clone()));
                        state.topics.insert(topic, (actor, shared));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            TopicSupervisorMsg::List(reply) => {
                let mut topics: Vec<_> = state
                    .topics
                    .iter()
                    .map(|(name, (_, shared))| TopicInfo {
                        topic: name.clone(),
                        readers: shared.tx.receiver_count(),
                        positions: shared
                            .positions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone(),
                    })
                    .collect();
                topics.sort_by(|a, b| a.topic.cmp(&b.topic));
                let _ = reply.send(topics);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(topic) = state.ids.remove(&cell.get_id()) {
                    state.topics.remove(&topic);
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(topic) = state.ids.remove(&cell.get_id()) {
                    tracing::warn!(%topic, %error, "topic consumption failed; readers are closed and may reconnect");
                    state.topics.remove(&topic);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A handle on this node's topic consumptions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TopicRegistry {
    supervisor: ActorRef<TopicSupervisorMsg>,
    catchup: Arc<tokio::sync::Semaphore>,
}

impl TopicRegistry {
    /// Starts the topic supervisor.
    pub async fn start(
        broker: Arc<dyn BrokerDriver>,
        settings: StreamSettings,
    ) -> Result<(Self, JoinHandle<()>), ractor::SpawnErr> {
        let permits = settings.max_catchups.max(1);
        let (supervisor, handle) = Actor::spawn(None, TopicSupervisor, (broker, settings)).await?;
        Ok((
            Self {
                supervisor,
                catchup: Arc::new(tokio::sync::Semaphore::new(permits)),
            },
            handle,
        ))
    }

    /// Readers catching up from the broker at once are limited (after a node is lost, all its
    /// clients reconnect elsewhere with their ids; each catch-up opens broker readers).
    pub async fn catchup_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.catchup.clone().acquire_owned().await.ok()
    }

    /// The supervisor, to stop it.
    pub fn supervisor(&self) -> &ActorRef<TopicSupervisorMsg> {
        &self.supervisor
    }

    /// A reader of `topic`'s live ring, starting the topic's consumption if needed.
    pub async fn subscribe(&self, topic: &str) -> Result<RingReader, StreamError> {
        use ractor::rpc::CallResult;
        // An actor found idle may stop between the lookup and the subscription: look again.
        for _ in 0..3 {
            let actor = match self
                .supervisor
                .call(
                    |reply| TopicSupervisorMsg::Lookup(topic.to_owned(), reply),
                    Some(Duration::from_secs(30)),
                )
                .await
            {
                Ok(CallResult::Success(Ok(actor))) => actor,
                Ok(CallResult::Success(Err(reason))) => {
                    return Err(StreamError::Unavailable(reason))
                }
                _ => return Err(StreamError::Stopping),
            };
            if let Ok(CallResult::Success(sub)) = actor
                .call(TopicMsg::Subscribe, Some(Duration::from_secs(10)))
                .await
            {
                return Ok(sub);
            }
        }
        Err(StreamError::Unavailable(format!(
            "the consumption of `{topic}` keeps stopping"
        )))
    }

    /// Topics consumed on this node, their local reader counts and how far they have read.
    pub async fn topics(&self) -> Vec<TopicInfo> {
        self.supervisor
            .call(TopicSupervisorMsg::List, Some(Duration::from_secs(5)))
            .await
            .ok()
            .and_then(|r| match r {
                ractor::rpc::CallResult::Success(list) => Some(list),
                _ => None,
            })
            .unwrap_or_default()
    }
}
