//! `GET /metrics`: Prometheus / OpenMetrics text. What an operator needs to see first: whether
//! the broker answers, how many streams and topic consumptions the node holds, and its Raft
//! role and progress.
//!
//! Also: stream connections and messages in and out per entrypoint, WebSub delivery attempts,
//! failures, retries, dead letters and drops, rate-limit and credential refusals, and Raft
//! term, leader, log and applied indexes and write (commit) latency.
//!
//! The broker is probed every `broker.probe_interval` (`BrokerDriver::ping`: a metadata
//! request on Kafka); `eventgate_broker_up` is 1 while the last probe answered.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use eventgate_actors::broker::BrokerDriver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BrokerLabel {
    broker: String,
}

/// Label of `eventgate_rate_limited`: what was over its limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// `publish`, `deliveries`, `connections` or `subscriptions`.
    pub kind: &'static str,
}

/// Label of `eventgate_auth_rejections`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `unauthorized` (401) or `forbidden` (403).
    pub outcome: &'static str,
    /// `websub`, `websocket`, `sse` or `webhook`.
    pub entrypoint: &'static str,
}

/// Label of per-entrypoint metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntrypointLabel {
    /// `webhook`, `websocket`, `sse` (and `websub` where it applies).
    pub entrypoint: &'static str,
}

/// Labels of `eventgate_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/admin/subscriptions/{id}`), `other` when none matched (an API's
    /// base path, a 404).
    pub route: String,
    pub method: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The process metrics every Prometheus exporter has (`process_*`, without the prefix), read
/// from `/proc` when scraped.
#[derive(Debug)]
struct ProcessMetrics {
    registry: Registry,
    cpu_seconds: Gauge<f64, AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let cpu_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds",
            cpu_seconds.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_bytes.clone(),
        );
        let virtual_bytes = Gauge::default();
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            virtual_bytes.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        let max_fds = Gauge::default();
        registry.register(
            "process_max_fds",
            "The limit of open file descriptors",
            max_fds.clone(),
        );
        let start = Gauge::<f64, AtomicU64>::default();
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        start.set(since_epoch.as_secs_f64());
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            start,
        );
        Self {
            registry,
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
        }
    }

    /// Reads `/proc/self` (Linux; elsewhere the values stay 0).
    fn refresh(&self) {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses and may hold spaces:
            // utime and stime (in USER_HZ, 100 per second on Linux) are fields 14 and 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                self.cpu_seconds.set((user + system) / 100.0);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<i64>().ok())
            };
            if let Some(rss) = kib("VmRSS:") {
                self.resident_bytes.set(rss * 1024);
            }
            if let Some(size) = kib("VmSize:") {
                self.virtual_bytes.set(size * 1024);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Some(max) = crate::config::open_files_limit() {
            self.max_fds.set(max as i64);
        }
    }
}

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    process: ProcessMetrics,
    /// HTTP requests from arrival to the answer's head (a stream's whole life is not in it),
    /// by route template, method and status class.
    pub http_duration: Family<HttpLabels, Histogram>,
    broker_up: Family<BrokerLabel, Gauge>,
    broker_probe_failures: Family<BrokerLabel, Counter>,
    broker_last_ok: Family<BrokerLabel, Gauge<f64, AtomicU64>>,
    pub stream_connections: Gauge,
    pub topic_consumptions: Gauge,
    pub stream_readers: Gauge,
    pub raft_leader: Gauge,
    pub raft_term: Gauge,
    pub raft_applied_index: Gauge,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    pub auth_rejections: Family<AuthLabels, Counter>,
    /// Open stream connections by entrypoint (set when scraped).
    pub connections: Family<EntrypointLabel, Gauge>,
    /// Messages published into topics, by entrypoint.
    pub messages_in: Family<EntrypointLabel, Counter>,
    /// Messages written to stream clients, by entrypoint.
    pub messages_out: Family<EntrypointLabel, Counter>,
    /// WebSub deliveries (counted by the subscription actors).
    pub delivery: eventgate_actors::subscription::DeliveryMetrics,
    /// The callback endpoints' circuit breakers and the operator events.
    pub breaker: eventgate_actors::endpoints::BreakerMetrics,
    /// Delivery attempts this node appended to the ledger.
    pub ledger_attempts: Counter,
    /// Messages the WebSub subscriptions of this node are behind, in all and at most.
    pub websub_lag: Gauge,
    pub websub_lag_max: Gauge,
    /// Messages this node's topic consumptions for streams are behind the broker's end.
    pub stream_lag: Gauge,
    pub stream_lag_max: Gauge,
    /// From the broker's append to the write to a live stream client, by entrypoint.
    pub stream_latency: Family<EntrypointLabel, LatencyHistogram>,
    /// Latency of control-plane writes: commit by a quorum and apply on this node.
    pub raft_write_latency: Histogram,
    pub raft_leader_id: Gauge,
    pub raft_last_log_index: Gauge,
}

