//! Node configuration in two phases: [`RawNodeConfig`] is what the TOML file, `EVENTGATE_*`
//! environment variables and command-line flags say (layered in that order over defaults);
//! [`NodeConfig`] is the validated, typed result the node runs with.
//!
//! With no config file the node runs the development profile: one node on 127.0.0.1, a
//! self-issued cluster CA in the data directory. Every key is documented in `docs/config.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub mod governance;

/// The only config format version so far.
pub const CONFIG_VERSION: u32 = 1;

const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "node_id",
    "data_dir",
    "http",
    "cluster",
    "tls",
    "raft",
    "admin",
    "log",
    "broker",
    "brokers",
    "topics",
    "webhook_receiver",
    "websub",
    "streams",
    "portal",
    "auth",
    "apis",
    "plans",
    "applications",
];

/// The configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNodeConfig {
    pub version: u32,
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub http: RawHttp,
    pub cluster: RawCluster,
    pub tls: RawTls,
    pub raft: RawRaft,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub tracing: RawTracing,
    pub broker: RawBroker,
    /// Further brokers (`[brokers.<name>]`), each serving the topics it lists.
    pub brokers: std::collections::BTreeMap<String, RawBroker>,
    pub topics: RawTopics,
    pub webhook_receiver: RawWebhookReceiver,
    pub websub: RawWebsub,
    pub streams: RawStreams,
    /// `[portal]`: the developer portal.
    pub portal: RawPortal,
    /// `[auth]`: anonymous access, JWT verification.
    pub auth: governance::RawAuth,
    /// `[apis.<name>]`.
    pub apis: std::collections::BTreeMap<String, governance::RawApi>,
    /// `[plans.<name>]`.
    pub plans: std::collections::BTreeMap<String, governance::RawPlan>,
    /// `[applications.<id>]`.
    pub applications: std::collections::BTreeMap<String, governance::RawApplication>,
}

/// `[portal]`: the developer portal every node serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPortal {
    pub enabled: bool,
    /// Where it is served (`/portal`).
    pub path: String,
    /// Its name, in every page's title and header.
    pub title: String,
    /// Who may create an account: `open`, `approval` (an administrator approves) or `closed`.
    pub signup: PortalSignup,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Sign-in attempts per client address in 5 minutes on each node (0: no limit per address,
    /// for nodes behind a proxy whose clients all arrive from its address); per email it is 10.
    pub sign_in_attempts_per_address: u64,
}

/// `portal.signup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortalSignup {
    Open,
    Approval,
    Closed,
}

impl Default for RawPortal {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/portal".to_owned(),
            title: "eventgate developer portal".to_owned(),
            signup: PortalSignup::Open,
            session_ttl: Duration::from_secs(12 * 3600),
            sign_in_attempts_per_address: 100,
        }
    }
}

/// `[portal]`, validated.
#[derive(Debug, Clone)]
pub struct PortalSettings {
    pub enabled: bool,
    pub path: String,
    pub title: String,
    pub signup: PortalSignup,
    pub session_ttl: Duration,
    pub sign_in_attempts_per_address: u64,
}

impl RawPortal {
    fn build(&self, invalid: &Invalid<'_>) -> Result<PortalSettings, ConfigError> {
        governance::valid_portal_path(&self.path).map_err(|e| invalid("portal.path", e))?;
        let title = self.title.trim();
        if title.is_empty() || title.len() > 100 {
            return Err(invalid("portal.title", "1 to 100 characters".to_owned()));
        }
        if self.session_ttl < Duration::from_secs(60)
            || self.session_ttl > Duration::from_secs(30 * 86_400)
        {
            return Err(invalid(
                "portal.session_ttl",
                "between 1m and 30d".to_owned(),
            ));
        }
        Ok(PortalSettings {
            enabled: self.enabled,
            path: self.path.clone(),
            title: title.to_owned(),
            signup: self.signup,
            session_ttl: self.session_ttl,
            sign_in_attempts_per_address: self.sign_in_attempts_per_address,
        })
    }
}

/// `[streams]`: WebSocket and SSE.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStreams {
    /// Entries (batches of messages read together) each topic's ring holds; a reader further
    /// behind is a slow consumer.
    pub ring_batches: usize,
    /// Messages read from the broker at once.
    pub batch_max: usize,
    /// How long a topic's consumption outlives its last local reader.
    #[serde(with = "humantime_serde")]
    pub topic_linger: Duration,
    /// `disconnect` (close 4008 / final `close` event) or `drop-oldest` (a `gap` marker).
    pub slow_consumer: eventgate_actors::stream::SlowConsumerPolicy,
    /// A write to a client that does not complete in this time closes the connection.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// WebSocket ping and SSE comment interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The SSE `retry:` hint.
    #[serde(with = "humantime_serde")]
    pub sse_retry: Duration,
    /// WebSocket and SSE connections this node holds at most.
    pub max_connections: usize,
    /// Whether WebSocket clients may publish (frames become messages of the topic).
    pub allow_publish: bool,
    /// Largest frame a WebSocket client may publish.
    pub max_publish_bytes: usize,
    /// Readers catching up from the broker at once (resumes after a node loss); more wait.
    pub max_catchups: usize,
    /// Web origins whose pages may open streams (`Origin` checked on WebSocket and SSE, and
    /// allowed by CORS for SSE); `*` admits any.
    pub allowed_origins: Vec<String>,
}

impl Default for RawStreams {
    fn default() -> Self {
        let d = eventgate_actors::stream::StreamSettings::default();
        Self {
            ring_batches: d.ring_batches,
            batch_max: d.batch_max,
            topic_linger: d.topic_linger,
            slow_consumer: eventgate_actors::stream::SlowConsumerPolicy::Disconnect,
            send_timeout: d.send_timeout,
            heartbeat: d.heartbeat,
            sse_retry: d.sse_retry,
            max_connections: d.max_connections,
            allow_publish: true,
            max_publish_bytes: d.max_publish_bytes,
            allowed_origins: vec!["*".to_owned()],
            max_catchups: d.max_catchups,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebsub {
    /// Allow callbacks on loopback, private and link-local addresses; off unless set (on in the
    /// development profile).
    pub allow_private_callbacks: Option<bool>,
    pub signature_algorithm: eventgate_actors::websub::SignatureAlgorithm,
    /// Key (64 hex digits, 32 bytes) sealing subscribers' secrets at rest; the same on every
    /// node. Also read from `secret_key_file`.
    pub secret_key: Option<String>,
    /// A file holding `secret_key`.
    pub secret_key_file: Option<PathBuf>,
    /// Earlier keys, still opening what they sealed (rotation).
    pub previous_secret_keys: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub lease_default: Duration,
    #[serde(with = "humantime_serde")]
    pub lease_min: Duration,
    #[serde(with = "humantime_serde")]
    pub lease_max: Duration,
    #[serde(with = "humantime_serde")]
    pub callback_connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub callback_timeout: Duration,
    pub max_response_bytes: usize,
    pub per_host_concurrency: usize,
    pub delivery_window: usize,
    /// Default: the schedule's length and one, or 10 with exponential retries.
    pub max_attempts: Option<u32>,
    /// Exponential retries (instead of the schedule): doubling from `retry_base`, capped at
    /// `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub retry_max: Option<Duration>,
    /// The wait after each failed attempt; Standard Webhooks' example by default.
    pub retry_schedule: Option<Vec<String>>,
    /// A 429 or 503 answer's `Retry-After` is honoured up to this long.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long a rotated-out subscriber secret keeps signing next to the new one.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// The circuit breaker of callback endpoints.
    pub breaker: RawBreaker,
    /// The delivery ledger.
    pub ledger: RawLedger,
    /// Topic the gateway publishes its operator events to (`attempt.failing`,
    /// `message.dead_lettered`, `endpoint.paused|recovered|disabled`); empty: none.
    pub events_topic: String,
}

/// `[tracing]`: OpenTelemetry trace export (see `crate::telemetry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// OTLP/HTTP endpoint, e.g. `http://otel-collector:4318`; the `OTEL_*` variables otherwise.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
}

impl Default for RawTracing {
    fn default() -> Self {
        let d = crate::telemetry::TracingSettings::default();
        Self {
            otlp_endpoint: d.otlp_endpoint,
            service_name: d.service_name,
            export_interval: d.export_interval,
        }
    }
}

/// `websub.ledger`: the record of every delivery attempt, per subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLedger {
    pub enabled: bool,
    pub topic: String,
    pub max_entries: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub response_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub rebuild_messages: u64,
}

impl Default for RawLedger {
    fn default() -> Self {
        let d = eventgate_actors::ledger::LedgerSettings::default();
        Self {
            enabled: d.enabled,
            topic: d.topic,
            max_entries: d.max_entries,
            max_age: d.max_age,
            response_bytes: d.response_bytes,
            flush_interval: d.flush_interval,
            rebuild_messages: d.rebuild_messages,
        }
    }
}

impl RawLedger {
    fn build(
        &self,
        invalid: &Invalid<'_>,
    ) -> Result<eventgate_actors::ledger::LedgerSettings, ConfigError> {
        let l = self;
        eventgate_actors::broker::validate_topic_name(&l.topic)
            .map_err(|e| invalid("websub.ledger.topic", e.to_string()))?;
        if l.max_entries == 0 || l.max_entries > 100_000 {
            return Err(invalid(
                "websub.ledger.max_entries",
                "1 to 100000".to_owned(),
            ));
        }
        if l.max_age.is_zero() {
            return Err(invalid(
                "websub.ledger.max_age",
                "must be longer than 0".to_owned(),
            ));
        }
        if l.response_bytes > 64 * 1024 {
            return Err(invalid(
                "websub.ledger.response_bytes",
                "at most 65536".to_owned(),
            ));
        }
        if l.flush_interval < Duration::from_millis(1) || l.flush_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "websub.ledger.flush_interval",
                "1ms to 60s".to_owned(),
            ));
        }
        Ok(eventgate_actors::ledger::LedgerSettings {
            enabled: l.enabled,
            topic: l.topic.clone(),
            max_entries: l.max_entries,
            max_age: l.max_age,
            response_bytes: l.response_bytes,
            flush_interval: l.flush_interval,
            rebuild_messages: l.rebuild_messages,
        })
    }
}

