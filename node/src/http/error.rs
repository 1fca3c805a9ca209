//! The one error type of the HTTP edge: RFC 9457 problem details with a stable `type` URI per
//! kind of problem, and one table from errors to statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventgate_actors::broker::BrokerError;
use eventgate_raft_store::control::ControlError;
use serde::Serialize;

use crate::refusal::Refusal;

/// Base of every problem `type`; the slug after it is stable and documented.
pub const PROBLEM_BASE: &str = "https://eventgate.dev/problems/";

/// An error answered as `application/problem+json`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable identifier of the problem, appended to [`PROBLEM_BASE`].
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// Further response headers (`WWW-Authenticate`, `RateLimit-*`); boxed to keep the error
    /// small.
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
    /// Further members of the problem document (`pointer`, `errors`).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
            field: None,
            retry_after: None,
            headers: None,
            extra: None,
        }
    }

    /// Adds a member to the problem document.
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    /// An AsyncAPI document (or another imported document) that cannot be taken, with the
    /// JSON pointer of the problem.
    pub fn invalid_document(pointer: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-document",
            "The document cannot be imported",
            detail.into(),
        )
        .with_member("pointer", serde_json::Value::String(pointer.to_owned()))
    }

    fn with_header(&mut self, name: &'static str, value: String) {
        self.headers
            .get_or_insert_with(Default::default)
            .push((name, value));
    }

    /// A request field is missing or invalid.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "A request field is missing or invalid",
            detail.into(),
        );
        e.field = Some(field.into());
        e
    }

    /// The body could not be read as the expected document.
    pub fn malformed_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "The request body is malformed",
            detail.into(),
        )
    }

    /// The body is not of the media type the endpoint takes (`415`).
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The request body's media type is not the one this endpoint takes",
            detail.into(),
        )
    }

    /// A publish with an `Idempotency-Key` whose first publish is still being made.
    pub fn idempotency_in_progress(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "idempotency-in-progress",
            "A publish with this Idempotency-Key is in progress",
            detail.into(),
        );
        e.with_header("retry-after", "1".to_owned());
        e
    }

    /// An `Idempotency-Key` used again with another body.
    pub fn idempotency_key_reused(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "This Idempotency-Key was used with another body",
            detail.into(),
        )
    }

    /// The cluster holds as many idempotency keys as it may.
    pub fn idempotency_store_full(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "idempotency-store-full",
            "No more idempotency keys can be kept now",
            detail.into(),
        );
        e.with_header("retry-after", "60".to_owned());
        e
    }

    /// A publish to an API that requires the provider's signature, without a valid one.
    pub fn invalid_signature(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid-signature",
            "The provider's signature is missing or wrong",
            detail.into(),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Credentials are missing or wrong",
            detail.into(),
        );
        e.with_header("www-authenticate", "Bearer realm=\"eventgate\"".to_owned());
        e
    }

    /// A plan's rate limit is spent for this window.
    fn rate_limited(detail: impl Into<String>, status: &crate::rate::RateStatus) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Rate limit exceeded",
            detail.into(),
        );
        e.retry_after = Some(status.reset_ms.div_ceil(1000).max(1));
        for (name, value) in status.headers() {
            e.with_header(name, value);
        }
        e
    }

    /// An application holds as many stream connections (or WebSub subscriptions) as its plan
    /// allows.
    fn quota_exceeded(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            "The plan's limit is reached",
            detail.into(),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed",
            detail.into(),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            detail.into(),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail.into())
    }

    pub fn not_ready(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "The node is not ready",
            detail.into(),
        );
        e.retry_after = Some(1);
        e
    }

    /// The node holds as many streaming connections as it may.
    fn too_many_connections(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-connections",
            "The node holds as many connections as it may",
            format!("this node holds its limit of {limit} WebSocket and SSE connections (streams.max_connections); try another node"),
        );
        e.retry_after = Some(1);
        e
    }

    /// The resource exists but does not answer this method (axum adds the `Allow` header).
    pub fn method_not_allowed(method: &axum::http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this resource does not answer {method}"),
        )
    }

    /// The request body did not arrive in time.
    pub fn request_timeout(deadline: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "The request body did not arrive in time",
            format!("the body must arrive within {deadline:?} (http.body_timeout)"),
        )
    }

    /// A WebSocket endpoint was asked without a WebSocket upgrade.
    pub fn upgrade_required(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket-upgrade-required",
            "This endpoint speaks WebSocket",
            detail.into(),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "The request body is too large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn topic_not_found(topic: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "topic-not-found",
            "No such topic",
            format!("topic `{topic}` does not exist (and topics.auto_create is off)"),
        );
        e.field = Some("topic".to_owned());
        e
    }

    pub fn broker_unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker-unavailable",
            "The broker is unavailable",
            detail.into(),
        );
        e.retry_after = Some(1);
        e
    }

    /// What was asked for existed once and is no longer kept (a broker's retention).
    pub fn gone(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GONE,
            "gone",
            "No longer retained",
            detail.into(),
        )
    }

    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "callback-failed",
            "The subscriber's callback failed",
            detail.into(),
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail.into(),
        )
    }
}

