//! WebSocket and SSE streams, free of HTTP: what a streaming client reads and from where.
//!
//! - [`token`]: resume tokens, one next offset per partition, the SSE `id:` of every event;
//! - [`frame`]: a message as the clients see it, encoded once per message and shared;
//! - [`topic`]: `TopicSupervisor` and one `TopicActor` per topic with local readers: a single
//!   broker consumption per topic, fanned out through a bounded ring of shared batches;
//! - [`feed`]: one reader's view: catch-up from the broker up to the live ring, then live, with
//!   gaps refilled from the broker and the slow-consumer policy applied;
//! - [`connection`]: the registry of this node's connections, one task per client connection
//!   with its identity and close switch (not a ractor actor: see the module for the measurement).

pub mod connection;
pub mod feed;
pub mod frame;
pub mod token;
pub mod topic;

use std::time::Duration;

/// What happens to a reader that falls further behind than the ring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Close the connection with [`CloseReason::SlowConsumer`]; the client resumes from its last
    /// event id and loses nothing.
    Disconnect,
    /// Skip what the ring no longer holds, tell the client how many messages it missed (a gap
    /// marker) and go on from the oldest message still held.
    DropOldest,
}

/// Settings of the streaming side.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Batches the per-topic ring holds; a reader further behind is a slow consumer.
    pub ring_batches: usize,
    /// Messages read from the broker at once (one ring entry at most).
    pub batch_max: usize,
    /// How long a topic consumption lives on with no local reader.
    pub topic_linger: Duration,
    pub slow_consumer: SlowConsumerPolicy,
    /// A write (or flush) that does not complete in this time closes the connection.
    pub send_timeout: Duration,
    /// WebSocket ping / SSE comment interval.
    pub heartbeat: Duration,
    /// The SSE `retry:` hint given to clients.
    pub sse_retry: Duration,
    /// Connections this node accepts at most (WebSocket and SSE together).
    pub max_connections: usize,
    /// Largest frame a WebSocket client may publish.
    pub max_publish_bytes: usize,
    /// Readers catching up from the broker at once; more wait their turn.
    pub max_catchups: usize,
    /// Offsets readers went past without a message where the broker's offsets said there were
    /// some (`eventgate_stream_offsets_skipped_total`; shared by clones).
    pub skipped_offsets: prometheus_client::metrics::counter::Counter,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            ring_batches: 1024,
            batch_max: 256,
            topic_linger: Duration::from_secs(30),
            slow_consumer: SlowConsumerPolicy::Disconnect,
            send_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_secs(2),
            max_connections: 100_000,
            max_publish_bytes: 1024 * 1024,
            max_catchups: 64,
            skipped_offsets: Default::default(),
        }
    }
}

/// Why the server ended a stream: a WebSocket close code and the SSE `close` event's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed.
    Normal,
    /// The node is shutting down; reconnect (to any node) with the last event id.
    GoingAway,
    /// The client did not keep up with the topic.
    SlowConsumer,
    /// A published frame was refused by policy.
    PolicyViolation,
    /// A published frame was larger than allowed.
    TooBig,
    /// The broker is unavailable; reconnect later with the last event id.
    TryAgainLater,
    /// The topic's consumption failed.
    InternalError,
    /// The client did not answer pings.
    PingTimeout,
    /// The topic was deleted or is no longer readable.
    TopicGone,
    /// The client's credential expired (a JWT's `exp`, a key's expiry).
    CredentialExpired,
    /// The client's credential or rights were withdrawn (key revoked, application disabled,
    /// subscription to the API ended, permission removed).
    CredentialRevoked,
    /// A published frame went over the plan's publish rate.
    RateLimited,
    /// The API the stream was opened through was retired.
    ApiRetired,
    /// A published frame did not match its channel's schema.
    InvalidMessage,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 registry; 4xxx are eventgate's own).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::PolicyViolation => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::InternalError => 1011,
            CloseReason::TryAgainLater => 1013,
            CloseReason::SlowConsumer => 4008,
            CloseReason::PingTimeout => 4002,
            CloseReason::TopicGone => 4004,
            CloseReason::CredentialExpired => 4001,
            CloseReason::CredentialRevoked => 4003,
            CloseReason::RateLimited => 4029,
            CloseReason::ApiRetired => 4010,
            CloseReason::InvalidMessage => 1007,
        }
    }

    /// A short stable name, the `reason` of the close frame and SSE `close` event.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::GoingAway => "going-away",
            CloseReason::SlowConsumer => "slow-consumer",
            CloseReason::PolicyViolation => "policy-violation",
            CloseReason::TooBig => "message-too-big",
            CloseReason::TryAgainLater => "try-again-later",
            CloseReason::InternalError => "internal-error",
            CloseReason::PingTimeout => "ping-timeout",
            CloseReason::TopicGone => "topic-gone",
            CloseReason::CredentialExpired => "credential-expired",
            CloseReason::CredentialRevoked => "credential-revoked",
            CloseReason::RateLimited => "rate-limited",
            CloseReason::ApiRetired => "api-retired",
            CloseReason::InvalidMessage => "invalid-message",
        }
    }
}