/// `websub.breaker`: when deliveries to a failing callback endpoint pause, how they are
/// probed, and when its subscriptions are disabled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    pub enabled: bool,
    pub failure_run: u32,
    pub failure_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub probe_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_max: Duration,
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    pub failing_after: u32,
}

impl Default for RawBreaker {
    fn default() -> Self {
        let d = eventgate_actors::endpoints::BreakerSettings::default();
        Self {
            enabled: d.enabled,
            failure_run: d.failure_run,
            failure_ratio: d.failure_ratio,
            window: d.window,
            min_attempts: d.min_attempts,
            probe_initial: d.probe_initial,
            probe_max: d.probe_max,
            disable_after: d.disable_after,
            failing_after: d.failing_after,
        }
    }
}

impl RawBreaker {
    fn build(
        &self,
        invalid: &Invalid<'_>,
    ) -> Result<eventgate_actors::endpoints::BreakerSettings, ConfigError> {
        let b = self;
        if b.failure_run == 0 {
            return Err(invalid(
                "websub.breaker.failure_run",
                "must be 1 or more".to_owned(),
            ));
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(invalid(
                "websub.breaker.failure_ratio",
                "a share above 0 and at most 1".to_owned(),
            ));
        }
        if b.window.is_zero() {
            return Err(invalid(
                "websub.breaker.window",
                "must be longer than 0".to_owned(),
            ));
        }
        if b.probe_initial < Duration::from_millis(10) || b.probe_initial > b.probe_max {
            return Err(invalid(
                "websub.breaker.probe_initial",
                "at least 10ms and at most probe_max".to_owned(),
            ));
        }
        if b.disable_after < b.probe_initial {
            return Err(invalid(
                "websub.breaker.disable_after",
                "must be at least probe_initial".to_owned(),
            ));
        }
        if b.failing_after == 0 {
            return Err(invalid(
                "websub.breaker.failing_after",
                "must be 1 or more".to_owned(),
            ));
        }
        Ok(eventgate_actors::endpoints::BreakerSettings {
            enabled: b.enabled,
            failure_run: b.failure_run,
            failure_ratio: b.failure_ratio,
            window: b.window,
            min_attempts: b.min_attempts,
            probe_initial: b.probe_initial,
            probe_max: b.probe_max,
            disable_after: b.disable_after,
            failing_after: b.failing_after,
        })
    }
}