impl Metrics {
    /// Metrics of a node on the brokers named `brokers` (`embedded`, `kafka`), with the
    /// counters the stream readers keep in `streams`.
    pub fn new(brokers: &[String], streams: &eventgate_actors::stream::StreamSettings) -> Self {
        let mut registry = Registry::with_prefix("eventgate");
        let broker_up = Family::<BrokerLabel, Gauge>::default();
        registry.register(
            "broker_up",
            "1 while the broker answered the last probe, else 0",
            broker_up.clone(),
        );
        let broker_probe_failures = Family::<BrokerLabel, Counter>::default();
        registry.register(
            "broker_probe_failures",
            "Broker probes that failed",
            broker_probe_failures.clone(),
        );
        let broker_last_ok = Family::<BrokerLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "broker_last_ok_timestamp_seconds",
            "When the broker last answered a probe (Unix seconds)",
            broker_last_ok.clone(),
        );
        let stream_connections = Gauge::default();
        registry.register(
            "stream_connections",
            "WebSocket and SSE connections open on this node",
            stream_connections.clone(),
        );
        let topic_consumptions = Gauge::default();
        registry.register(
            "topic_consumptions",
            "Topics this node reads for its streaming clients",
            topic_consumptions.clone(),
        );
        let stream_readers = Gauge::default();
        registry.register(
            "stream_readers",
            "Readers of the topic rings of this node",
            stream_readers.clone(),
        );
        let raft_leader = Gauge::default();
        registry.register(
            "raft_is_leader",
            "1 when this node is the Raft leader",
            raft_leader.clone(),
        );
        let raft_term = Gauge::default();
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        let raft_applied_index = Gauge::default();
        registry.register(
            "raft_applied_index",
            "Last Raft log index applied on this node",
            raft_applied_index.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests, connections and deliveries refused or held by a plan's limit",
            rate_limited.clone(),
        );
        let auth_rejections = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_rejections",
            "Requests refused for missing or wrong credentials (401) or permissions (403)",
            auth_rejections.clone(),
        );
        let connections = Family::<EntrypointLabel, Gauge>::default();
        registry.register(
            "connections",
            "Stream connections open on this node, by entrypoint",
            connections.clone(),
        );
        let messages_in = Family::<EntrypointLabel, Counter>::default();
        registry.register(
            "messages_in",
            "Messages published into topics through this node, by entrypoint",
            messages_in.clone(),
        );
        let messages_out = Family::<EntrypointLabel, Counter>::default();
        registry.register(
            "messages_out",
            "Messages written to stream clients by this node, by entrypoint (WebSub: eventgate_websub_deliveries)",
            messages_out.clone(),
        );
        for entrypoint in ["websocket", "sse"] {
            connections
                .get_or_create(&EntrypointLabel { entrypoint })
                .set(0);
            let _ = messages_out.get_or_create(&EntrypointLabel { entrypoint });
        }
        for entrypoint in ["webhook", "websocket"] {
            let _ = messages_in.get_or_create(&EntrypointLabel { entrypoint });
        }
        let delivery = eventgate_actors::subscription::DeliveryMetrics::default();
        for (name, help, counter) in [
            (
                "websub_delivery_attempts",
                "Requests made to WebSub callbacks (first attempts and retries)",
                &delivery.attempts,
            ),
            (
                "websub_deliveries",
                "Messages a WebSub callback accepted (2xx)",
                &delivery.delivered,
            ),
            (
                "websub_delivery_failures",
                "WebSub delivery attempts that failed (no answer, or not 2xx/410)",
                &delivery.failures,
            ),
            (
                "websub_delivery_retries",
                "WebSub delivery attempts that retried an earlier failure",
                &delivery.retries,
            ),
            (
                "websub_dead_letters",
                "Messages given up on and recorded as dead letters",
                &delivery.dead_letters,
            ),
            (
                "websub_dropped",
                "WebSub messages skipped over a plan's delivery limit (drop)",
                &delivery.dropped,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "websub_delivery_latency_seconds",
            "From the broker's append to the WebSub callback's 2xx (retries included)",
            delivery.latency.clone(),
        );
        let breaker = eventgate_actors::endpoints::BreakerMetrics::default();
        for (name, help, counter) in [
            (
                "websub_endpoint_pauses",
                "Circuit breakers of callback endpoints this node opened",
                &breaker.opened,
            ),
            (
                "websub_endpoint_probes",
                "Probes this node made of paused callback endpoints",
                &breaker.probes,
            ),
            (
                "websub_endpoint_probe_failures",
                "Probes of paused callback endpoints that failed",
                &breaker.probe_failures,
            ),
            (
                "operator_events",
                "Operator events this node published to the events topic",
                &breaker.events,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let websub_lag = Gauge::default();
        registry.register(
            "websub_consumer_lag_messages",
            "Messages the WebSub subscriptions this node delivers are behind the broker's end (sum)",
            websub_lag.clone(),
        );
        let websub_lag_max = Gauge::default();
        registry.register(
            "websub_consumer_lag_max_messages",
            "Messages the furthest-behind WebSub subscription of this node is behind",
            websub_lag_max.clone(),
        );
        let stream_lag = Gauge::default();
        registry.register(
            "stream_consumer_lag_messages",
            "Messages this node's topic consumptions for WebSocket and SSE are behind the broker's end (sum)",
            stream_lag.clone(),
        );
        let stream_lag_max = Gauge::default();
        registry.register(
            "stream_consumer_lag_max_messages",
            "Messages the furthest-behind topic consumption for streams on this node is behind",
            stream_lag_max.clone(),
        );
        registry.register(
            "stream_offsets_skipped",
            "Offsets stream readers went past without a message where the broker's offsets said there were some (each time, the clients got a gap of unknown size)",
            streams.skipped_offsets.clone(),
        );
        let stream_latency = Family::<EntrypointLabel, LatencyHistogram>::default();
        registry.register(
            "stream_delivery_latency_seconds",
            "From the broker's append to the write to a live WebSocket or SSE client (catch-ups after a resume are not counted)",
            stream_latency.clone(),
        );
        for entrypoint in ["websocket", "sse"] {
            let _ = stream_latency.get_or_create(&EntrypointLabel { entrypoint });
        }
        let ledger_attempts = Counter::default();
        registry.register(
            "websub_ledger_attempts",
            "Delivery attempts this node appended to the delivery ledger",
            ledger_attempts.clone(),
        );
        registry.register(
            "websub_endpoints_paused",
            "Callback endpoints whose deliveries are paused by the circuit breaker (cluster-wide)",
            breaker.paused.clone(),
        );
        registry.register(
            "websub_subscriptions_disabled",
            "WebSub subscriptions disabled after a long outage of their endpoint (cluster-wide)",
            breaker.disabled.clone(),
        );
        // 1 ms to about 16 s.
        let raft_write_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "raft_write_latency_seconds",
            "Control-plane writes from submission to commit by a quorum and apply on this node",
            raft_write_latency.clone(),
        );
        let raft_leader_id = Gauge::default();
        registry.register(
            "raft_leader_id",
            "The leader this node knows of (0: none)",
            raft_leader_id.clone(),
        );
        let raft_last_log_index = Gauge::default();
        registry.register(
            "raft_last_log_index",
            "Last Raft log index on this node",
            raft_last_log_index.clone(),
        );
        let http_duration = Family::<HttpLabels, Histogram>::new_with_constructor(
            http_duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests from arrival to the answer's head, by route template, method and status class",
            http_duration.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "1, labelled with the version of this build",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // Every family with labels has its series from the start, at 0: `increase()` and
        // `rate()` alerts see the first event instead of a series appearing at 1.
        for broker in brokers {
            let label = BrokerLabel {
                broker: broker.clone(),
            };
            broker_up.get_or_create(&label).set(0);
            let _ = broker_probe_failures.get_or_create(&label);
        }
        for kind in ["publish", "deliveries", "connections", "subscriptions"] {
            let _ = rate_limited.get_or_create(&RateLimitLabels { kind });
        }
        for outcome in ["unauthorized", "forbidden"] {
            for entrypoint in ["websub", "websocket", "sse", "webhook"] {
                let _ = auth_rejections.get_or_create(&AuthLabels {
                    outcome,
                    entrypoint,
                });
            }
        }
        Self {
            registry,
            process: ProcessMetrics::new(),
            http_duration,
            broker_up,
            broker_probe_failures,
            broker_last_ok,
            stream_connections,
            topic_consumptions,
            stream_readers,
            raft_leader,
            raft_term,
            raft_applied_index,
            rate_limited,
            auth_rejections,
            connections,
            messages_in,
            messages_out,
            delivery,
            breaker,
            ledger_attempts,
            websub_lag,
            websub_lag_max,
            stream_lag,
            stream_lag_max,
            stream_latency,
            raft_write_latency,
            raft_leader_id,
            raft_last_log_index,
        }
    }

    /// The counter of `family` for `entrypoint`, to keep and increment without a lookup.
    pub fn counter(family: &Family<EntrypointLabel, Counter>, entrypoint: &'static str) -> Counter {
        family
            .get_or_create(&EntrypointLabel { entrypoint })
            .clone()
    }

    /// The latency histogram of `family` for `entrypoint`, to keep without a lookup.
    pub fn latency(
        family: &Family<EntrypointLabel, LatencyHistogram>,
        entrypoint: &'static str,
    ) -> LatencyHistogram {
        family
            .get_or_create(&EntrypointLabel { entrypoint })
            .clone()
    }

    fn probed(&self, broker: &str, ok: bool) {
        let label = BrokerLabel {
            broker: broker.to_owned(),
        };
        self.broker_up.get_or_create(&label).set(i64::from(ok));
        if ok {
            let now = eventgate_raft_store::clock::now_ms() as f64 / 1000.0;
            self.broker_last_ok.get_or_create(&label).set(now);
        } else {
            self.broker_probe_failures.get_or_create(&label).inc();
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        self.process.refresh();
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process.registry))
            .and_then(|()| encode_eof(&mut out));
        if let Err(e) = encoded {
            tracing::warn!(error = %e, "metrics encoding");
        }
        out
    }
}

