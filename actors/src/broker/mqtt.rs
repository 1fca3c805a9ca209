//! The MQTT driver (rumqttc: MQTT 5 by default, 3.1.1 for brokers that need it; see
//! [`wire`]).
//!
//! MQTT has no log: no offsets, no replay. What the gateway builds on it:
//!
//! - **Publish**: QoS 1; answered only after the broker's PUBACK. One connection per node
//!   carries every publish; rumqttc reports PUBACKs by packet id on its event loop, and the
//!   driver maps them back to the waiting publisher (packet ids are assigned in request order,
//!   so the n-th outgoing publish belongs to the n-th request). When that connection breaks,
//!   every publish waiting on it fails with [`BrokerError::Unavailable`] (the client retries;
//!   at least once) and a fresh connection is made — nothing is ever matched to the wrong
//!   request. No partition or offset is returned.
//! - **Streams (WS/SSE)**: per topic filter, the node connection subscribes once (QoS 1) and
//!   numbers what arrives in a bounded in-memory window (a *tap*): offsets are node-local,
//!   `tap_epoch << 32 | n`, so a token of another node or of an older tap is recognised as
//!   foreign: the reader starts live and is told that an unknown number was missed.
//! - **WebSub**: one persistent session per subscription (client id from the subscription id,
//!   clean session off, QoS 1, manual acknowledgements). A message is acknowledged only once
//!   the callback took it (or it was dead-lettered); after a failover the new owner connects
//!   with the same client id and the broker redelivers what was not acknowledged. The session
//!   is created when the subscription is verified ([`BrokerDriver::open_session`]) so that the
//!   broker holds messages from that moment, and dropped when the subscription ends.
//! - On MQTT 5 a message's content type, headers and key travel as properties ([`wire`]); a
//!   message without a content type, and every message on MQTT 3.1.1, gets the configured one.
//! - **Retained messages** are a topic's current value, not events: what a broker sends
//!   because a subscription was made (RETAIN set on delivery: MQTT 3.1.1 §3.3.1.3, MQTT 5
//!   without retain-as-published) is delivered to no reader — not when a tap subscribes, not
//!   when it resubscribes after a reconnect, not when a WebSub session subscribes. Readers
//!   get what is published while they read; a retained publish made while they read is an
//!   ordinary message to them (the broker forwards it with RETAIN clear).

use eventgate_raft_store::clock::now_ms;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rumqttc::Outgoing;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

mod wire;
use tokio::time::Instant;
use wire::{Client, Ev, Events, Incoming};
pub use wire::{MqttVersion, KEY_PROPERTY, TOPIC_HEADER};

use super::{
    BrokerDriver, BrokerError, BrokerResult, Message, OutgoingMessage, PartitionConsumer, Position,
    StartAt,
};

/// Settings of the MQTT driver.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Prefix of every client id: the node connection is `<client_id>-n<node>`, a WebSub
    /// session `<client_id>-s-<subscription>`.
    pub client_id: String,
    pub node_id: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// Bound on connecting, subscribing and waiting for a PUBACK.
    pub request_timeout: Duration,
    /// Content type of a message read without one (every message on MQTT 3.1.1).
    pub content_type: String,
    /// Which MQTT to speak.
    pub protocol: MqttVersion,
    /// Expiry given to every message published (MQTT 5): the broker drops what no session
    /// took within it. `None`: messages do not expire.
    pub message_expiry: Option<Duration>,
    /// Messages a tap keeps for readers resuming on this node.
    pub tap_messages: usize,
    /// Bytes of payload a tap keeps.
    pub tap_bytes: usize,
    /// How long a tap nobody reads stays subscribed.
    pub tap_linger: Duration,
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
}

impl MqttConfig {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: "eventgate".to_owned(),
            node_id: 0,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            content_type: "application/octet-stream".to_owned(),
            protocol: MqttVersion::default(),
            message_expiry: None,
            tap_messages: 10_000,
            tap_bytes: 64 * 1024 * 1024,
            tap_linger: Duration::from_secs(60),
            max_message_bytes: 1024 * 1024,
        }
    }

    /// A client and its event loop (see [`wire::connect`]); `session_expiry` in seconds.
    fn connect(
        &self,
        client_id: String,
        clean: bool,
        session_expiry: Option<u32>,
        manual_acks: bool,
    ) -> (Client, Events) {
        wire::connect(
            self,
            client_id,
            clean,
            session_expiry,
            manual_acks,
            REQUEST_CAPACITY,
            INFLIGHT,
        )
    }

    fn session_client_id(&self, subscription: &str) -> String {
        format!("{}-s-{subscription}", self.client_id)
    }
}