impl Default for RawWebsub {
    fn default() -> Self {
        Self {
            allow_private_callbacks: None,
            signature_algorithm: eventgate_actors::websub::SignatureAlgorithm::Sha256,
            secret_key: None,
            secret_key_file: None,
            previous_secret_keys: Vec::new(),
            lease_default: Duration::from_secs(10 * 24 * 3600),
            lease_min: Duration::from_secs(300),
            lease_max: Duration::from_secs(365 * 24 * 3600),
            callback_connect_timeout: Duration::from_secs(5),
            callback_timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            per_host_concurrency: 32,
            delivery_window: 1,
            max_attempts: None,
            retry_base: None,
            retry_max: None,
            retry_schedule: None,
            retry_after_max: Duration::from_secs(3600),
            // Longer than the default schedule (about 75 h).
            max_age: Duration::from_secs(4 * 24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            breaker: RawBreaker::default(),
            ledger: RawLedger::default(),
            events_topic: "eventgate.events".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBroker {
    pub kind: BrokerType,
    pub kafka: RawKafka,
    pub mqtt: RawMqtt,
    /// Directory of the embedded broker's logs; `<data_dir>/broker` when absent.
    pub dir: Option<PathBuf>,
    pub segment_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: usize,
    /// Put before every gateway topic name to make the broker's (not before `topic_map` ones).
    pub topic_prefix: String,
    /// Gateway topic name → broker topic name.
    pub topic_map: std::collections::BTreeMap<String, String>,
    /// How often the broker is probed for `eventgate_broker_up`.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Under `[brokers.<name>]`: the gateway topics that live on this broker.
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    pub bootstrap_servers: Option<String>,
    pub client_id: String,
    pub default_partitions: i32,
    pub replication_factor: i32,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Further librdkafka properties, e.g. `"security.protocol" = "SSL"`.
    pub properties: std::collections::BTreeMap<String, String>,
    /// The content type of records that carry no `content-type` header (other producers').
    pub content_type: Option<String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            client_id: "eventgate".to_owned(),
            default_partitions: 1,
            replication_factor: 1,
            request_timeout: Duration::from_secs(10),
            properties: std::collections::BTreeMap::new(),
            content_type: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// `host:port` of the broker (MQTT over TCP).
    pub address: Option<String>,
    /// `"5"` (default: content type, headers and key travel with each message) or `"3.1.1"`
    /// (for brokers without MQTT 5).
    pub protocol: MqttProtocol,
    /// Expiry of every message published (MQTT 5): the broker drops what no subscriber took
    /// within it. None by default.
    #[serde(with = "humantime_serde")]
    pub message_expiry: Option<Duration>,
    /// Prefix of client ids: `<client_id>-n<node_id>` for the node's connection,
    /// `<client_id>-s-<subscription>` for each WebSub subscription's persistent session.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Content type of a message read without one (every message on MQTT 3.1.1).
    pub content_type: String,
    /// Messages (and bytes) each node keeps per topic for SSE/WS readers resuming on it.
    pub stream_window_messages: usize,
    pub stream_window_bytes: usize,
    /// How long a topic nobody reads on this node stays subscribed.
    #[serde(with = "humantime_serde")]
    pub stream_linger: Duration,
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            address: None,
            protocol: MqttProtocol::V5,
            message_expiry: None,
            client_id: "eventgate".to_owned(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            content_type: "application/octet-stream".to_owned(),
            stream_window_messages: 10_000,
            stream_window_bytes: 64 * 1024 * 1024,
            stream_linger: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    /// Create a topic on first use; off unless set (on in the development profile).
    pub auto_create: Option<bool>,
    /// Topics that exist from the start.
    pub names: Vec<String>,
    /// Topic → the content type of its messages that carry none (another Kafka producer's
    /// records without a `content-type` header); before the API's and the broker's defaults.
    pub content_types: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhookReceiver {
    pub max_body_bytes: usize,
    /// How long the answer to a publish with an `Idempotency-Key` is given again to retries.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most idempotency keys kept at once across the cluster.
    pub idempotency_max_keys: u64,
}

/// Idempotent publishes to the webhook receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencySettings {
    pub window: Duration,
    pub max_keys: u64,
}

impl Default for RawBroker {
    fn default() -> Self {
        Self {
            kind: BrokerType::Embedded,
            kafka: RawKafka::default(),
            mqtt: RawMqtt::default(),
            dir: None,
            segment_bytes: 64 * 1024 * 1024,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            max_message_bytes: 16 * 1024 * 1024,
            topic_prefix: String::new(),
            topic_map: std::collections::BTreeMap::new(),
            probe_interval: Duration::from_secs(5),
            topics: Vec::new(),
        }
    }
}

impl Default for RawWebhookReceiver {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            idempotency_window: Duration::from_secs(24 * 3600),
            idempotency_max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub advertise: Option<String>,
    /// Base URL of the gateway as subscribers see it (for the hub and topic URLs).
    pub public_url: Option<String>,
    /// A request's line and headers must arrive within this (also between the requests of a
    /// kept-alive connection).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body (webhook, `/hub`) must arrive within this.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections held at once; past it new ones get a fast 503. Default: the process's
    /// open-files limit less a reserve.
    pub max_connections: Option<usize>,
    /// Connections held at once from one address; 0: no limit (behind a load balancer every
    /// client shares its address).
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    pub listen: String,
    pub advertise: Option<String>,
    pub seeds: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long a stopping node (SIGTERM, `cluster leave`) waits for its WebSub
    /// subscriptions to be handed over before it stops anyway.
    #[serde(with = "humantime_serde")]
    pub handover_timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRaft {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    pub snapshot_every_entries: u64,
    pub keep_entries_after_snapshot: u64,
    pub ready_max_lag: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: LogFormat,
    pub level: String,
    /// One line per HTTP request (target `eventgate::access`, level info).
    pub access: bool,
}

/// `broker.mqtt.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

/// Which kind of broker a `[broker]` or `[brokers.<name>]` section configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerType {
    Embedded,
    Kafka,
    Mqtt,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for RawNodeConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            http: RawHttp::default(),
            cluster: RawCluster::default(),
            tls: RawTls::default(),
            raft: RawRaft::default(),
            admin: RawAdmin::default(),
            log: RawLog::default(),
            tracing: RawTracing::default(),
            broker: RawBroker::default(),
            brokers: std::collections::BTreeMap::new(),
            topics: RawTopics::default(),
            webhook_receiver: RawWebhookReceiver::default(),
            websub: RawWebsub::default(),
            streams: RawStreams::default(),
            portal: RawPortal::default(),
            auth: governance::RawAuth::default(),
            apis: std::collections::BTreeMap::new(),
            plans: std::collections::BTreeMap::new(),
            applications: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            advertise: None,
            public_url: None,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: 4096,
        }
    }
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7000".to_owned(),
            advertise: None,
            seeds: Vec::new(),
            join_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for RawRaft {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(400),
            snapshot_every_entries: 5000,
            keep_entries_after_snapshot: 1000,
            ready_max_lag: 100,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access: true,
        }
    }
}

/// Flags given on the command line; each overrides the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub node_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub cluster_listen: Option<String>,
    pub join: Vec<String>,
    pub log_format: Option<LogFormat>,
}

/// How the cluster's TLS identity is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// CA certificate, node certificate and key from files.
    Files {
        ca_cert: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// The node issues its own certificate from the cluster CA (certificate and key given),
    /// kept in `<data_dir>/tls/`.
    IssueFromCa { ca_cert: PathBuf, ca_key: PathBuf },
    /// A single node makes its own CA in `<data_dir>/tls/` (development; nobody else can join).
    SelfSigned,
}

/// The validated configuration a node runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub http_advertise: String,
    pub cluster_listen: SocketAddr,
    pub cluster_advertise: String,
    pub seeds: Vec<String>,
    pub join_timeout: Duration,
    pub write_timeout: Duration,
    /// See `cluster.handover_timeout`.
    pub handover_timeout: Duration,
    pub tls: TlsSource,
    pub raft: RaftTiming,
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Whether HTTP requests are logged.
    pub log_access: bool,
    /// OpenTelemetry trace export.
    pub tracing: crate::telemetry::TracingSettings,
    /// The embedded broker.
    pub broker: BrokerSettings,
    /// Further brokers by name, each with the gateway topics routed to it.
    pub brokers: Vec<(String, BrokerSettings)>,
    /// Topics declared in the configuration.
    pub topics: Vec<String>,
    /// Whether unknown topics are created on first use.
    pub topics_auto_create: bool,
    /// `topics.content_types`: topic → default content type.
    pub topic_content_types: std::collections::BTreeMap<String, String>,
    /// Largest body `/webhook-receiver` accepts.
    pub webhook_max_body_bytes: usize,
    /// Idempotent publishes (`Idempotency-Key`).
    pub idempotency: IdempotencySettings,
    /// The HTTP listener's timeouts and caps.
    pub http_limits: HttpLimits,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Base URL of the gateway as subscribers see it, without a trailing slash; when not
    /// configured the node derives it from its advertised HTTP address.
    pub public_url: Option<String>,
    pub websub: WebsubSettings,
    pub streams: eventgate_actors::stream::StreamSettings,
    /// Whether WebSocket clients may publish.
    pub streams_allow_publish: bool,
    /// Origins admitted to streams; `None` admits any.
    pub streams_allowed_origins: Option<Vec<String>>,
    /// APIs, plans and applications the file declares.
    pub declared: eventgate_raft_store::governance::Declared,
    /// Authentication settings.
    pub auth: governance::AuthSettings,
    /// The developer portal.
    pub portal: PortalSettings,
    /// No config file was given: the development profile.
    pub dev_profile: bool,
    /// Where the configuration came from, for messages.
    pub source: String,
}

/// The HTTP listener's timeouts and caps (`[http]`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    /// Connections held at once; past it a new one gets a fast 503.
    pub max_connections: usize,
    /// Connections held at once from one address (0: no limit).
    pub max_connections_per_ip: usize,
}

/// File descriptors kept for the node's own use (store, broker logs, QUIC, outbound callbacks)
/// when `http.max_connections` is derived from the process's limit.
pub const DESCRIPTOR_RESERVE: usize = 256;

/// The soft limit of open files of this process (Linux: `/proc/self/limits`), if known.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Settings of the WebSub hub.
#[derive(Debug, Clone)]
pub struct WebsubSettings {
    pub signature: eventgate_actors::websub::SignatureAlgorithm,
    /// The key sealing subscribers' secrets, and earlier ones still opening.
    pub secret_key: Option<[u8; 32]>,
    pub previous_secret_keys: Vec<[u8; 32]>,
    pub lease_default: Duration,
    pub lease_min: Duration,
    pub lease_max: Duration,
    pub outbound: crate::outbound::OutboundSettings,
    pub delivery: eventgate_actors::subscription::DeliverySettings,
    pub breaker: eventgate_actors::endpoints::BreakerSettings,
    pub ledger: eventgate_actors::ledger::LedgerSettings,
    /// Where operator events go; none: logged only.
    pub events_topic: Option<String>,
}

/// Which broker the node uses.
#[derive(Debug, Clone)]
pub enum BrokerKind {
    Embedded,
    Kafka(eventgate_actors::broker::kafka::KafkaConfig),
    Mqtt(eventgate_actors::broker::mqtt::MqttConfig),
}

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub kind: BrokerKind,
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub retention: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: usize,
    /// Gateway topic names → broker topic names.
    pub mapping: eventgate_actors::broker::mapped::TopicMapping,
    pub probe_interval: Duration,
    /// The gateway topics routed to this broker (empty for the default broker).
    pub topics: Vec<String>,
}

/// Raft timing and compaction.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_every_entries: u64,
    pub keep_entries_after_snapshot: u64,
    pub ready_max_lag: u64,
}

impl RaftTiming {
    /// The coordinator's timing derived from Raft's: a member is dead for ownership when Raft
    /// itself would give up on it (the longest election timeout and two heartbeats); a new
    /// leader waits three heartbeats for answers.
    pub fn coordinator(&self) -> eventgate_actors::hub::CoordinatorSettings {
        eventgate_actors::hub::CoordinatorSettings {
            dead_after: self.election_timeout_max + self.heartbeat_interval * 2,
            grace: self.heartbeat_interval * 3,
            ..Default::default()
        }
    }

