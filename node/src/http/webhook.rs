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

use eventgate_raft_store::governance::{Entrypoint, IngestScheme};

use super::error::ApiError;
use super::AppState;
use crate::policy::Target;

/// Header carrying the message key (also accepted as the `key` query parameter).
pub const KEY_HEADER: &str = "x-message-key";
/// Prefix of the HTTP headers that become message headers (`X-Message-Header-Region: eu` →
/// `region: eu`), and that message headers become on WebSub deliveries.
pub const MESSAGE_HEADER_PREFIX: &str = "x-message-header-";
/// W3C trace context, kept with the message as it came.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The message headers a publish carries: each `X-Message-Header-<name>` (the name lower-cased,
/// a repeated header kept as often as it came) and the W3C trace context.
pub fn message_headers_of(headers: &HeaderMap) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        if let Some(short) = name.strip_prefix(MESSAGE_HEADER_PREFIX) {
            if !short.is_empty() {
                out.push((short.to_owned(), Bytes::copy_from_slice(value.as_bytes())));
            }
        } else if TRACE_HEADERS.contains(&name) {
            out.push((name.to_owned(), Bytes::copy_from_slice(value.as_bytes())));
        }
    }
    out
}

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

/// The header of an idempotent publish (IETF draft `httpapi-idempotency-key-header`).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Publishes made with an `Idempotency-Key`: a retry within `webhook_receiver.idempotency_window`
/// answers what the first publish answered and stores nothing new, on whichever node. The key
/// (per topic and publishing application) is reserved through the replicated log before the
/// broker is asked, and the answer recorded there before it is given, so a node killed after
/// answering leaves the answer to the others. Left: a node killed between the broker's
/// acknowledgement and that record — a retry after the reservation lapses (30 s) publishes
/// again.
mod idempotency {
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use eventgate_raft_store::clock::now_ms;
    use eventgate_raft_store::governance::{IdempotencyState, IdempotentPublish};
    use eventgate_raft_store::{Command, Response as Applied};
    use sha2::Digest;

    use super::super::error::ApiError;
    use super::super::AppState;

    /// How long a node holds a key it is publishing with before another may take it over.
    const PENDING_FOR_MS: u64 = 30_000;

    pub(super) enum Begun {
        /// Ours to publish; the id to complete or release.
        Reserved(String),
        /// The first publish's answer, given again.
        Answered(Response),
    }

    fn hex_sha256(parts: &[&[u8]]) -> String {
        let mut hasher = sha2::Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hex::encode(hasher.finalize())
    }

    pub(super) async fn begin(
        state: &AppState,
        topic: &str,
        application: Option<&str>,
        key: &str,
        payload: &[u8],
    ) -> Result<Begun, ApiError> {
        let id = hex_sha256(&[
            topic.as_bytes(),
            application.unwrap_or_default().as_bytes(),
            key.as_bytes(),
        ]);
        let fingerprint = hex_sha256(&[payload]);
        let settings = state.inner.idempotency;
        let now = now_ms();
        let record = IdempotentPublish {
            id: id.clone(),
            fingerprint: fingerprint.clone(),
            node: state.control().node_id(),
            state: IdempotencyState::Pending {
                until_ms: now + PENDING_FOR_MS,
            },
            expires_at_ms: now + settings.window.as_millis() as u64,
        };
        let answer = state
            .control()
            .write(Command::ReserveIdempotencyKey {
                record,
                at_ms: now,
                max_keys: settings.max_keys,
            })
            .await?;
        let reason = match answer {
            Applied::Applied => return Ok(Begun::Reserved(id)),
            Applied::Refused { reason } => reason,
            other => return Err(ApiError::internal(format!("{other:?}"))),
        };
        let held = state
            .control()
            .reader()
            .read(|s| s.governance.idempotency.get(&id).cloned());
        match (reason.as_str(), held) {
            ("full", _) => Err(ApiError::idempotency_store_full(format!(
                "the cluster keeps {} idempotency keys at most (webhook_receiver.idempotency_max_keys); retry later or without the key",
                settings.max_keys
            ))),
            (_, Some(held)) if held.fingerprint != fingerprint => Err(ApiError::idempotency_key_reused(
                "the key was used for a publish with another body; use a new key",
            )),
            (
                _,
                Some(IdempotentPublish {
                    state: IdempotencyState::Done { status, body },
                    ..
                }),
            ) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
                let mut response = (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                response.headers_mut().insert(
                    "idempotent-replayed",
                    axum::http::HeaderValue::from_static("true"),
                );
                Ok(Begun::Answered(response))
            }
            _ => Err(ApiError::idempotency_in_progress(
                "the first publish with this Idempotency-Key has not been answered yet; retry shortly",
            )),
        }
    }

