//! The admin API: the cluster (status, leave) and the control plane's subscription records.
//! Writes commit through Raft before they answer; reads serve this node's applied state.

use eventgate_raft_store::clock::now_ms;
use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventgate_raft_store::control::ClusterStatus;
use eventgate_raft_store::network::NodeStatus;
use eventgate_raft_store::{
    callback_origin, Command, NodeId, PreviousSecret, Response as Applied, Signing, Subscription,
    SubscriptionState,
};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{AppState, JsonBody};

/// Longest lease an admin may set (one year).
const MAX_LEASE_SECONDS: u64 = 365 * 24 * 3600;
/// A `hub.secret` must be shorter than this (WebSub).
const MAX_SECRET_BYTES: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/cluster/status", get(cluster_status))
        .route("/cluster/node", get(node_status))
        .route("/cluster/leave", post(cluster_leave))
        .route("/subscriptions", get(list_subscriptions))
        .route(
            "/subscriptions/{id}",
            get(get_subscription)
                .put(put_subscription)
                .delete(delete_subscription),
        )
        .route("/subscriptions/{id}/secret", post(rotate_secret))
        .route("/subscriptions/{id}/replay", post(replay))
        .route("/subscriptions/{id}/enable", post(enable_subscription))
        .route("/subscriptions/{id}/attempts", get(list_attempts))
        .route("/endpoints", get(list_endpoints))
        .route("/endpoints/resume", post(resume_endpoint))
        .route("/dead-letters", get(list_dead_letters))
        .route(
            "/dead-letters/{id}/{partition}/{offset}",
            axum::routing::delete(discard_dead_letter),
        )
        .route(
            "/dead-letters/{id}/{partition}/{offset}/redrive",
            post(redrive_dead_letter),
        )
}

async fn cluster_status(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(state.control().cluster_status(Duration::from_secs(1)).await)
}

/// This node's own view of Raft, from local metrics only (cheap; never waits on peers).
async fn node_status(State(state): State<AppState>) -> Json<NodeStatus> {
    Json(state.control().local_status())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LeaveRequest {
    /// The member to remove; this node when absent.
    node_id: Option<NodeId>,
}

/// Removes a member. When the member is this node, the node stops once it is out.
async fn cluster_leave(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let control = state.control();
    let request: LeaveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LeaveRequest { node_id: None }
    } else {
        super::parse_json(&body)?
    };
    let node_id = request.node_id.unwrap_or(control.node_id());
    let is_member = control
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&node_id)
        .is_some();
    if !is_member {
        return Err(ApiError::not_found(format!(
            "node {node_id} is not a member"
        )));
    }
    // Hand over what the node owns first (drained, at exact cursors; a dead node's move at
    // once), so that no subscription waits for an owner that is gone.
    crate::node::hand_over_subscriptions(control, node_id, state.inner.handover_timeout).await;
    control
        .write(Command::NodeLeaving {
            node: node_id,
            at_ms: now_ms(),
        })
        .await?;
    control.remove_member(node_id).await?;
    tracing::info!(node_id, "member removed from the cluster");
    if node_id == control.node_id() {
        state.inner.shutdown.cancel();
    }
    Ok(Json(serde_json::json!({ "left": node_id })))
}

/// A subscription record as the admin API shows it (the secret is never shown).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubscriptionView {
    id: String,
    topic: String,
    callback: String,
    state: &'static str,
    lease_seconds: u64,
    lease_expires_at_ms: u64,
    has_secret: bool,
    owner: Option<NodeId>,
    /// The node the owner is handing the subscription over to, while that runs.
    handover_to: Option<NodeId>,
    /// Partition (its number as text) → next offset to deliver.
    #[schema(value_type = BTreeMap<String, u64>)]
    cursor: BTreeMap<u32, u64>,
    pending_retries: usize,
    created_at_ms: u64,
    updated_at_ms: u64,
    /// The topic URL deliveries announce (`Link: rel="self"`), when the subscriber named one.
    topic_url: Option<String>,
    /// `websub` or `standard-webhooks`.
    signing: &'static str,
    /// Until when the secret before the last rotation still signs too.
    previous_secret_until_ms: Option<u64>,
    /// The callback's endpoint (origin), which the circuit breaker tracks.
    origin: String,
    /// Its breaker, while deliveries to it are paused.
    endpoint: Option<EndpointView>,
    /// Why the subscription is disabled, if it is (not delivered until re-enabled).
    disabled: Option<DisabledView>,
}