    /// openraft's configuration, validated.
    pub fn openraft_config(&self) -> Result<openraft::Config, ConfigError> {
        let config = openraft::Config {
            cluster_name: "eventgate".to_owned(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            ..Default::default()
        };
        config.validate().map_err(|e| ConfigError::Invalid {
            origin: "raft".to_owned(),
            key: "raft".to_owned(),
            reason: e.to_string(),
        })
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config error in {origin}: key `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

fn describe_source(meta: Option<&figment::Metadata>) -> String {
    match meta {
        Some(m) => match &m.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            Some(other) => format!("{} ({other})", m.name),
            None => m.name.to_string(),
        },
        None => "configuration".to_owned(),
    }
}

fn figment_error(err: figment::Error) -> ConfigError {
    // Report the first error; figment keeps them in order of discovery.
    let first = err
        .into_iter()
        .next()
        .expect("a figment error holds at least one error");
    let key = if first.path.is_empty() {
        "(file)".to_owned()
    } else {
        first.path.join(".")
    };
    let from_env = first
        .metadata
        .as_ref()
        .is_some_and(|m| m.name == ENV_SOURCE);
    let origin = if from_env {
        // The variable itself, not the provider.
        format!(
            "environment variable EVENTGATE_{}",
            first.path.join("__").to_ascii_uppercase()
        )
    } else {
        describe_source(first.metadata.as_ref())
    };
    ConfigError::Invalid {
        origin,
        key,
        reason: first.kind.to_string(),
    }
}

/// Layers defaults, the file (if any), `EVENTGATE_*` variables from `env` and the flags, then
/// validates. `env` is passed in (not read here) so that callers and tests control it.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<NodeConfig, ConfigError> {
    let raw = merged(file, env, cli)?;
    let source = file.map_or_else(
        || "defaults and environment".to_owned(),
        |p| p.display().to_string(),
    );
    raw.build_and_validate(file.is_none(), source)
}

/// Keys whose values are secrets: `eventgate config check` shows `<redacted>` instead.
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret_key",
    "previous_secret_keys",
    "password",
    "secret",
    "client_secret",
    "api_key_hashes",
    "secret_hashes",
    "signing_secret",
    "shared_secret",
];

fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let secret = SECRET_KEYS.contains(&key.as_str())
                    || key.ends_with("_secret")
                    || key.ends_with("_token");
                if secret && !v.is_null() && *v != serde_json::json!([]) {
                    *v = serde_json::Value::String("<redacted>".to_owned());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The configuration as `load` takes it, checked, and as JSON with every default filled in and
/// its secrets redacted (`eventgate config check`).
pub fn effective(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<(NodeConfig, serde_json::Value), ConfigError> {
    let raw = merged(file, env, cli)?;
    let mut shown = serde_json::to_value(&raw).map_err(|e| ConfigError::Invalid {
        origin: "configuration".to_owned(),
        key: String::new(),
        reason: e.to_string(),
    })?;
    redact(&mut shown);
    let config = load(file, env, cli)?;
    Ok((config, shown))
}

/// The file, the environment and the command line merged over the defaults.
fn merged(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<RawNodeConfig, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawNodeConfig::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "not found or not a regular file".to_owned(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(env_provider(env)?);
    let mut raw: RawNodeConfig = figment.extract().map_err(figment_error)?;
    if let Some(v) = cli.node_id {
        raw.node_id = v;
    }
    if let Some(v) = &cli.data_dir {
        raw.data_dir = v.clone();
    }
    if let Some(v) = &cli.http_listen {
        raw.http.listen = v.clone();
    }
    if let Some(v) = &cli.cluster_listen {
        raw.cluster.listen = v.clone();
    }
    if !cli.join.is_empty() {
        raw.cluster.seeds = cli.join.clone();
    }
    if let Some(v) = cli.log_format {
        raw.log.format = v;
    }
    Ok(raw)
}

/// Variables named `EVENTGATE_*` that are not configuration keys and are not errors: the
/// command line's own (`--config`, `--node`), the docker-compose file's substitutions, and the
/// test and container harnesses'.
const OTHER_VARIABLES: &[&str] = &[
    "CONFIG",
    "ADMIN_URL",
    "PORT",
    "PUBLIC_URL",
    "ALLOW_PRIVATE_CALLBACKS",
    "IMAGE",
    "TANSU",
    "MOSQUITTO",
    "CHROMIUM",
    "BIN",
    "CHAOS_LOGS",
    "KEEP_CONTAINERS",
    "IMAGE_WORK",
    "UP_TIMEOUT",
];

/// Name of the environment provider, as errors report it.
const ENV_SOURCE: &str = "environment";

/// The `EVENTGATE_*` variables: `EVENTGATE_CLUSTER__SEEDS` is `cluster.seeds`, and
/// `EVENTGATE_ADMIN_TOKEN` (the CLI's variable) is also `admin.token`. A variable that names no
/// configuration key is an error naming it, not silently dropped.
struct EnvProvider(figment::value::Dict);

impl figment::Provider for EnvProvider {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(ENV_SOURCE)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.0.clone()))
    }
}

fn env_provider(env: &[(String, String)]) -> Result<EnvProvider, ConfigError> {
    let mut dict = figment::value::Dict::new();
    let mut admin_token_alias = None;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("EVENTGATE_") else {
            continue;
        };
        if OTHER_VARIABLES.contains(&rest) {
            continue;
        }
        if rest == "ADMIN_TOKEN" {
            admin_token_alias = Some(value.clone());
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
            return Err(ConfigError::Invalid {
                origin: format!("environment variable {name}"),
                key: path.join("."),
                reason: format!(
                    "names no configuration key (EVENTGATE_<SECTION>__<KEY>, e.g. EVENTGATE_CLUSTER__SEEDS; top-level keys: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            });
        }
        let parsed: figment::value::Value = value
            .parse()
            .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
        insert_path(&mut dict, &path, parsed);
    }
    // `EVENTGATE_ADMIN__TOKEN` wins over the CLI's name when both are set.
    if let Some(token) = admin_token_alias {
        let path = ["admin".to_owned(), "token".to_owned()];
        let set = matches!(dict.get("admin"), Some(figment::value::Value::Dict(_, d)) if d.contains_key("token"));
        if !set {
            insert_path(&mut dict, &path, figment::value::Value::from(token));
        }
    }
    Ok(EnvProvider(dict))
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn parse_addr(source: &str, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| ConfigError::Invalid {
        origin: source.to_owned(),
        key: key.to_owned(),
        reason: format!("`{value}` is not an IP address with a port: {e}"),
    })
}

fn advertise_of(
    source: &str,
    key: &str,
    listen: SocketAddr,
    advertise: Option<&String>,
) -> Result<String, ConfigError> {
    match advertise {
        Some(a) if !a.trim().is_empty() => Ok(a.trim().to_owned()),
        _ if listen.ip().is_unspecified() => Err(ConfigError::Invalid {
            origin: source.to_owned(),
            key: key.to_owned(),
            reason: format!(
                "required when listening on {listen}: other nodes need an address to reach this one"
            ),
        }),
        _ => Ok(listen.to_string()),
    }
}

impl RawNodeConfig {
    /// Checks every value and builds the typed configuration.
    pub fn build_and_validate(
        self,
        dev_profile: bool,
        source: String,
    ) -> Result<NodeConfig, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: source.clone(),
            key: key.to_owned(),
            reason,
        };
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "unsupported version {} (this build reads {CONFIG_VERSION})",
                    self.version
                ),
            ));
        }
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be 1 or more".to_owned()));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".to_owned()));
        }
        let (http_listen, http_advertise) = self.http.build(&source)?;
        let http_limits = self.http.limits(&invalid)?;
        let (cluster_listen, cluster_advertise) = self.cluster.build(&source, &invalid)?;
        let tls = self.tls.build(!self.cluster.seeds.is_empty(), &invalid)?;
        let raft = self.raft.build(&invalid)?;
        self.admin.check(&invalid)?;
        let (broker, brokers) = self.build_brokers(&invalid)?;
        let max_message_bytes = self.broker.max_message_bytes;
        let (webhook_max_body_bytes, idempotency) =
            self.webhook_receiver.build(max_message_bytes, &invalid)?;
        let (streams, streams_allowed_origins) = self.streams.build(max_message_bytes, &invalid)?;
        for (i, topic) in self.topics.names.iter().enumerate() {
            if let Err(e) = eventgate_actors::broker::validate_topic_name(topic) {
                return Err(invalid(&format!("topics.names[{i}]"), e.to_string()));
            }
        }
        for (topic, content_type) in &self.topics.content_types {
            let field = format!("topics.content_types.{topic}");
            if let Err(e) = eventgate_actors::broker::validate_topic_name(topic) {
                return Err(invalid(&field, e.to_string()));
            }
            let (kind, subtype) = content_type.split_once('/').unwrap_or_default();
            if kind.trim().is_empty()
                || subtype.trim().is_empty()
                || axum::http::HeaderValue::from_str(content_type).is_err()
            {
                return Err(invalid(
                    &field,
                    format!("`{content_type}` is not a media type like application/json"),
                ));
            }
        }
        let websub = self.websub.build(dev_profile, &invalid)?;
        let public_url = self.http.public_url(&invalid)?;
        let portal = self.portal.build(&invalid)?;
        let (declared, auth) = governance::build(
            &self.apis,
            &self.plans,
            &self.applications,
            &self.auth,
            &invalid,
        )?;
        Ok(NodeConfig {
            declared,
            auth,
            node_id: self.node_id,
            data_dir: self.data_dir,
            http_listen,
            http_advertise,
            cluster_listen,
            cluster_advertise,
            seeds: self.cluster.seeds,
            join_timeout: self.cluster.join_timeout,
            write_timeout: self.cluster.write_timeout,
            handover_timeout: self.cluster.handover_timeout,
            tls,
            raft,
            admin_token: self.admin.token,
            log_format: self.log.format,
            log_level: self.log.level,
            log_access: self.log.access,
            tracing: crate::telemetry::TracingSettings {
                otlp_endpoint: match self.tracing.otlp_endpoint.as_deref() {
                    None | Some("") => None,
                    Some(url) if url.starts_with("http://") => Some(url.to_owned()),
                    // The exporter's HTTP client is built without TLS (a local collector
                    // forwards over TLS if it must): refuse what would fail at every export.
                    Some(other) => {
                        return Err(invalid(
                            "tracing.otlp_endpoint",
                            format!(
                                "`{other}` is not an http:// URL (spans go to a local collector over plain HTTP)"
                            ),
                        ))
                    }
                },
                service_name: self.tracing.service_name.clone(),
                export_interval: self.tracing.export_interval,
            },
            broker,
            brokers,
            // The development profile serves the README's demo topic.
            topics: if dev_profile && self.topics.names.is_empty() {
                vec!["demo".to_owned()]
            } else {
                self.topics.names
            },
            topics_auto_create: self.topics.auto_create.unwrap_or(dev_profile),
            topic_content_types: self.topics.content_types,
            webhook_max_body_bytes,
            idempotency,
            http_limits,
            body_timeout: self.http.body_timeout,
            public_url,
            websub,
            streams,
            streams_allow_publish: self.streams.allow_publish,
            streams_allowed_origins,
            portal,
            dev_profile,
            source,
        })
    }

    /// `[broker]` (the default broker, every topic not routed elsewhere) and
    /// `[brokers.<name>]` (further Kafka or MQTT brokers with the topics they serve).
    fn build_brokers(
        &self,
        invalid: &Invalid<'_>,
    ) -> Result<(BrokerSettings, Vec<(String, BrokerSettings)>), ConfigError> {
        let b = &self.broker;
        if !b.topics.is_empty() {
            return Err(invalid(
                "broker.topics",
                "the default broker takes every topic not routed to one of [brokers]; list topics there".to_owned(),
            ));
        }
        let broker = b.build("broker", self.node_id, &self.data_dir, "broker", invalid)?;
        let mut brokers = Vec::new();
        let mut routed: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
        for (name, raw) in &self.brokers {
            let key = format!("brokers.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return Err(invalid(
                    &key,
                    "a broker name is letters, digits, '-' and '_'".to_owned(),
                ));
            }
            if raw.kind == BrokerType::Embedded {
                return Err(invalid(
                    &format!("{key}.kind"),
                    "further brokers are kafka or mqtt; the embedded one can only be the default"
                        .to_owned(),
                ));
            }
            if raw.topics.is_empty() {
                return Err(invalid(
                    &format!("{key}.topics"),
                    "list the gateway topics that live on this broker".to_owned(),
                ));
            }
            for (i, topic) in raw.topics.iter().enumerate() {
                let field = format!("{key}.topics[{i}]");
                if let Err(e) = eventgate_actors::broker::validate_topic_name(topic) {
                    return Err(invalid(&field, e.to_string()));
                }
                if let Some(other) = routed.insert(topic, name) {
                    return Err(invalid(
                        &field,
                        format!("`{topic}` is already routed to brokers.{other}"),
                    ));
                }
            }
            let dir = format!("broker-{name}");
            brokers.push((
                name.clone(),
                raw.build(&key, self.node_id, &self.data_dir, &dir, invalid)?,
            ));
        }
        Ok((broker, brokers))
    }
}

/// Reports a key of the configuration and why its value is refused.
type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

impl RawHttp {
    /// `http.listen` and the address other nodes and clients reach it at.
    fn build(&self, source: &str) -> Result<(SocketAddr, String), ConfigError> {
        let listen = parse_addr(source, "http.listen", &self.listen)?;
        let advertise = advertise_of(source, "http.advertise", listen, self.advertise.as_ref())?;
        Ok((listen, advertise))
    }

    /// The listener's timeouts and caps.
    fn limits(&self, invalid: &Invalid<'_>) -> Result<HttpLimits, ConfigError> {
        for (field, value) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.body_timeout", self.body_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(invalid(field, "must be at least 100ms".to_owned()));
            }
        }
        let max_connections = match self.max_connections {
            Some(0) => {
                return Err(invalid(
                    "http.max_connections",
                    "must be 1 or more".to_owned(),
                ))
            }
            Some(n) => n,
            None => open_files_limit()
                .map_or(4096, |limit| limit.saturating_sub(DESCRIPTOR_RESERVE))
                .max(64),
        };
        Ok(HttpLimits {
            header_read_timeout: self.header_read_timeout,
            max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        })
    }

    /// `http.public_url`, without a trailing slash.
    fn public_url(&self, invalid: &Invalid<'_>) -> Result<Option<String>, ConfigError> {
        let Some(url) = &self.public_url else {
            return Ok(None);
        };
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > "https://".len();
        if !ok {
            return Err(invalid(
                "http.public_url",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        Ok(Some(url.trim_end_matches('/').to_owned()))
    }
}

impl RawCluster {
    /// `cluster.listen`, its advertised address; checks the seeds and the write timeout.
    fn build(
        &self,
        source: &str,
        invalid: &Invalid<'_>,
    ) -> Result<(SocketAddr, String), ConfigError> {
        let listen = parse_addr(source, "cluster.listen", &self.listen)?;
        let advertise = advertise_of(source, "cluster.advertise", listen, self.advertise.as_ref())?;
        for (i, seed) in self.seeds.iter().enumerate() {
            let ok = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid(
                    &format!("cluster.seeds[{i}]"),
                    format!("`{seed}` is not host:port"),
                ));
            }
        }
        if self.write_timeout < Duration::from_millis(10) {
            return Err(invalid(
                "cluster.write_timeout",
                "must be at least 10ms".to_owned(),
            ));
        }
        Ok((listen, advertise))
    }
}

impl RawTls {
    /// Where the node's identity comes from; a node that joins (`joining`) needs the CA.
    fn build(&self, joining: bool, invalid: &Invalid<'_>) -> Result<TlsSource, ConfigError> {
        Ok(match (&self.ca_cert, &self.ca_key, &self.cert, &self.key) {
            (None, None, None, None) => {
                if joining {
                    return Err(invalid(
                        "tls",
                        "a node joining a cluster needs the cluster CA: set tls.ca_cert with tls.cert and tls.key, or tls.ca_cert with tls.ca_key".to_owned(),
                    ));
                }
                TlsSource::SelfSigned
            }
            (Some(ca), _, Some(cert), Some(key)) => TlsSource::Files {
                ca_cert: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
            (Some(ca), Some(ca_key), None, None) => TlsSource::IssueFromCa {
                ca_cert: ca.clone(),
                ca_key: ca_key.clone(),
            },
            (None, ..) => {
                return Err(invalid(
                    "tls.ca_cert",
                    "required when any tls key is set".to_owned(),
                ))
            }
            (Some(_), _, Some(_), None) => {
                return Err(invalid("tls.key", "required with tls.cert".to_owned()))
            }
            (Some(_), _, None, _) => {
                return Err(invalid(
                    "tls.cert",
                    "required with tls.key (or give tls.ca_key to issue one)".to_owned(),
                ))
            }
        })
    }
}

impl RawRaft {
    /// Raft's timing, checked as openraft checks it.
    fn build(&self, invalid: &Invalid<'_>) -> Result<RaftTiming, ConfigError> {
        let r = self;
        if r.election_timeout_min >= r.election_timeout_max {
            return Err(invalid(
                "raft.election_timeout_min",
                "must be less than raft.election_timeout_max".to_owned(),
            ));
        }
        if r.heartbeat_interval >= r.election_timeout_min {
            return Err(invalid(
                "raft.heartbeat_interval",
                "must be less than raft.election_timeout_min".to_owned(),
            ));
        }
        if r.snapshot_every_entries == 0 {
            return Err(invalid(
                "raft.snapshot_every_entries",
                "must be 1 or more".to_owned(),
            ));
        }
        let raft = RaftTiming {
            heartbeat_interval: r.heartbeat_interval,
            election_timeout_min: r.election_timeout_min,
            election_timeout_max: r.election_timeout_max,
            snapshot_every_entries: r.snapshot_every_entries,
            keep_entries_after_snapshot: r.keep_entries_after_snapshot,
            ready_max_lag: r.ready_max_lag,
        };
        raft.openraft_config()
            .map_err(|e| invalid("raft", e.to_string()))?;
        Ok(raft)
    }
}

impl RawAdmin {
    fn check(&self, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
        match &self.token {
            Some(token) if token.len() < 16 => Err(invalid(
                "admin.token",
                "must be at least 16 characters".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

impl RawWebhookReceiver {
    /// The largest body `/webhook-receiver` reads: at most what the broker takes.
    fn build(
        &self,
        max_message_bytes: usize,
        invalid: &Invalid<'_>,
    ) -> Result<(usize, IdempotencySettings), ConfigError> {
        if self.max_body_bytes == 0 || self.max_body_bytes > max_message_bytes {
            return Err(invalid(
                "webhook_receiver.max_body_bytes",
                format!("must be 1 to broker.max_message_bytes ({max_message_bytes})"),
            ));
        }
        if self.idempotency_window < Duration::from_secs(1)
            || self.idempotency_window > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(invalid(
                "webhook_receiver.idempotency_window",
                "1s to 30d".to_owned(),
            ));
        }
        if self.idempotency_max_keys == 0 {
            return Err(invalid(
                "webhook_receiver.idempotency_max_keys",
                "must be 1 or more".to_owned(),
            ));
        }
        Ok((
            self.max_body_bytes,
            IdempotencySettings {
                window: self.idempotency_window,
                max_keys: self.idempotency_max_keys,
            },
        ))
    }
}

impl RawStreams {
    /// The streams' settings and the origins admitted (`None`: any).
    fn build(
        &self,
        max_message_bytes: usize,
        invalid: &Invalid<'_>,
    ) -> Result<
        (
            eventgate_actors::stream::StreamSettings,
            Option<Vec<String>>,
        ),
        ConfigError,
    > {
        let st = self;
        for (field, value, min) in [
            ("streams.ring_batches", st.ring_batches, 1),
            ("streams.batch_max", st.batch_max, 1),
            ("streams.max_connections", st.max_connections, 1),
            ("streams.max_publish_bytes", st.max_publish_bytes, 1),
            ("streams.max_catchups", st.max_catchups, 1),
        ] {
            if value < min {
                return Err(invalid(field, format!("must be {min} or more")));
            }
        }
        if st.max_publish_bytes > max_message_bytes {
            return Err(invalid(
                "streams.max_publish_bytes",
                format!("must be at most broker.max_message_bytes ({max_message_bytes})"),
            ));
        }
        for (field, value) in [
            ("streams.send_timeout", st.send_timeout),
            ("streams.heartbeat", st.heartbeat),
            ("streams.sse_retry", st.sse_retry),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be more than 0s".to_owned()));
            }
        }
        for (i, origin) in st.allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/'));
            if !ok {
                return Err(invalid(
                    &format!("streams.allowed_origins[{i}]"),
                    format!("`{origin}` is not `*` or an origin like https://app.example.com (scheme and host, no path)"),
                ));
            }
        }
        let settings = eventgate_actors::stream::StreamSettings {
            ring_batches: st.ring_batches,
            batch_max: st.batch_max,
            topic_linger: st.topic_linger,
            slow_consumer: st.slow_consumer,
            send_timeout: st.send_timeout,
            heartbeat: st.heartbeat,
            sse_retry: st.sse_retry,
            max_connections: st.max_connections,
            max_publish_bytes: st.max_publish_bytes,
            max_catchups: st.max_catchups,
            skipped_offsets: Default::default(),
        };
        let origins =
            (!st.allowed_origins.iter().any(|o| o == "*")).then(|| st.allowed_origins.clone());
        Ok((settings, origins))
    }
}

impl RawWebsub {
    /// The hub's settings: leases, delivery, outbound callbacks (private addresses allowed
    /// by default only in the development profile).
    fn build(
        &self,
        dev_profile: bool,
        invalid: &Invalid<'_>,
    ) -> Result<WebsubSettings, ConfigError> {
        let ws = self;
        if ws.lease_min.is_zero()
            || ws.lease_min > ws.lease_default
            || ws.lease_default > ws.lease_max
        {
            return Err(invalid(
                "websub.lease_default",
                "leases must satisfy 0 < lease_min <= lease_default <= lease_max".to_owned(),
            ));
        }
        if ws.delivery_window == 0 || ws.delivery_window > 1024 {
            return Err(invalid("websub.delivery_window", "1 to 1024".to_owned()));
        }
        if ws.max_attempts == Some(0) {
            return Err(invalid(
                "websub.max_attempts",
                "must be 1 or more".to_owned(),
            ));
        }
        let retry = match (&ws.retry_schedule, ws.retry_base, ws.retry_max) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(invalid(
                "websub.retry_schedule",
                "give a retry schedule or exponential retries (retry_base, retry_max), not both"
                    .to_owned(),
            )),
            (Some(schedule), None, None) => {
                if schedule.is_empty() || schedule.len() > 100 {
                    return Err(invalid(
                        "websub.retry_schedule",
                        "1 to 100 waits, e.g. [\"5s\", \"5m\", \"30m\"]".to_owned(),
                    ));
                }
                let waits = schedule
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        humantime::parse_duration(text).map_err(|e| {
                            invalid(
                                &format!("websub.retry_schedule[{i}]"),
                                format!("`{text}` is not a duration: {e}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                eventgate_actors::subscription::RetryPolicy::Schedule(waits)
            }
            (None, None, None) => eventgate_actors::subscription::RetryPolicy::Schedule(
                eventgate_actors::subscription::STANDARD_SCHEDULE.to_vec(),
            ),
            (None, base, max) => {
                let base = base.unwrap_or(Duration::from_secs(1));
                let max = max.unwrap_or(Duration::from_secs(600));
                if base.is_zero() || max < base {
                    return Err(invalid(
                        "websub.retry_max",
                        "exponential retries need 0 < retry_base <= retry_max".to_owned(),
                    ));
                }
                eventgate_actors::subscription::RetryPolicy::Exponential { base, max }
            }
        };
        let max_attempts = ws.max_attempts.or_else(|| retry.attempts()).unwrap_or(10);
        if ws.per_host_concurrency == 0 {
            return Err(invalid(
                "websub.per_host_concurrency",
                "must be 1 or more".to_owned(),
            ));
        }
        let signature = ws.signature_algorithm;
        let key = |field: &str, text: &str| -> Result<[u8; 32], ConfigError> {
            let bytes = hex::decode(text.trim()).map_err(|_| {
                invalid(
                    field,
                    "64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`".to_owned(),
                )
            })?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                invalid(
                    field,
                    "64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`".to_owned(),
                )
            })
        };
        let secret_key = match (&ws.secret_key, &ws.secret_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "websub.secret_key_file",
                    "give websub.secret_key or websub.secret_key_file, not both".to_owned(),
                ))
            }
            (Some(text), None) => Some(key("websub.secret_key", text)?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid("websub.secret_key_file", format!("{}: {e}", path.display()))
                })?;
                Some(key("websub.secret_key_file", &text)?)
            }
            (None, None) => None,
        };
        let previous_secret_keys = ws
            .previous_secret_keys
            .iter()
            .enumerate()
            .map(|(i, text)| key(&format!("websub.previous_secret_keys[{i}]"), text))
            .collect::<Result<Vec<_>, _>>()?;
        if secret_key.is_none() && !previous_secret_keys.is_empty() {
            return Err(invalid(
                "websub.previous_secret_keys",
                "needs a current websub.secret_key".to_owned(),
            ));
        }
        let events_topic = match ws.events_topic.as_str() {
            "" => None,
            topic => {
                eventgate_actors::broker::validate_topic_name(topic)
                    .map_err(|e| invalid("websub.events_topic", e.to_string()))?;
                Some(topic.to_owned())
            }
        };
        Ok(WebsubSettings {
            signature,
            secret_key,
            previous_secret_keys,
            lease_default: ws.lease_default,
            lease_min: ws.lease_min,
            lease_max: ws.lease_max,
            outbound: crate::outbound::OutboundSettings {
                allow_private: ws.allow_private_callbacks.unwrap_or(dev_profile),
                connect_timeout: ws.callback_connect_timeout,
                timeout: ws.callback_timeout,
                max_response_bytes: ws.max_response_bytes,
                per_host_concurrency: ws.per_host_concurrency,
            },
            delivery: eventgate_actors::subscription::DeliverySettings {
                window: ws.delivery_window,
                max_attempts,
                retry,
                retry_after_max: ws.retry_after_max,
                max_age: ws.max_age,
                signature,
                secret_overlap: ws.secret_overlap,
            },
            breaker: ws.breaker.build(invalid)?,
            ledger: ws.ledger.build(invalid)?,
            events_topic,
        })
    }
}

