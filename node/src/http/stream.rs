//! What WebSocket (`ws.rs`) and SSE (`sse.rs`) streams share at the HTTP edge: reading where to
//! start (`Last-Event-ID` header, else `lastEventId`, else `from` = `latest` (default) |
//! `earliest` | a resume token), the origin and envelope parameters, admission through
//! [`crate::ingress::Ingress::open_stream`], a place in the node's connection registry and the
//! [`Feed`] (catch-up from the broker, then the topic's live ring).
//!
//! Every message is one WebSocket frame (text for text content types, binary otherwise) or one
//! SSE event whose `id:` is its resume token; `envelope=json` wraps each in a JSON document
//! with its metadata, `envelope=cloudevents` makes each a structured CloudEvent. Each connection runs on its own task, registered in `Connections`; when
//! the server ends a stream it says why: a close frame with a documented code, or a final SSE
//! `close` event.

use axum::http::{header, HeaderMap, HeaderValue};
use eventgate_actors::broker::validate_topic_name;
use eventgate_actors::stream::connection::{CloseSwitch, ConnectionInfo};
use eventgate_actors::stream::feed::{Feed, FeedError, Start};
use eventgate_actors::stream::topic::StreamError;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::Entrypoint;

use super::error::ApiError;
use super::webhook::query_param;
use super::AppState;
use crate::http::listener::Peer;
use crate::ingress::StreamGrant;
use crate::policy::Target;
use crate::refusal::Refusal;

/// A checked, admitted request to stream a topic.
pub(super) struct Prepared {
    /// The `Access-Control-Allow-Origin` to answer (SSE).
    pub allow_origin: Option<HeaderValue>,
    pub feed: Feed,
    pub info: ConnectionInfo,
    /// The client reads JSON documents (`envelope=json` or `cloudevents`): gaps, acks and
    /// nacks as JSON, messages with their metadata.
    pub envelope: bool,
    /// Messages as structured CloudEvents (`envelope=cloudevents`) instead of the envelope.
    pub cloudevents: bool,
    /// The API the client came through (its base path), if any.
    pub api: Option<String>,
    pub entrypoint: Entrypoint,
    /// What admission granted: principal, publish right, connection slot, delivery budget.
    pub grant: StreamGrant,
}

impl Prepared {
    /// Ends the stream when its principal's rights are withdrawn or expire, or — anonymous
    /// too — when the topic stops admitting it (its API retired or put behind credentials).
    pub(super) fn watch_rights(&self, state: &AppState, closer: &CloseSwitch) {
        state.ingress().watch_rights(
            self.grant.principal.clone(),
            self.info.topic.clone(),
            self.api.clone(),
            self.entrypoint,
            closer.clone(),
        );
    }
}

/// Where to start: `Last-Event-ID`, else `lastEventId`, else `from`, else the latest.
fn start_of(headers: &HeaderMap, query: Option<&str>) -> Result<Start, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::invalid_field("Last-Event-ID", "not a resume token"))?;
        if !text.is_empty() {
            return eventgate_actors::stream::token::parse(text)
                .map(Start::After)
                .map_err(|e| ApiError::invalid_field("Last-Event-ID", e));
        }
    }
    if let Some(text) = query_param(query, "lastEventId") {
        return eventgate_actors::stream::token::parse(&text)
            .map(Start::After)
            .map_err(|e| ApiError::invalid_field("lastEventId", e));
    }
    match query_param(query, "from") {
        None => Ok(Start::Latest),
        Some(text) => Start::parse(&text).map_err(|e| {
            ApiError::invalid_field(
                "from",
                format!("expected `earliest`, `latest` or a resume token: {e}"),
            )
        }),
    }
}

/// Checks a stream request, admits it and opens its feed.
pub(super) async fn prepare(
    state: &AppState,
    topic: String,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: &Peer,
    entrypoint: Entrypoint,
    api: Option<String>,
) -> Result<Prepared, ApiError> {
    validate_topic_name(&topic).map_err(|e| ApiError::invalid_field("topic", e.to_string()))?;
    let origin = headers.get(header::ORIGIN);
    let allow_origin = match (&state.inner.allowed_origins, origin) {
        (None, _) => Some(HeaderValue::from_static("*")),
        (Some(allowed), Some(origin))
            if allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()) =>
        {
            Some(origin.clone())
        }
        // Not from a browser page: no origin to check.
        (Some(_), None) => None,
        (Some(_), Some(origin)) => {
            return Err(ApiError::forbidden(format!(
                "origin `{}` is not in streams.allowed_origins",
                origin.to_str().unwrap_or("?")
            )))
        }
    };
    let (envelope, cloudevents) = match query_param(query, "envelope").as_deref() {
        None | Some("none") => (false, false),
        Some("json") => (true, false),
        Some("cloudevents") => (true, true),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "envelope",
                format!("`{other}` is not one of json, cloudevents, none"),
            ))
        }
    };
    let start = start_of(headers, query)?;
    let may_publish = entrypoint == Entrypoint::Websocket && state.inner.ws_allow_publish;
    // Admission (credentials, rights, plan, topic) is a span of the client's trace.
    let admission = crate::telemetry::Scope::from_request(
        "stream.open",
        headers,
        vec![
            opentelemetry::KeyValue::new("eventgate.entrypoint", entrypoint.name()),
            opentelemetry::KeyValue::new("eventgate.topic", topic.clone()),
        ],
    );
    let grant = state
        .ingress()
        .open_stream(
            super::credential(headers, query).as_ref(),
            Target {
                topic: &topic,
                api: api.as_deref(),
            },
            entrypoint,
            may_publish,
        )
        .await;
    if let Err(refusal) = &grant {
        admission.error(&refusal.to_string());
    }
    drop(admission);
    let grant = grant?;
    let connections = &state.inner.connections;
    let Some(id) = connections.reserve() else {
        return Err(Refusal::NodeFull {
            limit: state.inner.streams.max_connections,
        }
        .into());
    };
    let feed = match Feed::open(
        &state.inner.topics,
        state.broker().clone(),
        &topic,
        start,
        &state.inner.streams,
    )
    .await
    {
        Ok(feed) => feed,
        Err(e) => {
            connections.release();
            return Err(match e {
                FeedError::TokenPartitions { .. } => {
                    let field = if headers.contains_key("last-event-id") {
                        "Last-Event-ID"
                    } else if query_param(query, "lastEventId").is_some() {
                        "lastEventId"
                    } else {
                        "from"
                    };
                    ApiError::invalid_field(field, e.to_string())
                }
                FeedError::Stream(StreamError::Broker(e)) => e.into(),
                FeedError::Stream(StreamError::Unavailable(reason)) => {
                    ApiError::broker_unavailable(reason)
                }
                FeedError::Stream(StreamError::Stopping) => Refusal::Stopping.into(),
            });
        }
    };
    Ok(Prepared {
        allow_origin,
        feed,
        info: ConnectionInfo {
            id,
            topic,
            protocol: if entrypoint == Entrypoint::Sse {
                "sse"
            } else {
                "websocket"
            },
            peer: peer.addr.to_string(),
            principal: grant.principal.as_ref().map(|p| p.app.clone()),
            opened_ms: now_ms(),
        },
        envelope,
        cloudevents,
        api,
        entrypoint,
        grant,
    })
}
