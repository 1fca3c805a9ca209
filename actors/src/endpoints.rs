//! Endpoint health: a circuit breaker per callback endpoint (origin: scheme, host, port), and
//! the operator events the delivery side publishes.
//!
//! Each node counts the outcomes of its own attempts per origin. When a run of failures
//! (`failure_run`) or a failure ratio over a window trips, it writes [`Command::OpenEndpoint`]:
//! from then on no node makes attempts to that origin (the subscriptions' cursors hold; other
//! origins are not touched), except one probe at a time — the head message of a subscription
//! waiting for it — at `next_probe_at_ms`, the interval doubling from `probe_initial` to
//! `probe_max`. A probe that succeeds closes the breaker ([`Command::CloseEndpoint`]) and every
//! waiting delivery goes on at once; one that fails moves the next probe on (compare-and-set,
//! so probes made at once by several nodes count once). After `disable_after` of failing
//! probes, the endpoint's subscriptions are disabled ([`Command::DisableEndpoint`]): kept with
//! their cursors, delivered again once re-enabled (admin API, portal, or a verified
//! re-subscription). While an endpoint is paused, its messages are neither dead-lettered nor
//! aged out: the breaker, not the retry schedule, decides. Everything is in the replicated
//! state, so a failover changes nothing of it.
//!
//! Operator events ([`OperatorEvents`]) go to a topic of the gateway's own broker
//! (`websub.events_topic`), so an operator subscribes a webhook or a stream to them:
//! `attempt.failing`, `message.dead_lettered`, `endpoint.paused`, `endpoint.recovered`,
//! `endpoint.disabled`, as JSON `{"type", "timestamp", "node", "data"}`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::{Command, EndpointHealth, NodeId, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerDriver, OutgoingMessage};
use crate::control::ControlPort;

/// When the breaker of an endpoint opens, how it probes, and when it gives up.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// `false`: no breaker (every subscription retries on its own schedule).
    pub enabled: bool,
    /// Consecutive failed attempts to one origin that open its breaker.
    pub failure_run: u32,
    /// A share of failed attempts within `window` that opens it too …
    pub failure_ratio: f64,
    pub window: Duration,
    /// … once the window holds at least this many attempts.
    pub min_attempts: u32,
    /// The first probe's wait; each failed probe doubles it, up to `probe_max`.
    pub probe_initial: Duration,
    pub probe_max: Duration,
    /// A paused endpoint still failing this long after it opened has its subscriptions
    /// disabled.
    pub disable_after: Duration,
    /// The attempt of one message on which `attempt.failing` is published (once).
    pub failing_after: u32,
}

impl Default for BreakerSettings {
    /// 10 consecutive failures, or half of at least 20 attempts within a minute; probes from
    /// 5 s doubling to an hour; disabled after 5 days (as Svix does); `attempt.failing` on the
    /// fourth failed attempt of a message.
    fn default() -> Self {
        Self {
            enabled: true,
            failure_run: 10,
            failure_ratio: 0.5,
            window: Duration::from_secs(60),
            min_attempts: 20,
            probe_initial: Duration::from_secs(5),
            probe_max: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            failing_after: 4,
        }
    }
}

/// Counters and gauges of the breaker, registered by the node (`eventgate_websub_endpoint_*`).
#[derive(Debug, Clone, Default)]
pub struct BreakerMetrics {
    /// Breakers opened (by this node).
    pub opened: Counter,
    /// Probes made (by this node), and those that failed.
    pub probes: Counter,
    pub probe_failures: Counter,
    /// Endpoints paused now, cluster-wide.
    pub paused: Gauge,
    /// Subscriptions disabled now, cluster-wide.
    pub disabled: Gauge,
    /// Operator events published (by this node).
    pub events: Counter,
}

/// Publishes operator events to the events topic; a no-op without one.
#[derive(Clone)]
pub struct OperatorEvents {
    inner: Option<Arc<EventsInner>>,
}

struct EventsInner {
    broker: Arc<dyn BrokerDriver>,
    topic: String,
    node: NodeId,
    published: Counter,
}

impl std::fmt::Debug for OperatorEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorEvents")
            .field("topic", &self.inner.as_ref().map(|i| &i.topic))
            .finish()
    }
}

impl OperatorEvents {
    /// Events are logged only.
    pub fn none() -> Self {
        Self { inner: None }
    }