    pub(super) async fn complete(
        state: &AppState,
        id: &str,
        status: StatusCode,
        body: &serde_json::Value,
    ) {
        let command = Command::CompleteIdempotencyKey {
            id: id.to_owned(),
            node: state.control().node_id(),
            state: IdempotencyState::Done {
                status: status.as_u16(),
                body: body.to_string(),
            },
            expires_at_ms: now_ms() + state.inner.idempotency.window.as_millis() as u64,
        };
        if let Err(e) = state.control().write(command).await {
            tracing::warn!(error = %e, "an idempotent publish's answer was not recorded: a retry may publish it again");
        }
    }

    pub(super) async fn release(state: &AppState, id: &str) {
        let command = Command::ReleaseIdempotencyKey {
            id: id.to_owned(),
            node: state.control().node_id(),
        };
        if let Err(e) = state.control().write(command).await {
            tracing::debug!(error = %e, "an idempotency key was not released; it lapses by itself");
        }
    }
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
) -> Result<Option<IngestScheme>, ApiError> {
    let required: Vec<_> = state.control().reader().read(|s| {
        let g = &s.governance;
        let of = |api: &eventgate_raft_store::governance::Api| {
            api.verify_ingest.clone().map(|v| (api.name.clone(), v))
        };
        match via_api {
            Some(name) => g.apis.get(name).and_then(of).into_iter().collect(),
            None => g
                .apis_of_topic(topic)
                .filter_map(|(api, _)| of(api))
                .collect(),
        }
    });
    if required.is_empty() {
        return Ok(None);
    }
    let now = std::time::SystemTime::now();
    let mut reasons = Vec::new();
    for (api, sealed) in &required {
        // Sealed under websub.secret_key (when set); one that cannot be opened admits nothing.
        let mut signature = sealed.clone();
        match state
            .inner
            .delivery
            .secrets
            .open(&crate::ingest_signature::seal_id(api), &sealed.secret)
        {
            Ok(secret) => signature.secret = secret,
            Err(e) => {
                reasons.push(format!(
                    "{api}: the provider's secret cannot be opened: {e}"
                ));
                continue;
            }
        }
        match crate::ingest_signature::verify(&signature, headers, payload, now) {
            Ok(()) => return Ok(Some(signature.scheme)),
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
    let signed = verify_provider(
        &state,
        &topic,
        super::ViaApi::api_of(&via),
        &headers,
        &payload,
    )?;
    // `Idempotency-Key`, or the provider's own message id under Standard Webhooks.
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(value),
        None if signed == Some(IngestScheme::StandardWebhooks) => headers.get("webhook-id"),
        None => None,
    }
    .map(|value| {
        value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::invalid_field(IDEMPOTENCY_KEY, "1 to 255 visible ASCII characters")
            })
    })
    .transpose()?;
    let reserved = match &idempotency_key {
        None => None,
        Some(key) => {
            match idempotency::begin(&state, &topic, publisher.application(), key, &payload).await?
            {
                idempotency::Begun::Reserved(id) => Some(id),
                idempotency::Begun::Answered(response) => return Ok(response),
            }
        }
    };
    // A CloudEvent (binary or structured mode) is stored as its data, its attributes as
    // `ce_*` headers; anything else as it came.
    let (content_type, message_headers, payload) =
        match crate::cloudevents::from_http(&headers, &payload) {
            Ok(Some(event)) => (event.content_type, event.headers, event.data),
            Ok(None) => (
                headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                Vec::new(),
                payload,
            ),
            Err(e) => {
                if let Some(id) = &reserved {
                    idempotency::release(&state, id).await;
                }
                return Err(e);
            }
        };
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let mut message_headers = message_headers;
    message_headers.extend(message_headers_of(&headers));
    // With traces on, the message carries this ingest's context (the caller's trace, one
    // step on), for whichever node delivers it.
    let ingest = crate::telemetry::Scope::from_request(
        "ingest",
        &headers,
        vec![opentelemetry::KeyValue::new(
            "eventgate.topic",
            topic.clone(),
        )],
    );
    let context = ingest.headers();
    if !context.is_empty() {
        message_headers.retain(|(n, _)| !TRACE_HEADERS.contains(&n.as_str()));
        message_headers.extend(context.into_iter().map(|(k, v)| (k, Bytes::from(v))));
    }
    let key = query_param(query, "key").map(Bytes::from).or_else(|| {
        headers
            .get(KEY_HEADER)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
    });
    let message = OutgoingMessage {
        key,
        headers: message_headers,
        content_type: Some(content_type),
        payload,
        // Each request stands alone: keyless ones are spread by the broker's partitioner.
        sticky: None,
    };
    let publish_span = ingest.child(
        "broker.publish",
        vec![opentelemetry::KeyValue::new(
            "eventgate.topic",
            topic.clone(),
        )],
    );
    let published = ingress.publish(&publisher, message).await;
    if let Err(refusal) = &published {
        publish_span.error(&refusal.to_string());
    }
    drop(publish_span);
    let published = match published {
        Ok(published) => published,
        Err(refusal) => {
            if let Some(id) = &reserved {
                idempotency::release(&state, id).await;
            }
            return Err(refusal.into());
        }
    };
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
    if let Some(id) = &reserved {
        idempotency::complete(&state, id, StatusCode::ACCEPTED, &body).await;
    }
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