/// How long the broker keeps a node connection's session (its tap subscriptions) after the
/// connection drops, on MQTT 5.
const NODE_SESSION_EXPIRY: u32 = 300;
/// Publishes in flight on one connection (rumqttc's packet-id window).
const INFLIGHT: u16 = 100;
/// Capacity of the request channel of a connection: above every publish, subscription and
/// acknowledgement that can be queued, so that requests are never refused for room.
const REQUEST_CAPACITY: usize = 4096;

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable {
        reason: format!("mqtt: {e}"),
    }
}

/// Whether `filter` is a well-formed MQTT topic filter (a topic name is one without wildcards).
pub fn valid_filter(filter: &str) -> bool {
    rumqttc::valid_filter(filter)
}

/// Checks an MQTT topic filter for subscribing.
fn check_filter(filter: &str) -> BrokerResult<()> {
    if filter.is_empty() || filter.len() > 65_535 || filter.contains('\0') {
        return Err(BrokerError::InvalidTopic {
            topic: filter.to_owned(),
            reason: "an MQTT topic filter is 1 to 65535 bytes without NUL",
        });
    }
    if !rumqttc::valid_filter(filter) {
        return Err(BrokerError::InvalidTopic {
            topic: filter.to_owned(),
            reason: "`#` only as the last level and `+` only as a whole level",
        });
    }
    Ok(())
}

/// Checks an MQTT topic name for publishing: a filter without wildcards.
fn check_topic(topic: &str) -> BrokerResult<()> {
    check_filter(topic)?;
    if !rumqttc::valid_topic(topic) {
        return Err(BrokerError::InvalidTopic {
            topic: topic.to_owned(),
            reason: "a topic filter with wildcards can be subscribed to, not published to",
        });
    }
    Ok(())
}

type Reply = oneshot::Sender<Result<(), String>>;

/// Correlation of one connection's requests with the broker's acknowledgements.
#[derive(Default)]
struct Pending {
    /// Publishes handed to rumqttc and not yet given a packet id, in request order.
    publishes: VecDeque<Reply>,
    /// Publishes sent, by packet id.
    sent: HashMap<u16, Reply>,
    /// Publishes whose packet id was still in use (rumqttc's collision), by packet id.
    parked: HashMap<u16, Reply>,
    subscribes: VecDeque<Reply>,
    subscribed: HashMap<u16, Reply>,
}

impl Pending {
    fn fail_all(&mut self, reason: &str) {
        let replies = self
            .publishes
            .drain(..)
            .chain(self.sent.drain().map(|(_, r)| r))
            .chain(self.parked.drain().map(|(_, r)| r))
            .chain(self.subscribes.drain(..))
            .chain(self.subscribed.drain().map(|(_, r)| r));
        for reply in replies {
            let _ = reply.send(Err(reason.to_owned()));
        }
    }

    fn outgoing(&mut self, event: &Outgoing) {
        match *event {
            Outgoing::Publish(pkid) if pkid != 0 => {
                if self.sent.contains_key(&pkid) {
                    return; // a retransmission
                }
                let reply = self
                    .parked
                    .remove(&pkid)
                    .or_else(|| self.publishes.pop_front());
                if let Some(reply) = reply {
                    self.sent.insert(pkid, reply);
                }
            }
            Outgoing::AwaitAck(pkid) => {
                if let Some(reply) = self.publishes.pop_front() {
                    self.parked.insert(pkid, reply);
                }
            }
            Outgoing::Subscribe(pkid) => {
                if let Some(reply) = self.subscribes.pop_front() {
                    self.subscribed.insert(pkid, reply);
                }
            }
            _ => {}
        }
    }

    fn published(&mut self, pkid: u16, result: Result<(), String>) {
        if let Some(reply) = self.sent.remove(&pkid) {
            let _ = reply.send(result);
        }
    }

    fn subscribed(&mut self, pkid: u16, result: Result<(), String>) {
        if let Some(reply) = self.subscribed.remove(&pkid) {
            let _ = reply.send(result);
        }
    }
}