/// A histogram of latencies in milliseconds that many threads observe at once without a lock
/// (prometheus-client's `Histogram` takes a mutex per observation; the stream writers of a
/// 1000-client fan-out would queue on it). Buckets: 1 ms to about 16 s, doubling.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<LatencyCells>);

const LATENCY_BUCKETS: usize = 15;

#[derive(Debug, Default)]
pub struct LatencyCells {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ms: AtomicU64,
}

impl LatencyHistogram {
    /// Upper bound of bucket `i`, in milliseconds.
    fn bound_ms(i: usize) -> u64 {
        1 << i
    }

    /// `n` observations of `ms` milliseconds each (a chunk of messages written at once).
    pub fn observe_ms(&self, ms: u64, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let bucket = (0..LATENCY_BUCKETS)
            .find(|&i| ms <= Self::bound_ms(i))
            .unwrap_or(LATENCY_BUCKETS);
        self.0.counts[bucket].fetch_add(n, Relaxed);
        self.0.sum_ms.fetch_add(ms.saturating_mul(n), Relaxed);
    }
}

impl prometheus_client::metrics::TypedMetric for LatencyHistogram {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for LatencyHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS + 1);
        let mut count = 0;
        for (i, cell) in self.0.counts.iter().enumerate() {
            let n = cell.load(Relaxed);
            count += n;
            let bound = if i < LATENCY_BUCKETS {
                Self::bound_ms(i) as f64 / 1000.0
            } else {
                f64::INFINITY
            };
            buckets.push((bound, n));
        }
        let sum = self.0.sum_ms.load(Relaxed) as f64 / 1000.0;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Observes the latency of frames written to a client at once: one clock read, and the oldest
/// frame's age counted for all of them (they left together; the newest would flatter).
pub fn observe_chunk(
    histogram: &LatencyHistogram,
    frames: &[eventgate_actors::stream::frame::Frame],
) {
    if let Some(oldest) = frames.iter().map(|f| f.timestamp_ms).min() {
        let now = eventgate_raft_store::clock::now_ms();
        histogram.observe_ms(now.saturating_sub(oldest), frames.len() as u64);
    }
}

/// 0.5 ms to about 16 s.
fn http_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Probes the broker every `interval` (each probe bounded by it too) until `stop`.
pub async fn run_broker_probe(
    label: String,
    broker: Arc<dyn BrokerDriver>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let result =
            match tokio::time::timeout(interval.max(Duration::from_secs(1)), broker.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer in time".to_owned()),
            };
        let up = result.is_ok();
        metrics.probed(&label, up);
        match (&result, was_up) {
            (Err(reason), Some(true) | None) => {
                tracing::warn!(broker = %label, %reason, "broker unreachable");
            }
            (Ok(()), Some(false)) => {
                tracing::info!(broker = %label, "broker reachable again")
            }
            _ => {}
        }
        was_up = Some(up);
    }
}
