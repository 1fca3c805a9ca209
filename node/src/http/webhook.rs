//! `POST /webhook-receiver?topic=<t>`: webhook providers publish into a topic. Any content type;
//! the body is kept byte for byte with its `Content-Type`. The answer is `202` with the
//! message's position only once the broker holds it durably.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use eventgate_actors::broker::{validate_topic_name, OutgoingMessage};
use serde_json::json;

use eventgate_raft_store::governance::Entrypoint;

use super::error::ApiError;
use super::AppState;
use crate::policy::Target;

/// Header carrying the message key (also accepted as the `key` query parameter).
pub const KEY_HEADER: &str = "x-message-key";

/// The value of query parameter `name`, if present.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a request body of at most `limit` bytes within `deadline`; a larger one (by
/// `Content-Length` or as it streams in) is a 413, a slower one a 408.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::request_timeout(deadline))?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::malformed_body(format!("could not read the body: {e}"))
        }
    })
}

/// The provider's signature, where the API requires one: through an API's base path, that
/// API's requirement; at the gateway's own route, every API exposing the topic that requires a
/// signature is a way in, and the publish must satisfy one of them (so an unsigned publish
/// never reaches a topic by the route that names no API).
fn verify_provider(
    state: &AppState,
    topic: &str,
    via_api: Option<&str>,
    headers: &HeaderMap,
    payload: &[u8],
) -> Result<(), ApiError> {
    let required: Vec<_> = state.control().reader().read(|s| {
        let g = &s.governance;
        match via_api {
            Some(name) => g
                .apis
                .get(name)
                .and_then(|a| a.verify_ingest.clone())
                .into_iter()
                .collect(),
            None => g
                .apis_of_topic(topic)
                .filter_map(|(api, _)| api.verify_ingest.clone())
                .collect(),
        }
    });
    if required.is_empty() {
        return Ok(());
    }
    let now = std::time::SystemTime::now();
    let mut reasons = Vec::new();
    for signature in &required {
        match crate::ingest_signature::verify(signature, headers, payload, now) {
            Ok(()) => return Ok(()),
            Err(reason) => reasons.push(format!("{}: {reason}", signature.scheme.name())),
        }
    }
    Err(ApiError::invalid_signature(reasons.join("; ")))
}

/// `POST /webhook-receiver?topic=<t>`.
pub async fn receive(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    via: Option<axum::Extension<super::ViaApi>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = query.as_deref();
    let topic = query_param(query, "topic").ok_or_else(|| {
        ApiError::invalid_field("topic", "the query parameter `topic` is required")
    })?;
    validate_topic_name(&topic).map_err(|e| ApiError::invalid_field("topic", e.to_string()))?;
    let ingress = state.ingress();
    let publisher = ingress
        .admit_publish(
            super::credential(&headers, query).as_ref(),
            Target {
                topic: &topic,
                api: super::ViaApi::api_of(&via),
            },
            Entrypoint::Webhook,
        )
        .await?;
    let limit = match publisher.max_message_bytes() {
        Some(api_limit) => state
            .inner
            .webhook_max_body_bytes
            .min(usize::try_from(api_limit).unwrap_or(usize::MAX)),
        None => state.inner.webhook_max_body_bytes,
    };
    let payload = read_body(&headers, body, limit, state.inner.body_timeout).await?;
    verify_provider(
        &state,
        &topic,
        super::ViaApi::api_of(&via),
        &headers,
        &payload,
    )?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned);
    let key = query_param(query, "key").map(Bytes::from).or_else(|| {
        headers
            .get(KEY_HEADER)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
    });
    let message = OutgoingMessage {
        key,
        headers: Vec::new(),
        content_type: Some(content_type),
        payload,
    };
    let published = ingress.publish(&publisher, message).await?;
    // MQTT does not number messages: the answer then names only the topic.
    let body = match published.position {
        Some(position) => json!({
            "id": format!("{}-{}", position.partition, position.offset),
            "topic": topic,
            "partition": position.partition,
            "offset": position.offset,
        }),
        None => json!({ "topic": topic }),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Some(rate) = published.rate {
        for (name, value) in rate.headers() {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    Ok(response)
}