/// A paused callback endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    origin: String,
    state: &'static str,
    paused_at_ms: u64,
    failures: u64,
    last_error: String,
    probe_interval_ms: u64,
    next_probe_at_ms: u64,
    /// Subscriptions whose callbacks are on it.
    subscriptions: usize,
}

/// Why a subscription is disabled.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DisabledView {
    at_ms: u64,
    reason: String,
}

fn endpoint_view(s: &eventgate_raft_store::ControlState, origin: &str) -> Option<EndpointView> {
    let e = s.endpoints.get(origin)?;
    Some(EndpointView {
        origin: e.origin.clone(),
        state: "paused",
        paused_at_ms: e.opened_at_ms,
        failures: e.failures,
        last_error: e.last_error.clone(),
        probe_interval_ms: e.probe_interval_ms,
        next_probe_at_ms: e.next_probe_at_ms,
        subscriptions: s
            .subscriptions
            .values()
            .filter(|sub| callback_origin(&sub.callback) == origin)
            .count(),
    })
}

fn signing_name(signing: Signing) -> &'static str {
    match signing {
        Signing::WebSub => "websub",
        Signing::StandardWebhooks => "standard-webhooks",
    }
}

fn state_name(state: SubscriptionState) -> &'static str {
    match state {
        SubscriptionState::PendingVerification => "pending_verification",
        SubscriptionState::Active => "active",
        SubscriptionState::PendingUnsubscribe => "pending_unsubscribe",
    }
}

fn view(state: &AppState, id: &str) -> Option<SubscriptionView> {
    state.control().reader().read(|s| {
        let sub = s.subscriptions.get(id)?;
        Some(SubscriptionView {
            id: sub.id.clone(),
            topic: sub.topic.clone(),
            callback: sub.callback.clone(),
            state: state_name(sub.state),
            lease_seconds: sub.lease_seconds,
            lease_expires_at_ms: sub.lease_expires_at_ms,
            has_secret: sub.secret.is_some(),
            owner: sub.owner,
            handover_to: sub.handover_to,
            cursor: s.cursors.get(id).cloned().unwrap_or_default(),
            pending_retries: s.retries.get(id).map_or(0, Vec::len),
            created_at_ms: sub.created_at_ms,
            updated_at_ms: sub.updated_at_ms,
            topic_url: sub.topic_url.clone(),
            signing: signing_name(sub.signing),
            previous_secret_until_ms: sub
                .previous_secret
                .as_ref()
                .map(|p| p.until_ms)
                .filter(|until| *until > now_ms()),
            origin: callback_origin(&sub.callback),
            endpoint: endpoint_view(s, &callback_origin(&sub.callback)),
            disabled: s.disabled.get(id).map(|d| DisabledView {
                at_ms: d.at_ms,
                reason: d.reason.clone(),
            }),
        })
    })
}

async fn list_subscriptions(State(state): State<AppState>) -> Json<Vec<SubscriptionView>> {
    let ids: Vec<String> = state
        .control()
        .reader()
        .read(|s| s.subscriptions.keys().cloned().collect());
    Json(ids.iter().filter_map(|id| view(&state, id)).collect())
}