/// One live connection: a client and what waits on it. Replaced, never reused, after an error.
struct Link {
    client: Client,
    pending: Mutex<Pending>,
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a QoS 1 publish; the receiver answers once the broker acknowledged it.
    fn publish(
        &self,
        topic: &str,
        message: &OutgoingMessage,
        expiry: Option<Duration>,
    ) -> BrokerResult<oneshot::Receiver<Result<(), String>>> {
        let (tx, rx) = oneshot::channel();
        // Pushing the reply and queueing the request under one lock keeps both in one order.
        let mut pending = self.pending();
        self.client
            .publish(topic, message, expiry)
            .map_err(unavailable)?;
        pending.publishes.push_back(tx);
        Ok(rx)
    }

    fn subscribe(&self, filter: &str) -> BrokerResult<oneshot::Receiver<Result<(), String>>> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending();
        self.client.subscribe(filter).map_err(unavailable)?;
        pending.subscribes.push_back(tx);
        Ok(rx)
    }
}

async fn answer(
    rx: oneshot::Receiver<Result<(), String>>,
    timeout: Duration,
    what: &str,
) -> BrokerResult<()> {
    match tokio::time::timeout(timeout, rx).await {
        Err(_) => Err(unavailable(format!(
            "no answer to {what} within {timeout:?}"
        ))),
        Ok(Err(_)) => Err(unavailable(format!("connection lost during {what}"))),
        Ok(Ok(Err(reason))) => Err(unavailable(reason)),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// A topic filter the node connection subscribes to for streams, and what arrived on it.
struct Tap {
    filter: String,
    /// High 32 bits of every offset of this tap.
    epoch: u64,
    state: Mutex<TapState>,
    /// The next offset, for readers waiting at the head.
    head: watch::Sender<u64>,
}

struct TapState {
    messages: VecDeque<Message>,
    bytes: usize,
    next: u64,
    readers: usize,
    idle_since: Instant,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("filter", &self.filter)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Tap {
    fn new(filter: &str) -> Self {
        // A random epoch in [1, 2^21) above 32 bits of sequence: a token of another tap has
        // other high bits, and every offset stays below 2^53, exact as a JavaScript number
        // (the envelope's `offset`; JSON.parse rounds anything larger).
        let epoch = rand::random_range(1u64..(1 << 21));
        let next = epoch << 32;
        Self {
            filter: filter.to_owned(),
            epoch,
            state: Mutex::new(TapState {
                messages: VecDeque::new(),
                bytes: 0,
                next,
                readers: 0,
                idle_since: Instant::now(),
            }),
            head: watch::channel(next).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, incoming: &Incoming, config: &MqttConfig) {
        let next = {
            let mut s = self.state();
            let message = incoming.message(s.next, now_ms(), &config.content_type);
            s.next += 1;
            s.bytes += message.payload.len();
            s.messages.push_back(message);
            while s.messages.len() > config.tap_messages.max(1)
                || (s.bytes > config.tap_bytes && s.messages.len() > 1)
            {
                if let Some(old) = s.messages.pop_front() {
                    s.bytes -= old.payload.len();
                }
            }
            s.next
        };
        self.head.send_replace(next);
    }

    fn latest(&self) -> u64 {
        self.state().next
    }
}

/// The node's connection: publishes and the taps of streams.
struct NodeConnection {
    config: MqttConfig,
    link: Mutex<Option<Arc<Link>>>,
    taps: Mutex<HashMap<String, Arc<Tap>>>,
    /// Serialises creating taps (each waits for its SUBACK).
    tap_creation: tokio::sync::Mutex<()>,
    up: watch::Sender<bool>,
    publish_slots: Semaphore,
}

impl NodeConnection {
    fn link(&self) -> Option<Arc<Link>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_link(&self, link: Option<Arc<Link>>) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }

    fn taps(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Tap>>> {
        self.taps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, incoming: &Incoming) {
        if incoming.retain {
            // The topic's retained value, sent because a tap (re)subscribed: the current
            // value, not an event (see the module documentation).
            tracing::debug!(topic = %incoming.topic, "retained message not taken as an event");
            return;
        }
        // Lock order: the tap map, then a tap (as everywhere).
        for tap in self.taps().values() {
            if rumqttc::matches(&incoming.topic, &tap.filter) {
                tap.push(incoming, &self.config);
            }
        }
    }
}

/// Runs the node connection until the driver is dropped: connects, resubscribes the taps,
/// routes events, and on any error fails what waits and starts over with a fresh connection.
async fn run_node_connection(conn: Weak<NodeConnection>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(c) = conn.upgrade() else { return };
        // The broker keeps the node's tap subscriptions across a reconnect (5 minutes on
        // MQTT 5).
        let (client, mut events) = c.config.connect(
            format!("{}-n{}", c.config.client_id, c.config.node_id),
            false,
            Some(NODE_SESSION_EXPIRY),
            false,
        );
        let link = Arc::new(Link {
            client,
            pending: Mutex::default(),
        });
        drop(c);
        let error = drive(&conn, &link, &mut events, &mut backoff).await;
        let Some(c) = conn.upgrade() else { return };
        c.set_link(None);
        c.up.send_replace(false);
        link.pending()
            .fail_all(&format!("connection lost: {error}"));
        tracing::warn!(error = %error, retry_in = ?backoff, "mqtt connection lost");
        drop(c);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn drive(
    conn: &Weak<NodeConnection>,
    link: &Arc<Link>,
    events: &mut Events,
    backoff: &mut Duration,
) -> String {
    loop {
        let event = events.poll().await;
        let Some(c) = conn.upgrade() else {
            return "driver dropped".to_owned();
        };
        match event {
            Err(e) => return e,
            Ok(Ev::ConnAck {
                result,
                session_present,
            }) => {
                if let Err(e) = result {
                    return e;
                }
                *backoff = Duration::from_millis(100);
                c.set_link(Some(link.clone()));
                c.up.send_replace(true);
                tracing::info!(session_present, protocol = ?c.config.protocol, "mqtt connected");
                let filters: Vec<String> = c.taps().keys().cloned().collect();
                for filter in filters {
                    // Answers are not awaited here: a refusal shows in the log of the task
                    // below, and the taps keep their numbering.
                    match link.subscribe(&filter) {
                        Ok(rx) => {
                            let timeout = c.config.request_timeout;
                            tokio::spawn(async move {
                                if let Err(e) = answer(rx, timeout, "resubscribe").await {
                                    tracing::warn!(%filter, error = %e, "tap not resubscribed");
                                }
                            });
                        }
                        Err(e) => tracing::warn!(%filter, error = %e, "tap not resubscribed"),
                    }
                }
            }
            Ok(Ev::Publish(incoming)) => c.dispatch(&incoming),
            Ok(Ev::PubAck { pkid, result }) => link.pending().published(pkid, result),
            Ok(Ev::SubAck { pkid, result }) => link.pending().subscribed(pkid, result),
            Ok(Ev::Out(outgoing)) => link.pending().outgoing(&outgoing),
            Ok(Ev::Other) => {}
        }
    }
}

/// The MQTT driver.
pub struct MqttBroker {
    conn: Arc<NodeConnection>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("host", &self.conn.config.host)
            .field("port", &self.conn.config.port)
            .finish_non_exhaustive()
    }
}

impl Drop for MqttBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttBroker {
    /// Starts the node connection (it connects in the background and reconnects by itself).
    pub fn new(config: MqttConfig) -> Arc<Self> {
        let conn = Arc::new(NodeConnection {
            config,
            link: Mutex::new(None),
            taps: Mutex::new(HashMap::new()),
            tap_creation: tokio::sync::Mutex::new(()),
            up: watch::channel(false).0,
            publish_slots: Semaphore::new(REQUEST_CAPACITY / 2),
        });
        let task = tokio::spawn(run_node_connection(Arc::downgrade(&conn)));
        let sweeper = Arc::downgrade(&conn);
        tokio::spawn(sweep_taps(sweeper));
        Arc::new(Self { conn, task })
    }

    /// Waits up to `timeout` for the node connection.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut up = self.conn.up.subscribe();
        tokio::time::timeout(timeout, up.wait_for(|u| *u))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn connected_link(&self) -> BrokerResult<Arc<Link>> {
        self.conn
            .link()
            .ok_or_else(|| unavailable("not connected to the broker"))
    }

    /// The tap of `filter`, subscribed (created and subscribed on first use).
    async fn tap(&self, filter: &str) -> BrokerResult<Arc<Tap>> {
        check_filter(filter)?;
        if let Some(tap) = self.conn.taps().get(filter) {
            return Ok(tap.clone());
        }
        let _creating = self.conn.tap_creation.lock().await;
        if let Some(tap) = self.conn.taps().get(filter) {
            return Ok(tap.clone());
        }
        let tap = Arc::new(Tap::new(filter));
        // In the map first, so that nothing arriving right after the SUBACK is missed.
        self.conn.taps().insert(filter.to_owned(), tap.clone());
        let subscribed = match self.connected_link().and_then(|l| l.subscribe(filter)) {
            Ok(rx) => answer(rx, self.conn.config.request_timeout, "subscribe").await,
            Err(e) => Err(e),
        };
        if let Err(e) = subscribed {
            self.conn.taps().remove(filter);
            return Err(e);
        }
        tracing::info!(%filter, epoch = tap.epoch, "mqtt tap subscribed");
        Ok(tap)
    }

    async fn session(&self, subscription: &str, filter: &str) -> BrokerResult<SessionConsumer> {
        check_filter(filter)?;
        let config = &self.conn.config;
        // The broker holds the session, and what arrives for it, until it is closed.
        let (client, events) = config.connect(
            config.session_client_id(subscription),
            false,
            Some(u32::MAX),
            true,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run_session(events, tx, ready_tx));
        let connected = tokio::time::timeout(config.request_timeout, ready_rx).await;
        let fail = |e: BrokerError| {
            task.abort();
            e
        };
        match connected {
            Err(_) => return Err(fail(unavailable("session: no CONNACK in time"))),
            Ok(Err(_)) => return Err(fail(unavailable("session: connection failed"))),
            Ok(Ok(Err(e))) => return Err(fail(unavailable(format!("session: {e}")))),
            Ok(Ok(Ok(()))) => {}
        }
        let mut consumer = SessionConsumer {
            client,
            rx,
            task: Some(task),
            unacked: VecDeque::new(),
            next: 0,
            content_type: config.content_type.clone(),
            early: VecDeque::new(),
        };
        // Subscribing again is harmless on an existing session and needed on a new one.
        consumer.client.subscribe(filter).map_err(unavailable)?;
        let deadline = Instant::now() + config.request_timeout;
        loop {
            match tokio::time::timeout_at(deadline, consumer.rx.recv()).await {
                Err(_) => return Err(unavailable("session: no SUBACK in time")),
                Ok(None) => return Err(unavailable("session: connection lost")),
                Ok(Some(SessionEvent::Failed(e))) => return Err(unavailable(e)),
                Ok(Some(SessionEvent::Subscribed(Ok(())))) => break,
                Ok(Some(SessionEvent::Subscribed(Err(e)))) => return Err(unavailable(e)),
                // Redelivered before the SUBACK: keep it, in order.
                Ok(Some(SessionEvent::Message(p))) => consumer.early.push_back(p),
            }
        }
        Ok(consumer)
    }
}

/// Unsubscribes taps that nobody has read for `tap_linger`.
async fn sweep_taps(conn: Weak<NodeConnection>) {
    loop {
        let every = match conn.upgrade() {
            Some(c) => (c.config.tap_linger / 4).max(Duration::from_millis(250)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(c) = conn.upgrade() else { return };
        let idle: Vec<String> = c
            .taps()
            .iter()
            .filter(|(_, t)| {
                let s = t.state();
                s.readers == 0 && s.idle_since.elapsed() >= c.config.tap_linger
            })
            .map(|(f, _)| f.clone())
            .collect();
        for filter in idle {
            c.taps().remove(&filter);
            if let Some(link) = c.link() {
                let _ = link.client.unsubscribe(&filter);
            }
            tracing::info!(%filter, "mqtt tap unsubscribed (no readers)");
        }
    }
}

impl BrokerDriver for MqttBroker {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn offsets_global(&self, _topic: &str) -> bool {
        false
    }

    /// MQTT has no topic registry: every valid topic (or filter) exists.
    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        Box::pin(async move {
            check_filter(topic)?;
            Ok(true)
        })
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move { check_filter(topic) })
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        Box::pin(async move {
            check_filter(topic)?;
            Ok(1)
        })
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        Box::pin(async move { Ok(vec![(0, self.tap(topic).await?.latest())]) })
    }

    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async move { self.connected_link().map(|_| ()) })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        Box::pin(async move {
            check_topic(topic)?;
            let limit = self.conn.config.max_message_bytes;
            if message.payload.len() > limit {
                return Err(BrokerError::MessageTooLarge {
                    size: message.payload.len(),
                    limit,
                });
            }
            let timeout = self.conn.config.request_timeout;
            let _slot = tokio::time::timeout(timeout, self.conn.publish_slots.acquire())
                .await
                .map_err(|_| unavailable("too many publishes waiting for the broker"))?
                .map_err(unavailable)?;
            let rx =
                self.connected_link()?
                    .publish(topic, &message, self.conn.config.message_expiry)?;
            answer(rx, timeout, "publish").await?;
            Ok(None)
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            if partition != 0 {
                return Err(BrokerError::PartitionNotFound {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            let tap = self.tap(topic).await?;
            let head = tap.head.subscribe();
            let (next, foreign) = {
                let mut s = tap.state();
                s.readers += 1;
                let oldest = s.messages.front().map_or(s.next, |m| m.offset);
                match start {
                    StartAt::Earliest => (oldest, false),
                    StartAt::Latest => (s.next, false),
                    StartAt::Offset(o) if o >> 32 == tap.epoch => (o.clamp(oldest, s.next), false),
                    StartAt::Offset(_) => (s.next, true),
                }
            };
            Ok(Box::new(TapConsumer {
                tap,
                head,
                next,
                foreign,
            }) as Box<dyn PartitionConsumer>)
        })
    }

    fn open_session<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            let session = self.session(subscription, topic).await?;
            session.shut().await;
            Ok(())
        })
    }

    fn close_session<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            // Connecting with a clean session makes the broker discard the stored one.
            let config = &self.conn.config;
            let (client, events) =
                config.connect(config.session_client_id(subscription), true, None, false);
            let (tx, _rx) = mpsc::unbounded_channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            let task = tokio::spawn(run_session(events, tx, ready_tx));
            let result = match tokio::time::timeout(config.request_timeout, ready_rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(unavailable(e)),
                _ => Err(unavailable("no CONNACK in time")),
            };
            SessionConsumer::disconnect(&client, task).await;
            result
        })
    }

    fn session_consumer<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            if partition != 0 {
                return Err(BrokerError::PartitionNotFound {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            let mut session = self.session(subscription, topic).await?;
            // Continue the numbering of the cursor, so that it only ever grows.
            if let StartAt::Offset(o) = start {
                session.next = o;
            }
            Ok(Box::new(session) as Box<dyn PartitionConsumer>)
        })
    }
}