/// The one translation of a [`Refusal`] into an HTTP answer.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated { detail } => ApiError::unauthorized(detail),
            Refusal::Forbidden { detail } => ApiError::forbidden(detail),
            Refusal::NotOffered { detail } => ApiError::not_found(detail),
            Refusal::ApiRetired { api } => ApiError::new(
                StatusCode::GONE,
                "api-retired",
                "The API is retired",
                format!("API `{api}` is retired"),
            ),
            Refusal::RateLimited { detail, status } => ApiError::rate_limited(detail, &status),
            Refusal::QuotaExceeded { detail } => ApiError::quota_exceeded(detail),
            Refusal::NodeFull { limit } => ApiError::too_many_connections(limit),
            Refusal::TopicNotFound { topic } => ApiError::topic_not_found(&topic),
            Refusal::PayloadTooLarge { limit } => ApiError::payload_too_large(limit),
            Refusal::InvalidMessage(invalid) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-message",
                "The message does not match its channel's schema",
                invalid.to_string(),
            )
            .with_member("errors", invalid.errors_json()),
            Refusal::InvalidField { field, detail } => ApiError::invalid_field(field, detail),
            Refusal::Control(e) => e.into(),
            Refusal::Broker(e) => e.into(),
            Refusal::Stopping => ApiError::not_ready("the node is stopping"),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let detail = e.to_string();
        match e {
            ControlError::NoLeader { .. } => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no-quorum",
                    "The cluster has no reachable leader",
                    detail,
                );
                err.retry_after = Some(1);
                err
            }
            ControlError::Timeout { .. } => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "commit-timeout",
                    "The write was not committed in time",
                    detail,
                );
                err.retry_after = Some(1);
                err
            }
            ControlError::Membership(_) => ApiError::conflict(detail),
            ControlError::Fatal(_) => ApiError::internal(detail),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match &e {
            BrokerError::TopicNotFound { topic } => ApiError::topic_not_found(topic),
            BrokerError::InvalidTopic { .. } => ApiError::invalid_field("topic", e.to_string()),
            BrokerError::MessageTooLarge { limit, .. } => ApiError::payload_too_large(*limit),
            BrokerError::PartitionNotFound { .. } => ApiError::not_found(e.to_string()),
            BrokerError::Unavailable { .. } => ApiError::broker_unavailable(e.to_string()),
            BrokerError::Corrupt { .. } | BrokerError::Io { .. } => {
                ApiError::internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = format!("{PROBLEM_BASE}{}", self.slug);
        let body = Problem {
            kind,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            field: self.field.as_deref(),
            extra: self.extra.as_deref(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers.iter().flat_map(|h| h.iter()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        response
    }
}