    /// Events go to `topic` of `broker` (created when missing, in the background: a broker
    /// slow to create topics does not hold the node's start).
    pub fn to_topic(
        broker: Arc<dyn BrokerDriver>,
        topic: String,
        node: NodeId,
        published: Counter,
    ) -> Self {
        let (b, t) = (broker.clone(), topic.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), b.ensure_topic(&t)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(topic = %t, error = %e, "operator events topic not created")
                }
                Err(_) => tracing::warn!(topic = %t, "operator events topic not created in time"),
            }
        });
        Self {
            inner: Some(Arc::new(EventsInner {
                broker,
                topic,
                node,
                published,
            })),
        }
    }

    /// The topic events go to.
    pub fn topic(&self) -> Option<&str> {
        self.inner.as_ref().map(|i| i.topic.as_str())
    }

    /// The event as published: `{"type", "timestamp", "node", "data"}`.
    pub fn envelope(kind: &str, node: NodeId, data: serde_json::Value) -> serde_json::Value {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(now_ms());
        serde_json::json!({
            "type": kind,
            "timestamp": humantime::format_rfc3339_millis(at).to_string(),
            "node": node,
            "data": data,
        })
    }

    /// Publishes event `kind` (in the background: a delivery never waits for it), keyed by
    /// `key` so that one endpoint's or subscription's events stay in order.
    pub fn emit(&self, kind: &'static str, key: &str, data: serde_json::Value) {
        tracing::info!(event = kind, %key, %data, "OperatorEvent");
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let body = Self::envelope(kind, inner.node, data).to_string();
        let key = Bytes::from(key.to_owned());
        tokio::spawn(async move {
            let message = OutgoingMessage {
                key: Some(key),
                headers: Vec::new(),
                content_type: Some("application/json".to_owned()),
                payload: Bytes::from(body),
                sticky: None,
            };
            match inner.broker.publish(&inner.topic, message).await {
                Ok(_) => {
                    inner.published.inc();
                }
                Err(e) => {
                    tracing::warn!(event = kind, topic = %inner.topic, error = %e, "operator event not published")
                }
            };
        });
    }
}

/// What a delivery may do now, given its endpoint's breaker.
#[derive(Debug)]
pub enum Admission {
    /// The endpoint is healthy: an ordinary attempt.
    Normal,
    /// The endpoint is paused and this attempt is its probe.
    Probe(Probe),
}

/// A probe in progress; while it lives, no other delivery of this node probes the endpoint.
#[derive(Debug)]
pub struct Probe {
    endpoints: Endpoints,
    origin: String,
    expected_next_probe_at_ms: u64,
    opened_at_ms: u64,
    interval_ms: u64,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(local) = self.endpoints.local().get_mut(&self.origin) {
            local.probing = false;
        }
    }
}

/// This node's recent outcomes of attempts to one origin.
#[derive(Debug, Default)]
struct Local {
    run: u32,
    recent: VecDeque<(Instant, bool)>,
    /// An `OpenEndpoint` of this node is on its way.
    tripping: bool,
    probing: bool,
}