/// A reader of a tap.
struct TapConsumer {
    tap: Arc<Tap>,
    head: watch::Receiver<u64>,
    next: u64,
    foreign: bool,
}

impl std::fmt::Debug for TapConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapConsumer")
            .field("tap", &self.tap)
            .field("next", &self.next)
            .finish()
    }
}

impl Drop for TapConsumer {
    fn drop(&mut self) {
        let mut s = self.tap.state();
        s.readers -= 1;
        if s.readers == 0 {
            s.idle_since = Instant::now();
        }
    }
}

impl TapConsumer {
    fn take(&mut self, max: usize) -> Vec<Message> {
        let s = self.tap.state();
        let Some(first) = s.messages.front().map(|m| m.offset) else {
            return Vec::new();
        };
        // Fell out of the window: go on from its oldest.
        self.next = self.next.max(first);
        let skip = (self.next - first) as usize;
        let out: Vec<Message> = s
            .messages
            .iter()
            .skip(skip)
            .take(max.max(1))
            .cloned()
            .collect();
        if let Some(last) = out.last() {
            self.next = last.offset + 1;
        }
        out
    }
}

impl PartitionConsumer for TapConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            loop {
                let out = self.take(max);
                if !out.is_empty() {
                    return Ok(out);
                }
                let next = self.next;
                let arrived = tokio::time::timeout_at(deadline, self.head.wait_for(|h| *h > next));
                match arrived.await {
                    Err(_) => return Ok(Vec::new()),
                    Ok(Err(_)) => return Err(unavailable("tap closed")),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }

    fn position(&self) -> u64 {
        self.next
    }

    fn skipped_from(&self, requested: u64) -> Option<u64> {
        (!self.foreign).then(|| self.next.saturating_sub(requested))
    }
}

enum SessionEvent {
    Subscribed(Result<(), String>),
    Message(Box<Incoming>),
    Failed(String),
}

/// Polls a session's connection: reports the CONNACK once, then SUBACKs and messages, and
/// ends at the first error (the session's owner opens a new one).
async fn run_session(
    mut events: Events,
    tx: mpsc::UnboundedSender<SessionEvent>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    loop {
        match events.poll().await {
            Ok(Ev::ConnAck { result, .. }) => {
                let failed = result.is_err();
                if let Some(r) = ready.take() {
                    let _ = r.send(result);
                }
                if failed {
                    return;
                }
            }
            Ok(Ev::SubAck { result, .. }) => {
                let _ = tx.send(SessionEvent::Subscribed(result));
            }
            Ok(Ev::Publish(p)) => {
                let _ = tx.send(SessionEvent::Message(p));
            }
            Ok(Ev::Out(Outgoing::Disconnect)) => {
                let _ = tx.send(SessionEvent::Failed("disconnected".to_owned()));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e.clone()));
                }
                let _ = tx.send(SessionEvent::Failed(e));
                return;
            }
        }
    }
}

