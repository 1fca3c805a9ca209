//! Why the gateway turns a client away, whatever the entrypoint.
//!
//! [`crate::policy`], [`crate::limits`] and [`crate::ingress`] answer a [`Refusal`]; each
//! entrypoint converts it exactly once, in its own terms:
//! - HTTP: `From<Refusal> for ApiError` (`http/error.rs`), a problem+json with a stable `type`;
//! - WebSocket: `ws::close_reason` (`http/ws.rs`), a close code;
//! - WebSub: `websub::denial` (`http/websub.rs`), a `hub.mode=denied` reason for what the
//!   subscriber may not do, a direct answer for the rest.

use eventgate_actors::broker::BrokerError;
use eventgate_raft_store::control::ControlError;

use crate::rate::RateStatus;

/// Why a request was not admitted, or a message not published.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No usable credential: missing where one is needed, unknown, revoked, expired, or of a
    /// kind the API does not take.
    #[error("{detail}")]
    Unauthenticated { detail: String },
    /// Authenticated (or anonymous), and not allowed to do this.
    #[error("{detail}")]
    Forbidden { detail: String },
    /// The API the request was routed through no longer offers the topic.
    #[error("{detail}")]
    NotOffered { detail: String },
    /// The topic's API was retired: it admits nobody any more.
    #[error("API `{api}` is retired")]
    ApiRetired { api: String },
    /// A plan's rate for this window is spent.
    #[error("{detail}")]
    RateLimited { detail: String, status: RateStatus },
    /// The application holds as many connections or WebSub subscriptions as its plan allows.
    #[error("{detail}")]
    QuotaExceeded { detail: String },
    /// This node holds as many streaming connections as it may (`streams.max_connections`).
    #[error("this node holds its limit of {limit} WebSocket and SSE connections")]
    NodeFull { limit: usize },
    /// The topic does not exist and may not be created on first use.
    #[error("topic `{topic}` does not exist (and topics.auto_create is off)")]
    TopicNotFound { topic: String },
    /// A message larger than the API or the entrypoint accepts.
    #[error("the message exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A message that does not match its channel's payload schema (the API validates).
    #[error(transparent)]
    InvalidMessage(Box<crate::schema::InvalidMessage>),
    /// A request field is missing or invalid.
    #[error("{field}: {detail}")]
    InvalidField { field: String, detail: String },
    /// The control plane could not answer (no quorum, a write not committed in time).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The node is shutting down.
    #[error("the node is stopping")]
    Stopping,
}

impl Refusal {
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Refusal::Unauthenticated {
            detail: detail.into(),
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Refusal::Forbidden {
            detail: detail.into(),
        }
    }

    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal::InvalidField {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The `outcome` label of `eventgate_auth_rejections` when this is an authentication or
    /// authorization refusal.
    pub fn auth_outcome(&self) -> Option<&'static str> {
        match self {
            Refusal::Unauthenticated { .. } => Some("unauthorized"),
            Refusal::Forbidden { .. } => Some("forbidden"),
            _ => None,
        }
    }
}