async fn get_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    view(&state, &id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutSubscription {
    topic: String,
    #[schema(format = "uri")]
    callback: String,
    #[schema(minimum = 1, maximum = 31_536_000)]
    lease_seconds: u64,
    #[serde(default)]
    #[schema(max_length = 199)]
    secret: Option<String>,
    /// `pending_verification`, `active` (default) or `pending_unsubscribe`.
    #[serde(default)]
    #[schema(value_type = Option<SubscriptionStateName>)]
    state: Option<String>,
    /// `websub` (default) or `standard-webhooks` (needs a `whsec_` secret).
    #[serde(default)]
    #[schema(value_type = Option<SigningName>)]
    signing: Option<String>,
}

/// The state of a subscription record (schema only).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum SubscriptionStateName {
    PendingVerification,
    Active,
    PendingUnsubscribe,
}

/// How deliveries are signed (schema only).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum SigningName {
    Websub,
    StandardWebhooks,
}

/// The admin API's own request and response types, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    LeaveRequest,
    SubscriptionView,
    EndpointView,
    DisabledView,
    PutSubscription,
    RotateSecret,
    ReplayBody,
    ResumeEndpoint,
    DeadLetterView,
    NodeStatus,
    ClusterStatus,
)))]
pub(super) struct Schemas;

/// `signing` of a request, checked against the secret it would sign with.
fn signing_field(signing: Option<&str>, secret: Option<&str>) -> Result<Signing, ApiError> {
    match signing {
        None | Some("websub") => Ok(Signing::WebSub),
        Some("standard-webhooks") => {
            let secret = secret.ok_or_else(|| {
                ApiError::invalid_field(
                    "secret",
                    "Standard Webhooks signing needs a `whsec_<base64>` secret",
                )
            })?;
            eventgate_actors::standard_webhooks::key_of(secret)
                .map_err(|e| ApiError::invalid_field("secret", e))?;
            Ok(Signing::StandardWebhooks)
        }
        Some(other) => Err(ApiError::invalid_field(
            "signing",
            format!("`{other}` is not websub or standard-webhooks"),
        )),
    }
}

fn validate_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "id",
            "1 to 128 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ))
    }
}