impl RawBroker {
    /// Checks one broker's settings; `key` is where it sits in the file (`broker`, or
    /// `brokers.<name>`), and names the fields of errors.
    fn build(
        &self,
        key: &str,
        node_id: u64,
        data_dir: &std::path::Path,
        default_dir: &str,
        invalid: &Invalid<'_>,
    ) -> Result<BrokerSettings, ConfigError> {
        let b = self;
        if b.segment_bytes < 4096 {
            return Err(invalid(
                &format!("{key}.segment_bytes"),
                "must be at least 4096".to_owned(),
            ));
        }
        if b.max_message_bytes == 0 {
            return Err(invalid(
                &format!("{key}.max_message_bytes"),
                "must be 1 or more".to_owned(),
            ));
        }
        if b.probe_interval < Duration::from_millis(100) {
            return Err(invalid(
                &format!("{key}.probe_interval"),
                "must be at least 100ms".to_owned(),
            ));
        }
        // Broker-side names follow the broker's rules: Kafka's everywhere but on MQTT, where
        // levels (`/`) and, for subscribing, wildcards are allowed.
        let mqtt = b.kind == BrokerType::Mqtt;
        let validate = |name: &str| -> Result<(), String> {
            if mqtt {
                if name.is_empty() || name.len() > 65_535 || name.contains('\0') {
                    return Err("an MQTT topic is 1 to 65535 bytes without NUL".to_owned());
                }
                if !eventgate_actors::broker::mqtt::valid_filter(name) {
                    return Err(
                        "`#` only as the last level and `+` only as a whole level".to_owned()
                    );
                }
                Ok(())
            } else {
                eventgate_actors::broker::validate_topic_name(name).map_err(|e| e.to_string())
            }
        };
        if !b.topic_prefix.is_empty() {
            // A prefix must make valid names of valid ones.
            if let Err(e) = validate(&format!("{}x", b.topic_prefix)) {
                return Err(invalid(&format!("{key}.topic_prefix"), e));
            }
        }
        for (gateway, broker_name) in &b.topic_map {
            if let Err(e) = eventgate_actors::broker::validate_topic_name(gateway) {
                return Err(invalid(
                    &format!("{key}.topic_map.{gateway}"),
                    e.to_string(),
                ));
            }
            if let Err(e) = validate(broker_name) {
                return Err(invalid(&format!("{key}.topic_map.{gateway}"), e));
            }
        }
        let kind = match b.kind {
            BrokerType::Embedded => BrokerKind::Embedded,
            BrokerType::Kafka => {
                let k = &b.kafka;
                let servers = k
                    .bootstrap_servers
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.kafka.bootstrap_servers"),
                            "required when broker.kind is kafka".to_owned(),
                        )
                    })?;
                if k.default_partitions < 1 || k.replication_factor < 1 {
                    return Err(invalid(
                        &format!("{key}.kafka.default_partitions"),
                        "partitions and replication factor must be 1 or more".to_owned(),
                    ));
                }
                BrokerKind::Kafka(eventgate_actors::broker::kafka::KafkaConfig {
                    bootstrap_servers: servers,
                    client_id: k.client_id.clone(),
                    default_partitions: k.default_partitions,
                    replication_factor: k.replication_factor,
                    request_timeout: k.request_timeout,
                    properties: k.properties.clone().into_iter().collect(),
                    max_message_bytes: b.max_message_bytes,
                    content_type: k.content_type.clone(),
                })
            }
            BrokerType::Mqtt => {
                let m = &b.mqtt;
                let address = m
                    .address
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.mqtt.address"),
                            "required when broker.kind is mqtt".to_owned(),
                        )
                    })?;
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(h, p)| {
                        Some((
                            h.trim_matches(['[', ']']).to_owned(),
                            p.parse::<u16>().ok()?,
                        ))
                    })
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.mqtt.address"),
                            format!("`{address}` is not host:port"),
                        )
                    })?;
                if m.client_id.is_empty() || m.client_id.len() > 64 {
                    return Err(invalid(
                        &format!("{key}.mqtt.client_id"),
                        "must be 1 to 64 characters".to_owned(),
                    ));
                }
                if m.username.is_some() != m.password.is_some() {
                    return Err(invalid(
                        &format!("{key}.mqtt.password"),
                        "username and password go together".to_owned(),
                    ));
                }
                if m.stream_window_messages == 0 {
                    return Err(invalid(
                        &format!("{key}.mqtt.stream_window_messages"),
                        "must be 1 or more".to_owned(),
                    ));
                }
                if m.request_timeout < Duration::from_millis(100) {
                    return Err(invalid(
                        &format!("{key}.mqtt.request_timeout"),
                        "must be at least 100ms".to_owned(),
                    ));
                }
                BrokerKind::Mqtt(eventgate_actors::broker::mqtt::MqttConfig {
                    host,
                    port,
                    client_id: m.client_id.clone(),
                    node_id,
                    username: m.username.clone(),
                    password: m.password.clone(),
                    keep_alive: m.keep_alive,
                    request_timeout: m.request_timeout,
                    content_type: m.content_type.clone(),
                    protocol: match m.protocol {
                        MqttProtocol::V5 => eventgate_actors::broker::mqtt::MqttVersion::V5,
                        MqttProtocol::V311 => eventgate_actors::broker::mqtt::MqttVersion::V311,
                    },
                    message_expiry: m.message_expiry,
                    tap_messages: m.stream_window_messages,
                    tap_bytes: m.stream_window_bytes,
                    tap_linger: m.stream_linger,
                    max_message_bytes: b.max_message_bytes,
                })
            }
        };
        Ok(BrokerSettings {
            kind,
            dir: b.dir.clone().unwrap_or_else(|| data_dir.join(default_dir)),
            segment_bytes: b.segment_bytes,
            retention: b.retention,
            retention_bytes: b.retention_bytes,
            max_message_bytes: b.max_message_bytes,
            mapping: eventgate_actors::broker::mapped::TopicMapping {
                prefix: b.topic_prefix.clone(),
                renames: b.topic_map.clone(),
            },
            probe_interval: b.probe_interval,
            topics: b.topics.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), content).unwrap();
        file
    }

    fn load_str(content: &str) -> Result<NodeConfig, ConfigError> {
        let file = write(content);
        load(Some(file.path()), &[], &CliOverrides::default())
    }

    #[test]
    fn api_base_paths_are_checked_and_unique() {
        let ok =
            load_str("[apis.a]\nbase_path = \"/a/v1\"\nchannels = { c = \"t\" }\nsecurity = []\n")
                .unwrap();
        assert_eq!(ok.declared.apis[0].base_path.as_deref(), Some("/a/v1"));
        for (path, needle) in [
            ("a/v1", "starts with `/`"),
            ("/a/", "trailing"),
            ("/a b", "segment `a b`"),
            ("/sse/x", "gateway's own routes"),
            ("/a/../b", "`..`"),
        ] {
            let err = load_str(&format!(
                "[apis.a]\nbase_path = \"{path}\"\nchannels = {{ c = \"t\" }}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("apis.a.base_path") && err.contains(needle),
                "{path}: {err}"
            );
        }
        let err = load_str("[apis.a]\nbase_path = \"/x\"\nchannels = { c = \"t\" }\n[apis.b]\nbase_path = \"/x\"\nchannels = { c = \"t\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apis.b.base_path") && err.contains("API `a`"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_a_dev_single_node_on_loopback() {
        let c = load(None, &[], &CliOverrides::default()).unwrap();
        assert!(c.dev_profile);
        assert_eq!(c.node_id, 1);
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.tls, TlsSource::SelfSigned);
        assert_eq!(c.topics, ["demo"]);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let err = load_str("[http]\nlisten = 5\n").unwrap_err().to_string();
        assert!(err.contains("http.listen"), "{err}");
        assert!(err.contains(".toml"), "{err}");

        let err = load_str("[http]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen") && err.contains("nope"), "{err}");

        let err = load_str("[cluster]\nseedz = []\n").unwrap_err().to_string();
        assert!(err.contains("seedz"), "{err}");

        let err = load_str("node_id = [\n").unwrap_err().to_string();
        assert!(err.contains(".toml"), "{err}");

        let err = load_str("[raft]\nelection_timeout_min = \"2s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.election_timeout_min"), "{err}");
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let file = write("node_id = 2\n[cluster]\nwrite_timeout = \"2s\"\n");
        let env = vec![
            ("EVENTGATE_NODE_ID".to_owned(), "3".to_owned()),
            (
                "EVENTGATE_CLUSTER__WRITE_TIMEOUT".to_owned(),
                "750ms".to_owned(),
            ),
            ("EVENTGATE_TANSU".to_owned(), "/opt/tansu".to_owned()),
        ];
        let c = load(Some(file.path()), &env, &CliOverrides::default()).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.write_timeout, Duration::from_millis(750));
        let cli = CliOverrides {
            node_id: Some(4),
            ..Default::default()
        };
        let c = load(Some(file.path()), &env, &cli).unwrap();
        assert_eq!(c.node_id, 4);
        assert!(!c.dev_profile);
    }

    #[test]
    fn environment_variables_are_named_in_errors_and_unknown_ones_refused() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let cli = CliOverrides::default();
        let err = load(None, &env(&[("EVENTGATE_UNRELATED_THING", "x")]), &cli)
            .unwrap_err()
            .to_string();
        assert!(err.contains("EVENTGATE_UNRELATED_THING"), "{err}");
        let err = load(
            None,
            &env(&[("EVENTGATE_CLUSTER__WRITE_TIMEOUT", "soon")]),
            &cli,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("EVENTGATE_CLUSTER__WRITE_TIMEOUT"), "{err}");
        assert!(!err.contains(".rs"), "no source line of ours: {err}");
        // The CLI's variable configures the server too.
        let token = "0123456789abcdef0123";
        let c = load(None, &env(&[("EVENTGATE_ADMIN_TOKEN", token)]), &cli).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some(token));
    }

    #[test]
    fn dev_profile_auto_creates_topics_and_a_config_file_does_not() {
        let dev = load(None, &[], &CliOverrides::default()).unwrap();
        assert!(dev.topics_auto_create);
        let file = load_str("[topics]\nnames = [\"orders\"]\n").unwrap();
        assert!(!file.topics_auto_create);
        assert_eq!(file.topics, vec!["orders".to_owned()]);
        let err = load_str("[topics]\nnames = [\"bad topic\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics.names[0]"), "{err}");
        let err = load_str("[broker.topic_map]\norders = \"a/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.topic_map.orders"), "{err}");
        let err = load_str("[broker]\ntopic_prefix = \"x y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.topic_prefix"), "{err}");
        // MQTT names may have levels and wildcards; each field error names its place.
        let ok = load_str("[broker]\nkind = \"mqtt\"\ntopic_prefix = \"gw/\"\n[broker.mqtt]\naddress = \"127.0.0.1:1883\"\n[broker.topic_map]\nt = \"plant/+/temperature\"\n").unwrap();
        assert!(matches!(ok.broker.kind, BrokerKind::Mqtt(_)));
        for (toml, field) in [
            ("[broker]\nkind = \"mqtt\"\n", "broker.mqtt.address"),
            ("[broker]\nkind = \"mqtt\"\n[broker.mqtt]\naddress = \"nohost\"\n", "broker.mqtt.address"),
            ("[broker]\nkind = \"mqtt\"\n[broker.mqtt]\naddress = \"h:1\"\n[broker.topic_map]\nt = \"a/#/b\"\n", "broker.topic_map.t"),
            ("[brokers.p]\nkind = \"mqtt\"\n[brokers.p.mqtt]\naddress = \"h:1\"\n", "brokers.p.topics"),
            ("[brokers.p]\nkind = \"mqtt\"\ntopics = [\"a\"]\n", "brokers.p.mqtt.address"),
            ("[brokers.p]\nkind = \"embedded\"\ntopics = [\"a\"]\n", "brokers.p.kind"),
            ("[brokers.p]\nkind = \"mqtt\"\ntopics = [\"a\"]\n[brokers.p.mqtt]\naddress = \"h:1\"\n[brokers.q]\nkind = \"mqtt\"\ntopics = [\"a\"]\n[brokers.q.mqtt]\naddress = \"h:2\"\n", "brokers.q.topics[0]"),
            ("[broker]\ntopics = [\"a\"]\n", "broker.topics"),
        ] {
            let err = load_str(toml).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = load_str("[webhook_receiver]\nmax_body_bytes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook_receiver.max_body_bytes"), "{err}");
    }

    #[test]
    fn a_joining_node_needs_the_cluster_ca() {
        let err = load_str("[cluster]\nseeds = [\"127.0.0.1:7000\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls"), "{err}");
    }

    #[test]
    fn closed_choices_are_enums_and_a_wrong_one_names_its_key() {
        let ok = load_str("[streams]\nslow_consumer = \"drop-oldest\"\n").unwrap();
        assert_eq!(
            ok.streams.slow_consumer,
            eventgate_actors::stream::SlowConsumerPolicy::DropOldest
        );
        for (file, key, a_choice) in [
            (
                "[streams]\nslow_consumer = \"drop-newest\"\n",
                "streams.slow_consumer",
                "drop-oldest",
            ),
            ("[broker]\nkind = \"rabbitmq\"\n", "broker.kind", "kafka"),
            (
                "[brokers.b]\nkind = \"redis\"\ntopics = [\"t\"]\n",
                "brokers.b.kind",
                "mqtt",
            ),
            (
                "[websub]\nsignature_algorithm = \"md5\"\n",
                "websub.signature_algorithm",
                "sha256",
            ),
        ] {
            let text = load_str(file).unwrap_err().to_string();
            assert!(text.contains(key), "{text}");
            assert!(text.contains(a_choice), "{text}");
        }
    }

    #[test]
    fn missing_file_is_reported() {
        let err = load(
            Some(Path::new("/nonexistent/eventgate.toml")),
            &[],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/eventgate.toml"), "{err}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// A configuration file, whatever it holds, loads or fails with a message; never a
            /// panic.
            #[test]
            fn arbitrary_files_never_panic(text in "\\PC{0,200}") {
                let _ = load_str(&text);
            }

            /// Keys the file may hold, with arbitrary values.
            #[test]
            fn arbitrary_values_never_panic(
                section in prop::sample::select(vec!["http", "cluster", "raft", "broker", "streams", "websub", "auth"]),
                key in "[a-z_]{1,24}",
                value in "\\PC{0,24}",
            ) {
                let _ = load_str(&format!("[{section}]\n{key} = {value:?}\n"));
                let _ = load_str(&format!("[{section}]\n{key} = {value}\n"));
            }
        }
    }
}