/// The breakers of every callback endpoint, as this node applies them; see the module
/// documentation.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BreakerSettings,
    control: Arc<dyn ControlPort>,
    events: OperatorEvents,
    metrics: BreakerMetrics,
    local: Mutex<HashMap<String, Local>>,
    /// Bumped whenever the replicated breakers change.
    changed: watch::Sender<u64>,
    /// Per origin, how many times this node saw its breaker close.
    recoveries: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// The breakers of this node, following the replicated state until `stop`.
    pub fn start(
        control: Arc<dyn ControlPort>,
        settings: BreakerSettings,
        events: OperatorEvents,
        metrics: BreakerMetrics,
        stop: CancellationToken,
    ) -> Self {
        let endpoints = Self {
            inner: Arc::new(Inner {
                settings,
                control,
                events,
                metrics,
                local: Mutex::default(),
                changed: watch::Sender::new(0),
                recoveries: Mutex::default(),
            }),
        };
        tokio::spawn(endpoints.clone().follow(stop));
        endpoints
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.inner.settings
    }

    pub fn events(&self) -> &OperatorEvents {
        &self.inner.events
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.inner.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recoveries_of(&self, origin: &str) -> u64 {
        let map = self
            .inner
            .recoveries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(origin).copied().unwrap_or(0)
    }

    /// Keeps the change signal, the recoveries seen and the gauges in step with the applied
    /// state.
    async fn follow(self, stop: CancellationToken) {
        let reader = self.inner.control.reader().clone();
        let mut applied = reader.watch_applied();
        let mut last: BTreeMap<String, EndpointHealth> = BTreeMap::new();
        let mut last_disabled = 0u64;
        loop {
            let (now, disabled, disabled_changed) = reader.read(|s| {
                let changed = s.endpoints != last;
                // Disabling and re-enabling change the count or (re-enabled and disabled
                // again between two looks) at least the times.
                let fingerprint = s.disabled.values().fold(s.disabled.len() as u64, |acc, d| {
                    acc.wrapping_mul(31).wrapping_add(d.at_ms)
                });
                let disabled_changed = fingerprint != last_disabled;
                last_disabled = fingerprint;
                (
                    changed.then(|| s.endpoints.clone()),
                    s.disabled.len(),
                    disabled_changed,
                )
            });
            self.inner.metrics.disabled.set(disabled as i64);
            if disabled_changed {
                self.inner.changed.send_modify(|n| *n += 1);
            }
            if let Some(now) = now {
                {
                    let mut recoveries = self
                        .inner
                        .recoveries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for origin in last.keys().filter(|o| !now.contains_key(*o)) {
                        *recoveries.entry(origin.clone()).or_default() += 1;
                    }
                }
                {
                    // A breaker that closed starts counting afresh on every node.
                    let mut local = self.local();
                    for origin in last.keys().filter(|o| !now.contains_key(*o)) {
                        if let Some(l) = local.get_mut(origin) {
                            l.run = 0;
                            l.recent.clear();
                        }
                    }
                }
                self.inner.metrics.paused.set(now.len() as i64);
                last = now;
                self.inner.changed.send_modify(|n| *n += 1);
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
    }

    /// The breaker of `origin` if it is open (paused), as applied here.
    pub fn paused(&self, origin: &str) -> Option<EndpointHealth> {
        if !self.inner.settings.enabled {
            return None;
        }
        self.inner
            .control
            .reader()
            .read(|s| s.endpoints.get(origin).cloned())
    }

    /// Whether subscription `id` is disabled (after its endpoint's long outage).
    pub fn is_disabled(&self, id: &str) -> bool {
        self.inner
            .control
            .reader()
            .read(|s| s.disabled.contains_key(id))
    }

    /// A receiver that changes with the breakers and the disabled subscriptions.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Waits until a delivery to `origin` may be attempted: at once while it is healthy; while
    /// it is paused, until it closes or this delivery is let through as its probe.
    pub async fn admit(&self, origin: &str) -> Admission {
        loop {
            let mut changed = self.inner.changed.subscribe();
            let Some(health) = self.paused(origin) else {
                // This node is opening the breaker: wait for that to be applied (bounded, as
                // the write may fail).
                let tripping = self.local().get(origin).is_some_and(|l| l.tripping);
                if !tripping {
                    return Admission::Normal;
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if self.paused(origin).is_none() {
                    let still = self.local().get(origin).is_some_and(|l| l.tripping);
                    if !still {
                        return Admission::Normal;
                    }
                }
                continue;
            };
            let now = now_ms();
            if now >= health.next_probe_at_ms {
                let mut local = self.local();
                let l = local.entry(origin.to_owned()).or_default();
                if !l.probing {
                    l.probing = true;
                    drop(local);
                    self.inner.metrics.probes.inc();
                    return Admission::Probe(Probe {
                        endpoints: self.clone(),
                        origin: origin.to_owned(),
                        expected_next_probe_at_ms: health.next_probe_at_ms,
                        opened_at_ms: health.opened_at_ms,
                        interval_ms: health.probe_interval_ms,
                    });
                }
            }
            // Another delivery of this node probes now (its outcome changes the state), or
            // the next probe is ahead.
            let wait = health.next_probe_at_ms.saturating_sub(now).clamp(1, 1000);
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }

    /// Waits `delay` (a failed delivery's retry wait), or less: until `origin`'s breaker, open
    /// meanwhile, closes again — its deliveries then go on at once.
    pub async fn retry_wait(&self, origin: &str, delay: Duration) {
        let seen = self.recoveries_of(origin);
        let deadline = Instant::now() + delay;
        let mut changed = self.inner.changed.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                r = changed.changed() => if r.is_err() {
                    tokio::time::sleep_until(deadline).await;
                    return;
                },
            }
            if self.recoveries_of(origin) != seen {
                return;
            }
        }
    }

    /// Records the outcome of an attempt to `origin` (`Err`: what says the endpoint is unwell;
    /// an answer about the message — 2xx, 410, another 4xx — is `Ok`). Answers whether it is
    /// paused, or about to be: the failed delivery then waits for the breaker instead of its
    /// own schedule.
    pub fn outcome(&self, origin: &str, admission: Admission, result: Result<(), &str>) -> bool {
        if !self.inner.settings.enabled {
            return false;
        }
        let settings = &self.inner.settings;
        let now = Instant::now();
        match result {
            Ok(()) => {
                {
                    let mut local = self.local();
                    let l = local.entry(origin.to_owned()).or_default();
                    l.run = 0;
                    l.recent.push_back((now, true));
                    trim(&mut l.recent, now, settings.window);
                }
                if let Some(health) = self.paused(origin) {
                    tokio::spawn(self.clone().close(origin.to_owned(), health));
                }
                false
            }
            Err(error) => {
                if let Admission::Probe(probe) = admission {
                    self.inner.metrics.probe_failures.inc();
                    tokio::spawn(self.clone().probe_failed(probe, error.to_owned()));
                    return true;
                }
                let paused = self.paused(origin).is_some();
                let mut local = self.local();
                let l = local.entry(origin.to_owned()).or_default();
                l.run += 1;
                l.recent.push_back((now, false));
                trim(&mut l.recent, now, settings.window);
                if paused || l.tripping {
                    return true;
                }
                let failed = l.recent.iter().filter(|(_, ok)| !ok).count();
                let trips = l.run >= settings.failure_run
                    || (l.recent.len() >= settings.min_attempts as usize
                        && failed as f64 >= settings.failure_ratio * l.recent.len() as f64);
                if trips {
                    l.tripping = true;
                    drop(local);
                    tokio::spawn(self.clone().open(origin.to_owned(), error.to_owned()));
                }
                trips
            }
        }
    }

    async fn open(self, origin: String, error: String) {
        let at_ms = now_ms();
        let command = Command::OpenEndpoint {
            origin: origin.clone(),
            at_ms,
            error: error.clone(),
            probe_interval_ms: self.inner.settings.probe_initial.as_millis() as u64,
        };
        let result = self.inner.control.write(command).await;
        if let Some(l) = self.local().get_mut(&origin) {
            l.tripping = false;
        }
        match result {
            Ok(Response::Count(1)) => {
                self.inner.metrics.opened.inc();
                tracing::warn!(%origin, %error, "EndpointPaused");
                self.inner.events.emit(
                    "endpoint.paused",
                    &origin,
                    serde_json::json!({
                        "origin": origin,
                        "error": error,
                        "next_probe_in_ms": self.inner.settings.probe_initial.as_millis() as u64,
                    }),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%origin, error = %e, "endpoint pause not recorded"),
        }
    }

    async fn close(self, origin: String, health: EndpointHealth) {
        let command = Command::CloseEndpoint {
            origin: origin.clone(),
        };
        match self.inner.control.write(command).await {
            Ok(Response::Count(1)) => {
                let paused_ms = now_ms().saturating_sub(health.opened_at_ms);
                tracing::info!(%origin, paused_ms, "EndpointRecovered");
                self.inner.events.emit(
                    "endpoint.recovered",
                    &origin,
                    serde_json::json!({
                        "origin": origin,
                        "paused_ms": paused_ms,
                        "failures": health.failures,
                    }),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%origin, error = %e, "endpoint recovery not recorded"),
        }
    }

    async fn probe_failed(self, probe: Probe, error: String) {
        let settings = &self.inner.settings;
        let at_ms = now_ms();
        let origin = probe.origin.clone();
        let outage = Duration::from_millis(at_ms.saturating_sub(probe.opened_at_ms));
        if outage >= settings.disable_after {
            let reason = format!(
                "endpoint {origin} failing for {} (last: {error})",
                humantime::format_duration(Duration::from_secs(outage.as_secs()))
            );
            let command = Command::DisableEndpoint {
                origin: origin.clone(),
                at_ms,
                reason: reason.clone(),
            };
            match self.inner.control.write(command).await {
                Ok(Response::Count(n)) => {
                    tracing::warn!(%origin, subscriptions = n, %reason, "EndpointDisabled");
                    self.inner.events.emit(
                        "endpoint.disabled",
                        &origin,
                        serde_json::json!({
                            "origin": origin,
                            "subscriptions": n,
                            "reason": reason,
                            "failing_since_ms": probe.opened_at_ms,
                        }),
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%origin, error = %e, "endpoint disabling not recorded"),
            }
            return;
        }
        let interval_ms = (probe.interval_ms.max(1) * 2).min(settings.probe_max.as_millis() as u64);
        let command = Command::EndpointProbeFailed {
            origin: origin.clone(),
            expected_next_probe_at_ms: probe.expected_next_probe_at_ms,
            at_ms,
            error: error.clone(),
            probe_interval_ms: interval_ms,
        };
        if let Err(e) = self.inner.control.write(command).await {
            tracing::warn!(%origin, error = %e, "failed probe not recorded");
        }
        tracing::debug!(%origin, %error, interval_ms, "EndpointProbeFailed");
        drop(probe);
    }
}

fn trim(recent: &mut VecDeque<(Instant, bool)>, now: Instant, window: Duration) {
    while recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > window)
    {
        recent.pop_front();
    }
    // Bounded whatever the rate: the ratio needs a sample, not every attempt.
    while recent.len() > 1024 {
        recent.pop_front();
    }
}