fn validate_put(body: &PutSubscription) -> Result<SubscriptionState, ApiError> {
    if body.topic.trim().is_empty() || body.topic.len() > 255 {
        return Err(ApiError::invalid_field("topic", "1 to 255 characters"));
    }
    let url = reqwest::Url::parse(&body.callback)
        .map_err(|e| ApiError::invalid_field("callback", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::invalid_field(
            "callback",
            "must be an http or https URL with a host",
        ));
    }
    if body.lease_seconds == 0 || body.lease_seconds > MAX_LEASE_SECONDS {
        return Err(ApiError::invalid_field(
            "lease_seconds",
            format!("1 to {MAX_LEASE_SECONDS}"),
        ));
    }
    if body
        .secret
        .as_ref()
        .is_some_and(|s| s.len() >= MAX_SECRET_BYTES)
    {
        return Err(ApiError::invalid_field(
            "secret",
            format!("must be shorter than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    match body.state.as_deref() {
        None | Some("pending_verification") => Ok(SubscriptionState::PendingVerification),
        Some("active") => Ok(SubscriptionState::Active),
        Some("pending_unsubscribe") => Ok(SubscriptionState::PendingUnsubscribe),
        Some(other) => Err(ApiError::invalid_field(
            "state",
            format!("`{other}` is not one of pending_verification, active, pending_unsubscribe"),
        )),
    }
}

/// Creates or replaces a subscription record; answers once it is committed.
async fn put_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PutSubscription>,
) -> Result<Response, ApiError> {
    validate_id(&id)?;
    let sub_state = validate_put(&body)?;
    let signing = signing_field(body.signing.as_deref(), body.secret.as_deref())?;
    let existed = view(&state, &id).is_some();
    let now = now_ms();
    let sub = Subscription {
        id: id.clone(),
        topic: body.topic,
        callback: body.callback,
        secret: body
            .secret
            .map(|s| state.inner.delivery.secrets.seal(&id, &s)),
        lease_seconds: body.lease_seconds,
        lease_expires_at_ms: now + body.lease_seconds * 1000,
        state: sub_state,
        owner: None,
        created_at_ms: now,
        updated_at_ms: now,
        handover_to: None,
        topic_url: None,
        signing,
        previous_secret: None,
    };
    state
        .control()
        .write(Command::UpsertSubscription(sub))
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let shown = view(&state, &id).ok_or_else(|| {
        ApiError::internal("subscription committed but not yet applied on this node")
    })?;
    Ok((status, Json(shown)).into_response())
}

/// `POST /admin/subscriptions/{id}/secret`: the operator's rotation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// The new secret; a random one (shown once in the answer) when absent.
    #[serde(default)]
    secret: Option<String>,
    /// How long the old secret keeps signing too (`1h`; `0s`: not at all);
    /// `websub.secret_overlap` when absent.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "24h")]
    overlap: Option<Duration>,
}

/// Gives a subscription a new secret; the old one keeps signing next to it for the overlap,
/// so the subscriber can switch without a delivery failing. Answers the new secret.
async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: RotateSecret = super::parse_optional_json(&body)?;
    let mut sub = state
        .control()
        .reader()
        .read(|s| s.subscriptions.get(&id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))?;
    let secret = match body.secret {
        Some(s) if s.is_empty() || s.len() >= MAX_SECRET_BYTES => {
            return Err(ApiError::invalid_field(
                "secret",
                format!("1 to {} bytes", MAX_SECRET_BYTES - 1),
            ))
        }
        Some(s) => s,
        None => eventgate_actors::standard_webhooks::generate_secret(),
    };
    if sub.signing == Signing::StandardWebhooks {
        eventgate_actors::standard_webhooks::key_of(&secret)
            .map_err(|e| ApiError::invalid_field("secret", e))?;
    }
    let overlap = body
        .overlap
        .unwrap_or(state.inner.delivery.settings.secret_overlap);
    let now = now_ms();
    let until_ms = now.saturating_add(overlap.as_millis() as u64);
    sub.previous_secret = sub
        .secret
        .take()
        .map(|old| PreviousSecret {
            secret: old,
            until_ms,
        })
        .filter(|p| p.until_ms > now);
    sub.secret = Some(state.inner.delivery.secrets.seal(&id, &secret));
    sub.owner = None;
    sub.updated_at_ms = now;
    state
        .control()
        .write(Command::UpsertSubscription(sub))
        .await?;
    Ok(Json(serde_json::json!({
        "id": id,
        "secret": secret,
        "previous_secret_until_ms": (until_ms > now).then_some(until_ms),
    })))
}

/// `POST /admin/subscriptions/{id}/replay`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    partition: u32,
    from_offset: Option<u64>,
    /// Inclusive.
    to_offset: Option<u64>,
    /// RFC 3339: messages the broker appended at or after it.
    since: Option<String>,
    /// RFC 3339: … and before it.
    until: Option<String>,
    max: Option<u32>,
}

/// Most messages one replay delivers, and the default.
const REPLAY_MAX: u32 = 10_000;
const REPLAY_DEFAULT: u32 = 1_000;