/// A WebSub subscription's persistent session: messages numbered from the cursor, each
/// acknowledged to the broker once the reader committed past it.
struct SessionConsumer {
    client: Client,
    rx: mpsc::UnboundedReceiver<SessionEvent>,
    task: Option<tokio::task::JoinHandle<()>>,
    unacked: VecDeque<(u64, Incoming)>,
    next: u64,
    content_type: String,
    early: VecDeque<Box<Incoming>>,
}

impl std::fmt::Debug for SessionConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConsumer")
            .field("next", &self.next)
            .field("unacked", &self.unacked.len())
            .finish_non_exhaustive()
    }
}

impl Drop for SessionConsumer {
    fn drop(&mut self) {
        // Dropping the connection without DISCONNECT keeps the session on the broker; acks
        // still queued are lost, and the broker redelivers those messages (at least once).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl SessionConsumer {
    /// The message to deliver next, numbered; `None` for a retained value (sent because the
    /// session subscribed), which is not an event: it is acknowledged with what came before
    /// it (QoS 1 acknowledgements go in the order of receipt), never delivered.
    fn number(&mut self, incoming: Box<Incoming>) -> Option<Message> {
        if incoming.retain {
            self.unacked
                .push_back((self.next.saturating_sub(1), *incoming));
            return None;
        }
        let offset = self.next;
        self.next += 1;
        let message = incoming.message(offset, now_ms(), &self.content_type);
        self.unacked.push_back((offset, *incoming));
        Some(message)
    }

    /// Disconnects cleanly after what was queued (acknowledgements first: one ordered request
    /// channel); the broker keeps the persistent session.
    async fn shut(mut self) {
        if let Some(task) = self.task.take() {
            Self::disconnect(&self.client, task).await;
        }
    }

    async fn disconnect(client: &Client, task: tokio::task::JoinHandle<()>) {
        if client.disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        } else {
            task.abort();
        }
    }
}

impl PartitionConsumer for SessionConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let max = max.max(1);
            let mut out = Vec::new();
            while out.len() < max {
                let Some(p) = self.early.pop_front() else {
                    break;
                };
                out.extend(self.number(p));
            }
            if out.is_empty() {
                match tokio::time::timeout(wait, self.rx.recv()).await {
                    Err(_) => return Ok(out),
                    Ok(None) => return Err(unavailable("session connection ended")),
                    Ok(Some(SessionEvent::Message(p))) => out.extend(self.number(p)),
                    Ok(Some(SessionEvent::Failed(e))) => return Err(unavailable(e)),
                    Ok(Some(SessionEvent::Subscribed(_))) => {}
                }
            }
            while out.len() < max {
                match self.rx.try_recv() {
                    Ok(SessionEvent::Message(p)) => out.extend(self.number(p)),
                    Ok(SessionEvent::Failed(e)) => return Err(unavailable(e)),
                    Ok(SessionEvent::Subscribed(_)) => {}
                    Err(_) => break,
                }
            }
            Ok(out)
        })
    }

    fn position(&self) -> u64 {
        self.next
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.shut())
    }

    fn commit(&mut self, next: u64) {
        while self.unacked.front().is_some_and(|(o, _)| *o < next) {
            if let Some((_, incoming)) = self.unacked.pop_front() {
                // Room is reserved in the request channel; a closed connection means the
                // session is being replaced, and the broker redelivers.
                let _ = self.client.ack(&incoming);
            }
        }
    }
}

#[cfg(test)]
mod tests;