/// Delivers again, in order and one at a time, the messages of one partition of the
/// subscription's topic in a range of offsets or of append times, signed as its deliveries
/// are and with their usual delivery ids (a replay is the same message again). Stops at the
/// first failure (502 naming the offset and how many went through); the subscription's own
/// deliveries go on meanwhile. The range must still be retained by the broker: a start older
/// than what it holds is 410 naming the oldest offset it has.
async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReplayBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use eventgate_actors::broker::StartAt;
    let sub = state
        .control()
        .reader()
        .read(|s| s.subscriptions.get(&id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))?;
    let time = |field: &str, text: &Option<String>| -> Result<Option<u64>, ApiError> {
        text.as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|e| {
                        ApiError::invalid_field(field, format!("not an RFC 3339 time: {e}"))
                    })
                    .map(|at| {
                        at.duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64
                    })
            })
            .transpose()
    };
    let since_ms = time("since", &body.since)?;
    let until_ms = time("until", &body.until)?;
    match (body.from_offset, since_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "since",
                "give from_offset or since, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid_field(
                "from_offset",
                "give from_offset (and to_offset) or since (and until)",
            ))
        }
        _ => {}
    }
    if let (Some(from), Some(to)) = (body.from_offset, body.to_offset) {
        if to < from {
            return Err(ApiError::invalid_field("to_offset", "before from_offset"));
        }
    }
    let max = body.max.unwrap_or(REPLAY_DEFAULT);
    if max == 0 || max > REPLAY_MAX {
        return Err(ApiError::invalid_field("max", format!("1 to {REPLAY_MAX}")));
    }
    if let Some(reason) = state
        .inner
        .delivery
        .policy
        .as_ref()
        .and_then(|p| p.withdrawn(&sub))
    {
        return Err(ApiError::conflict(format!(
            "nothing is replayed to a subscriber whose right is withdrawn: {reason}"
        )));
    }
    if !state.broker().offsets_global(&sub.topic) {
        return Err(ApiError::conflict(format!(
            "the broker of `{}` does not number messages, so it cannot replay them",
            sub.topic
        )));
    }
    let latest = state.broker().latest_offsets(&sub.topic).await?;
    let end = latest
        .iter()
        .find(|(p, _)| *p == body.partition)
        .map(|(_, next)| *next)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "partition",
                format!("`{}` has no partition {}", sub.topic, body.partition),
            )
        })?;
    let start = body.from_offset.map_or(StartAt::Earliest, StartAt::Offset);
    let mut consumer = state
        .broker()
        .consumer(&sub.topic, body.partition, start)
        .await?;
    let ctx = &state.inner.delivery;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut delivered = 0u32;
    let mut last_delivered = None;
    // The next offset to read; the range ends at the partition's end as of now.
    let mut next: Option<u64> = None;
    'read: while delivered < max && next.is_none_or(|n| n < end) {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let batch = consumer.next_batch(256, Duration::from_millis(500)).await?;
        if batch.is_empty() {
            break;
        }
        for message in batch {
            if next.is_none() {
                // The first message read: is the start of the range still retained?
                let lost = match (body.from_offset, since_ms) {
                    (Some(from), _) => message.offset > from,
                    (None, Some(since)) => message.offset > 0 && message.timestamp_ms > since,
                    (None, None) => false,
                };
                if lost {
                    return Err(ApiError::gone(format!(
                        "the start of the range is past the broker's retention for `{}` partition {}: the oldest message it holds is offset {} (appended at {} ms)",
                        sub.topic, body.partition, message.offset, message.timestamp_ms
                    )));
                }
            }
            next = Some(message.offset + 1);
            if message.offset >= end
                || body.to_offset.is_some_and(|to| message.offset > to)
                || until_ms.is_some_and(|until| message.timestamp_ms >= until)
            {
                break 'read;
            }
            if since_ms.is_some_and(|since| message.timestamp_ms < since) {
                continue;
            }
            if let Err(error) =
                eventgate_actors::subscription::deliver_once(ctx, &sub, &message, 1).await
            {
                return Err(ApiError::bad_gateway(format!(
                    "replay stopped at offset {} after {delivered} delivered: {error}",
                    message.offset
                ))
                .with_member("delivered", delivered.into())
                .with_member("failed_offset", message.offset.into()));
            }
            delivered += 1;
            last_delivered = Some(message.offset);
            if delivered >= max {
                break 'read;
            }
        }
    }
    Ok(Json(serde_json::json!({
        "id": id,
        "partition": body.partition,
        "delivered": delivered,
        "last_offset": last_delivered,
    })))
}

async fn delete_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .control()
        .write(Command::RemoveSubscription { id: id.clone() })
        .await?
    {
        Applied::NotFound => Err(ApiError::not_found(format!("no subscription `{id}`"))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Re-enables a subscription disabled after its endpoint's long outage: deliveries go on from
/// its cursor. `409` when it is not disabled.
async fn enable_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    match state
        .control()
        .write(Command::EnableSubscription { id: id.clone() })
        .await?
    {
        Applied::NotFound => Err(ApiError::not_found(format!("no subscription `{id}`"))),
        Applied::Count(0) => Err(ApiError::conflict(format!(
            "subscription `{id}` is not disabled"
        ))),
        _ => view(&state, &id)
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`"))),
    }
}

/// A time of a ledger query: unix milliseconds or RFC 3339.
fn time_param(field: &str, text: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("`{text}` is not unix milliseconds or an RFC 3339 time"),
            )
        })
}

/// The delivery ledger of a subscription: its recent attempts, newest first. Filters:
/// `outcome` (`succeeded`, `failed`, `gone`), `status` (HTTP), `message_id`, `since`, `until`
/// (unix ms or RFC 3339), `limit` (default 100).
async fn list_attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    use eventgate_actors::ledger::{AttemptFilter, AttemptOutcome};
    let exists = state
        .control()
        .reader()
        .read(|s| s.subscriptions.contains_key(&id));
    if !exists {
        return Err(ApiError::not_found(format!("no subscription `{id}`")));
    }
    let ledger = &state.inner.delivery.ledger;
    if !ledger.enabled() {
        return Err(ApiError::conflict(
            "the delivery ledger is off (websub.ledger.enabled = false)",
        ));
    }
    let param = |name| super::webhook::query_param(query.as_deref(), name);
    let outcome = param("outcome")
        .map(|o| {
            AttemptOutcome::parse(&o).ok_or_else(|| {
                ApiError::invalid_field("outcome", "`succeeded`, `failed` or `gone`")
            })
        })
        .transpose()?;
    let status = param("status")
        .map(|v| {
            v.parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| ApiError::invalid_field("status", "an HTTP status, 100 to 599"))
        })
        .transpose()?;
    let limit = param("limit")
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|l| (1..=10_000).contains(l))
                .ok_or_else(|| ApiError::invalid_field("limit", "1 to 10000"))
        })
        .transpose()?
        .unwrap_or(100);
    let filter = AttemptFilter {
        outcome,
        status,
        message_id: param("message_id"),
        since_ms: param("since")
            .map(|t| time_param("since", &t))
            .transpose()?,
        until_ms: param("until")
            .map(|t| time_param("until", &t))
            .transpose()?,
        limit,
    };
    let attempts = ledger.query(&id, &filter);
    Ok(Json(serde_json::json!({
        "subscription": id,
        "attempts": attempts,
    })))
}

/// The callback endpoints whose deliveries are paused, and the disabled subscriptions.
async fn list_endpoints(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.control().reader().read(|s| {
        let paused: Vec<EndpointView> = s
            .endpoints
            .keys()
            .filter_map(|origin| endpoint_view(s, origin))
            .collect();
        let disabled: Vec<serde_json::Value> = s
            .disabled
            .iter()
            .map(|(id, d)| {
                let callback = s.subscriptions.get(id).map(|sub| sub.callback.as_str());
                serde_json::json!({
                    "subscription": id,
                    "origin": callback.map(callback_origin),
                    "at_ms": d.at_ms,
                    "reason": d.reason,
                })
            })
            .collect();
        serde_json::json!({ "paused": paused, "disabled": disabled })
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResumeEndpoint {
    origin: String,
}

/// Closes a paused endpoint's breaker now (the operator knows it is back): its deliveries go
/// on at once. `404` when it is not paused.
async fn resume_endpoint(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResumeEndpoint>,
) -> Result<StatusCode, ApiError> {
    let origin = callback_origin(&body.origin);
    match state
        .control()
        .write(Command::CloseEndpoint {
            origin: origin.clone(),
        })
        .await?
    {
        Applied::Count(1) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found(format!(
            "endpoint `{origin}` is not paused"
        ))),
    }
}

/// A dead letter as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeadLetterView {
    subscription: String,
    topic: String,
    partition: u32,
    offset: u64,
    attempts: u32,
    last_error: String,
    at_ms: u64,
}

/// Every dead letter, oldest subscription id first; `?subscription=<id>` filters.
async fn list_dead_letters(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Json<Vec<DeadLetterView>> {
    let only = super::webhook::query_param(query.as_deref(), "subscription");
    Json(state.control().reader().read(|s| {
        s.dead_letters
            .values()
            .filter(|d| only.as_ref().is_none_or(|o| *o == d.id))
            .map(|d| DeadLetterView {
                subscription: d.id.clone(),
                topic: d.topic.clone(),
                partition: d.partition,
                offset: d.offset,
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                at_ms: d.at_ms,
            })
            .collect()
    }))
}

async fn discard_dead_letter(
    State(state): State<AppState>,
    Path((id, partition, offset)): Path<(String, u32, u64)>,
) -> Result<StatusCode, ApiError> {
    match state
        .control()
        .write(Command::RemoveDeadLetter {
            id: id.clone(),
            partition,
            offset,
        })
        .await?
    {
        Applied::NotFound => Err(ApiError::not_found(format!(
            "no dead letter {id}/{partition}/{offset}"
        ))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Delivers a dead letter once more, now: on a 2xx it is removed (`200`); otherwise it stays
/// and the answer is `502` with what the callback said.
async fn redrive_dead_letter(
    State(state): State<AppState>,
    Path((id, partition, offset)): Path<(String, u32, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    redrive(&state, &id, partition, offset).await?;
    Ok(Json(serde_json::json!({ "redriven": true })))
}

/// Delivers dead letter `id/partition/offset` once more now (read again from the broker);
/// removed when the callback takes it. Also what the portal's "My webhooks" re-drives with.
pub async fn redrive(
    state: &AppState,
    id: &str,
    partition: u32,
    offset: u64,
) -> Result<(), ApiError> {
    let found = state.control().reader().read(|s| {
        let letter = s
            .dead_letters
            .get(&(id.to_owned(), partition, offset))
            .cloned()?;
        let sub = s.subscriptions.get(id).cloned()?;
        Some((letter, sub))
    });
    let Some((letter, sub)) = found else {
        return Err(ApiError::not_found(format!(
            "no dead letter {id}/{partition}/{offset} of a current subscription"
        )));
    };
    if !state.broker().offsets_global(&letter.topic) {
        return Err(ApiError::conflict(format!(
            "the broker of `{}` cannot replay messages: the dead letter records the failure, not the message",
            letter.topic
        )));
    }
    let mut consumer = state
        .broker()
        .consumer(
            &letter.topic,
            partition,
            eventgate_actors::broker::StartAt::Offset(offset),
        )
        .await?;
    let messages = consumer.next_batch(1, Duration::from_secs(1)).await?;
    let Some(message) = messages.into_iter().find(|m| m.offset == offset) else {
        return Err(ApiError::not_found(format!(
            "message {partition}/{offset} of `{}` is no longer retained by the broker",
            letter.topic
        )));
    };
    let ctx = &state.inner.delivery;
    match eventgate_actors::subscription::deliver_once(ctx, &sub, &message, letter.attempts + 1)
        .await
    {
        Ok(()) => {
            state
                .control()
                .write(Command::RemoveDeadLetter {
                    id: id.to_owned(),
                    partition,
                    offset,
                })
                .await?;
            Ok(())
        }
        Err(error) => Err(ApiError::bad_gateway(format!(
            "callback still failing: {error}"
        ))),
    }
}
