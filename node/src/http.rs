//! The HTTP edge: the entrypoints (webhook receiver, WebSub hub, WebSocket, SSE) as thin
//! adapters over [`crate::ingress`], health and readiness probes, metrics, AsyncAPI documents
//! and the admin API. Handlers answer errors as problem+json through [`error::ApiError`]; a
//! [`crate::refusal::Refusal`] becomes one through its single `From` conversion.

pub mod access;
pub mod admin;
pub mod clients;
pub mod error;
pub mod health;
pub mod listener;
pub mod manage;
pub mod oauth2;
pub mod openapi;
pub mod serve;
pub mod sse;
pub mod stream;
pub mod webhook;
pub mod websub;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use eventgate_actors::broker::BrokerDriver;
use eventgate_actors::stream::connection::Connections;
use eventgate_actors::stream::topic::TopicRegistry;
use eventgate_actors::stream::StreamSettings;
use eventgate_actors::subscription::DeliveryContext;
use eventgate_raft_store::control::ControlPlane;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use error::ApiError;
use listener::Peer;

/// The node's running parts that handlers use besides the control plane and the broker.
#[derive(Debug, Clone)]
pub struct Services {
    pub topics: TopicRegistry,
    pub connections: Connections,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub gate: crate::policy::Gatekeeper,
    pub limiter: crate::limits::Limiter,
    /// Set once the configuration's APIs, plans and applications are in the replicated state
    /// (`/readyz` waits for it while the cluster has a quorum).
    pub declared: Arc<std::sync::atomic::AtomicBool>,
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    control: ControlPlane,
    broker: Arc<dyn BrokerDriver>,
    pub(crate) delivery: DeliveryContext,
    websub: crate::config::WebsubSettings,
    webhook_max_body_bytes: usize,
    idempotency: crate::config::IdempotencySettings,
    body_timeout: Duration,
    admin_token: Option<String>,
    ready_max_lag: u64,
    /// The configuration's API management is applied (see [`Services::declared`]).
    declared: Arc<std::sync::atomic::AtomicBool>,
    quorum_ack_limit: Duration,
    handover_timeout: Duration,
    shutdown: CancellationToken,
    topics: TopicRegistry,
    connections: Connections,
    streams: StreamSettings,
    allowed_origins: Option<Vec<String>>,
    /// Whether WebSocket clients may publish at all (`streams.allow_publish`).
    ws_allow_publish: bool,
    gate: crate::policy::Gatekeeper,
    limiter: crate::limits::Limiter,
    ingress: crate::ingress::Ingress,
    metrics: Arc<crate::metrics::Metrics>,
    /// What the AsyncAPI documents are generated from.
    asyncapi: crate::asyncapi::Source,
    /// OAuth2 access tokens.
    tokens: Arc<crate::oauth2::TokenService>,
    /// The developer portal's settings.
    portal: crate::config::PortalSettings,
    /// Sign-in attempts on the portal, per address and per email.
    portal_attempts: crate::portal::accounts::Attempts,
    /// Whether requests are logged (`log.access`).
    access_log: bool,
}

impl AppState {
    pub fn new(
        control: ControlPlane,
        broker: Arc<dyn BrokerDriver>,
        delivery: DeliveryContext,
        config: &NodeConfig,
        shutdown: CancellationToken,
        services: Services,
    ) -> Self {
        let Services {
            topics,
            connections,
            metrics,
            gate,
            limiter,
            declared,
        } = services;
        let asyncapi = crate::asyncapi::Source::new(config, &delivery.public_url);
        let tokens = Arc::new(crate::oauth2::TokenService::new(
            config.auth.oauth2.clone(),
            &delivery.public_url,
            delivery.secrets.clone(),
        ));
        let ingress = crate::ingress::Ingress::new(
            broker.clone(),
            gate.clone(),
            limiter.clone(),
            metrics.clone(),
            config.topics_auto_create,
        );
        Self {
            inner: Arc::new(Inner {
                control,
                broker,
                delivery,
                websub: config.websub.clone(),
                webhook_max_body_bytes: config.webhook_max_body_bytes,
                idempotency: config.idempotency,
                body_timeout: config.body_timeout,
                admin_token: config.admin_token.clone(),
                ready_max_lag: config.raft.ready_max_lag,
                declared,
                quorum_ack_limit: config.raft.election_timeout_max * 2,
                handover_timeout: config.handover_timeout,
                shutdown,
                topics,
                connections,
                streams: config.streams.clone(),
                allowed_origins: config.streams_allowed_origins.clone(),
                asyncapi,
                tokens,
                portal: config.portal.clone(),
                portal_attempts: Default::default(),
                ws_allow_publish: config.streams_allow_publish,
                gate,
                limiter,
                ingress,
                metrics,
                access_log: config.log_access,
            }),
        }
    }

    pub fn control(&self) -> &ControlPlane {
        &self.inner.control
    }

    /// The delivery ledger of WebSub attempts.
    pub fn ledger(&self) -> &eventgate_actors::ledger::Ledger {
        &self.inner.delivery.ledger
    }

    pub fn broker(&self) -> &Arc<dyn BrokerDriver> {
        &self.inner.broker
    }

    /// This node's streaming connections.
    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }

    /// This node's topic consumptions.
    pub fn topics(&self) -> &TopicRegistry {
        &self.inner.topics
    }
}

/// The node's HTTP routes.
pub fn router(state: AppState) -> Router {
    let admin = admin::router()
        .merge(manage::router())
        .merge(clients::router())
        .merge(crate::portal::accounts::admin_router())
        .merge(crate::portal::invitations::admin_router())
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/readyz/control", get(health::readyz_control))
        .route("/metrics", get(metrics))
        .route("/asyncapi.json", get(asyncapi_json))
        .route("/asyncapi.yaml", get(asyncapi_yaml))
        .route("/apis/{name}/asyncapi.json", get(api_asyncapi_json))
        .route("/apis/{name}/asyncapi.yaml", get(api_asyncapi_yaml))
        .route(
            "/webhook-receiver",
            // OPTIONS is a route of its own so that the CORS layer sees the preflight (the
            // layer wraps routes, not the method-not-allowed fallback).
            post(webhook::receive)
                .options(|| async { axum::http::StatusCode::NO_CONTENT })
                .layer(webhook_cors(state.allowed_origins())),
        )
        .route("/hub", post(websub::hub))
        .route("/topics/{name}", get(websub::topic))
        .route("/ws/{topic}", get(ws::ws))
        .route("/sse/{topic}", get(sse::sse))
        .route("/oauth2/token", post(oauth2::token))
        .route("/.well-known/jwks.json", get(oauth2::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth2::metadata),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .nest("/admin", admin);
    let routes = if state.portal().enabled {
        routes.merge(crate::portal::router(&state.portal().path, &state))
    } else {
        routes
    };
    let routes = routes.with_state(state.clone());
    let inner = routes.clone();
    let observed = state.clone();
    routes
        .fallback(move |req: Request| by_base_path(state.clone(), inner.clone(), req))
        .layer(middleware::from_fn_with_state(observed, access::observe))
}

/// CORS of the webhook receiver, for publishing from a browser on another origin: the
/// preflight is answered for the origins of `streams.allowed_origins` (any when `*`), `POST`,
/// and the headers a publish carries.
fn webhook_cors(origins: Option<&[String]>) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([Method::POST])
        .allow_headers(
            [
                "content-type",
                "authorization",
                "x-api-key",
                "idempotency-key",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "x-hub-signature-256",
                "x-request-id",
            ]
            .map(HeaderName::from_static),
        )
        .expose_headers(
            [
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "ratelimit-policy",
                "x-request-id",
            ]
            .map(HeaderName::from_static),
        )
        .max_age(Duration::from_secs(600));
    match origins {
        None => layer.allow_origin(Any),
        Some(list) => layer.allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| o.parse().ok()),
        )),
    }
}

/// An API reached through its base path: its name, base path and the channel named.
#[derive(Debug, Clone)]
pub struct ViaApi {
    pub api: String,
    pub base_path: String,
    pub channel: String,
}

impl ViaApi {
    /// The extension as handlers take it: what the gatekeeper restricts a request to.
    pub fn api_of(via: &Option<axum::Extension<ViaApi>>) -> Option<&str> {
        via.as_ref().map(|v| v.0.api.as_str())
    }
}

/// Requests under an API's base path, addressed by channel (`/shop/ws/orders`,
/// `/shop/sse/orders`, `/shop/topics/orders`, `POST /shop/webhook-receiver?topic=orders`,
/// `/shop/asyncapi.json`), rewritten to the gateway's own route of the channel's topic with a
/// [`ViaApi`] extension, and answered by `routes`. Anything else: 404 problem+json.
async fn by_base_path(state: AppState, routes: Router, mut req: Request) -> Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    // A stream opened at the base path itself (`ws://host/shop/1.0.0`): WebSocket when it asks
    // for the upgrade, SSE when it accepts event streams.
    let at_base = {
        let headers = req.headers();
        let header_has = |name: axum::http::HeaderName, needle: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains(needle))
        };
        if header_has(axum::http::header::UPGRADE, "websocket") {
            Some("ws")
        } else if header_has(axum::http::header::ACCEPT, "text/event-stream") {
            Some("sse")
        } else {
            None
        }
    };
    let resolved = state.control().reader().read(|s| {
        let (api, rest) = s.governance.api_of_path(&path)?;
        let via = |channel: &str| ViaApi {
            api: api.name.clone(),
            base_path: api.base_path.clone().unwrap_or_default(),
            channel: channel.to_owned(),
        };
        let topic_of = |channel: &str| {
            api.channels.get(channel).cloned().ok_or_else(|| {
                ApiError::not_found(format!("API `{}` has no channel `{channel}`", api.name))
            })
        };
        let with_query = |p: String| match &query {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        let mut parts = rest.trim_start_matches('/').splitn(2, '/');
        Some(match (parts.next().unwrap_or_default(), parts.next()) {
            ("", None) => match at_base {
                None => Err(ApiError::upgrade_required(format!(
                    "API `{}`: open a WebSocket (or an SSE stream, Accept: text/event-stream) here, or use ws/{{channel}}, sse/{{channel}}, webhook-receiver?topic={{channel}}, asyncapi.json",
                    api.name
                ))),
                Some(kind) => {
                    let named = webhook::query_param(query.as_deref(), "channel");
                    let channel = match named {
                        Some(c) => Ok(c),
                        None if api.channels.len() == 1 => {
                            Ok(api.channels.keys().next().cloned().unwrap_or_default())
                        }
                        None => Err(ApiError::invalid_field(
                            "channel",
                            format!(
                                "API `{}` has several channels ({}); name one with ?channel=",
                                api.name,
                                api.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        )),
                    };
                    channel.and_then(|channel| {
                        topic_of(&channel).map(|topic| {
                            (with_query(format!("/{kind}/{topic}")), via(&channel))
                        })
                    })
                }
            },
            (kind @ ("ws" | "sse" | "topics"), Some(channel)) if !channel.contains('/') => {
                topic_of(channel).map(|topic| (with_query(format!("/{kind}/{topic}")), via(channel)))
            }
            ("webhook-receiver", None) => {
                match webhook::query_param(query.as_deref(), "topic") {
                    None => Err(ApiError::invalid_field(
                        "topic",
                        "the query parameter `topic` (a channel of the API) is required",
                    )),
                    Some(channel) => topic_of(&channel).map(|topic| {
                        // The channel's topic in place of the channel, the rest as given.
                        let rewritten: Vec<String> = query
                            .as_deref()
                            .unwrap_or_default()
                            .split('&')
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| match pair.split_once('=') {
                                Some(("topic", _)) => format!("topic={topic}"),
                                _ => pair.to_owned(),
                            })
                            .collect();
                        (
                            format!("/webhook-receiver?{}", rewritten.join("&")),
                            via(&channel),
                        )
                    }),
                }
            }
            (file @ ("asyncapi.json" | "asyncapi.yaml"), None) => {
                Ok((format!("/apis/{}/{file}", api.name), via("")))
            }
            _ => Err(ApiError::not_found(format!(
                "API `{}` (base path `{}`) routes ws/{{channel}}, sse/{{channel}}, topics/{{channel}}, webhook-receiver?topic={{channel}} and asyncapi.json|yaml",
                api.name,
                api.base_path.as_deref().unwrap_or_default()
            ))),
        })
    });
    let (target, via) = match resolved {
        None => {
            return ApiError::not_found(format!("no route for `{path}`")).into_response();
        }
        Some(Err(e)) => return e.into_response(),
        Some(Ok(found)) => found,
    };
    match target.parse::<axum::http::Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return ApiError::invalid_field("path", e.to_string()).into_response(),
    }
    let api = via.api.clone();
    req.extensions_mut().insert(via);
    let mut response = match routes.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // A deprecated API says so on every answer through it: `Deprecation` (RFC 9745, the date
    // it was deprecated) and, when one is set, `Sunset` (RFC 8594, when it will be retired).
    let notice = state.control().reader().read(|s| {
        let api = s.governance.apis.get(&api)?;
        (api.lifecycle == eventgate_raft_store::governance::Lifecycle::Deprecated)
            .then_some((api.lifecycle_since_ms, api.sunset_ms))
    });
    if let Some((since_ms, sunset_ms)) = notice {
        let headers = response.headers_mut();
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("@{}", since_ms / 1000)) {
            headers.insert("deprecation", v);
        }
        if let Some(sunset) = sunset_ms {
            let date = httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(sunset),
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&date) {
                headers.insert("sunset", v);
            }
        }
    }
    response
}

impl AppState {
    fn gateway_asyncapi(&self) -> serde_json::Value {
        let apis: Vec<_> = self.inner.gate.reader().read(|s| {
            // The catalog: only the APIs that admit clients.
            s.governance
                .apis
                .values()
                .filter(|a| a.lifecycle.admits())
                .cloned()
                .collect()
        });
        self.inner.asyncapi.gateway(&apis)
    }

    fn api_asyncapi(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        self.api_asyncapi_in(name, false)
    }

    /// An API's document; `any_state`: also of an API that admits nobody (the admin API's
    /// preview and export of a created or retired API).
    pub fn api_asyncapi_in(
        &self,
        name: &str,
        any_state: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let api = self
            .inner
            .gate
            .reader()
            .read(|s| s.governance.apis.get(name).cloned())
            .filter(|a| any_state || a.lifecycle.admits())
            .ok_or_else(|| {
                ApiError::not_found(if any_state {
                    format!("no API `{name}`")
                } else {
                    format!("no published API `{name}`")
                })
            })?;
        Ok(self.inner.asyncapi.api(&api))
    }

    /// The gatekeeper: who may do what.
    pub fn gate(&self) -> &crate::policy::Gatekeeper {
        &self.inner.gate
    }

    /// The node's rate and connection limiter.
    pub fn limiter(&self) -> &crate::limits::Limiter {
        &self.inner.limiter
    }

    /// The operations every entrypoint shares.
    pub fn ingress(&self) -> &crate::ingress::Ingress {
        &self.inner.ingress
    }

    /// Origins admitted to streams and browser publishing; `None` admits any.
    pub fn allowed_origins(&self) -> Option<&[String]> {
        self.inner.allowed_origins.as_deref()
    }

    /// Whether requests are logged (`log.access`).
    pub fn access_log(&self) -> bool {
        self.inner.access_log
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub fn portal(&self) -> &crate::config::PortalSettings {
        &self.inner.portal
    }

    pub fn portal_attempts(&self) -> &crate::portal::accounts::Attempts {
        &self.inner.portal_attempts
    }

    /// The gateway's base URL as clients see it (`http.public_url`, or the node's own).
    /// `admin.token`, if configured: it also signs an operator into the portal as an
    /// administrator.
    pub fn admin_token(&self) -> Option<&str> {
        self.inner.admin_token.as_deref()
    }

    pub fn public_url(&self) -> &str {
        &self.inner.delivery.public_url
    }

    pub fn tokens(&self) -> &crate::oauth2::TokenService {
        &self.inner.tokens
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110, 11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The request's credential: `Authorization`, else `X-API-Key`, else the `access_token` query
/// parameter (browsers cannot set headers on `EventSource` or `WebSocket`).
pub fn credential(
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Option<crate::policy::Credential> {
    use crate::policy::Credential;
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(match bearer(value) {
            Some(token) => Credential::Bearer(token.to_owned()),
            None => Credential::Other(value.to_owned()),
        });
    }
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Credential::ApiKey(key.trim().to_owned()));
    }
    webhook::query_param(query, "access_token")
        .filter(|t| !t.is_empty())
        .map(Credential::Bearer)
}

pub fn yaml_response(document: &serde_json::Value) -> Response {
    let mut response = Response::new(axum::body::Body::from(crate::asyncapi::to_yaml(document)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/yaml"),
    );
    response
}

/// `GET /asyncapi.json`: the AsyncAPI 3.0 document of this gateway.
async fn asyncapi_json(State(state): State<AppState>) -> Response {
    axum::response::IntoResponse::into_response(axum::Json(state.gateway_asyncapi()))
}

/// `GET /asyncapi.yaml`: the same document as YAML.
async fn asyncapi_yaml(State(state): State<AppState>) -> Response {
    yaml_response(&state.gateway_asyncapi())
}

/// `GET /apis/{name}/asyncapi.json`: one API's AsyncAPI 3.0 document.
async fn api_asyncapi_json(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let doc = state.api_asyncapi(&name)?;
    Ok(axum::response::IntoResponse::into_response(axum::Json(doc)))
}

/// `GET /apis/{name}/asyncapi.yaml`.
async fn api_asyncapi_yaml(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    Ok(yaml_response(&state.api_asyncapi(&name)?))
}

/// `GET /metrics`: OpenMetrics text.
async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.inner.metrics;
    m.stream_connections
        .set(state.inner.connections.active() as i64);
    let topics = state.inner.topics.topics().await;
    m.topic_consumptions.set(topics.len() as i64);
    m.stream_readers
        .set(topics.iter().map(|t| t.readers as i64).sum());
    let status = state.inner.control.local_status();
    m.raft_leader
        .set(i64::from(status.leader == Some(status.id)));
    m.raft_term.set(status.term as i64);
    m.raft_applied_index
        .set(status.applied_index.unwrap_or(0) as i64);
    m.raft_leader_id.set(status.leader.unwrap_or(0) as i64);
    m.raft_last_log_index
        .set(status.last_log_index.unwrap_or(0) as i64);
    let (mut ws, mut sse) = (0i64, 0i64);
    for c in state.inner.connections.list() {
        match c.protocol {
            "sse" => sse += 1,
            _ => ws += 1,
        }
    }
    for (entrypoint, n) in [("websocket", ws), ("sse", sse)] {
        m.connections
            .get_or_create(&crate::metrics::EntrypointLabel { entrypoint })
            .set(n);
    }
    let (total, most) = websub_lag(&state).await;
    m.websub_lag.set(total as i64);
    m.websub_lag_max.set(most as i64);
    let consumed = topics
        .into_iter()
        .map(|t| {
            let positions = (0u32..).zip(t.positions).collect();
            (t.topic, positions)
        })
        .collect();
    let (total, most) = lag(&state, consumed).await;
    m.stream_lag.set(total as i64);
    m.stream_lag_max.set(most as i64);
    let mut response = Response::new(axum::body::Body::from(m.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

/// The WebSub subscriptions this node delivers: messages behind (the broker's end offset minus
/// the committed cursor, over their partitions), in all and at most for one.
async fn websub_lag(state: &AppState) -> (u64, u64) {
    let me = state.inner.control.node_id();
    let owned: Vec<(String, std::collections::BTreeMap<u32, u64>)> =
        state.inner.control.reader().read(|s| {
            s.subscriptions
                .values()
                .filter(|sub| sub.owner == Some(me))
                .map(|sub| {
                    (
                        sub.topic.clone(),
                        s.cursors.get(&sub.id).cloned().unwrap_or_default(),
                    )
                })
                .collect()
        });
    lag(state, owned).await
}

/// Messages behind the broker's end for readers at `positions` (topic, next offset per
/// partition), in all and at most for one reader. Topics whose offsets are not global (MQTT:
/// the broker holds the backlog in the session) and topics the broker does not answer for
/// within a second count nothing.
async fn lag(
    state: &AppState,
    owned: Vec<(String, std::collections::BTreeMap<u32, u64>)>,
) -> (u64, u64) {
    use std::collections::HashMap;
    let broker = state.broker();
    let mut ends: HashMap<String, Option<HashMap<u32, u64>>> = HashMap::new();
    let (mut total, mut most) = (0u64, 0u64);
    for (topic, cursor) in owned {
        if !ends.contains_key(&topic) {
            let end = if broker.offsets_global(&topic) {
                tokio::time::timeout(Duration::from_secs(1), broker.latest_offsets(&topic))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|v| v.into_iter().collect())
            } else {
                None
            };
            ends.insert(topic.clone(), end);
        }
        let Some(Some(end)) = ends.get(&topic) else {
            continue;
        };
        let lag: u64 = end
            .iter()
            .map(|(p, e)| e.saturating_sub(cursor.get(p).copied().unwrap_or(*e)))
            .sum();
        total += lag;
        most = most.max(lag);
    }
    (total, most)
}

/// A 405 as every other error: problem+json (axum adds `Allow`).
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::method_not_allowed(&method)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin API needs `Authorization: Bearer <admin.token>`; with no token configured it
/// answers loopback clients only.
async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &state.inner.admin_token {
        Some(token) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            match presented {
                Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => {}
                Some(_) => return Err(ApiError::unauthorized("wrong admin token")),
                None => {
                    return Err(ApiError::unauthorized(
                        "the admin API needs `Authorization: Bearer <admin token>`",
                    ))
                }
            }
        }
        None if !peer.addr.ip().is_loopback() => {
            return Err(ApiError::forbidden(
                "no admin.token is configured, so the admin API answers loopback clients only",
            ))
        }
        None => {
            // Loopback is not enough: a web page in a browser on this machine is a loopback
            // client too. It sends `Origin` (refused), and through DNS rebinding it reaches us
            // under a name of its own (only loopback `Host`s are answered).
            if let Some(origin) = request.headers().get(header::ORIGIN) {
                return Err(ApiError::forbidden(format!(
                    "no admin.token is configured: requests from web pages (Origin {}) are refused",
                    origin.to_str().unwrap_or("?")
                )));
            }
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            if !is_loopback_host(host) {
                return Err(ApiError::forbidden(format!(
                    "no admin.token is configured: only requests addressed to a loopback name are answered, not Host `{host}`"
                )));
            }
        }
    }
    Ok(next.run(request).await)
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`),
/// with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JSON body whose errors are problem+json naming the field at fault.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::unsupported_media_type(
                "expected a JSON body with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::malformed_body(e.to_string()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses an optional JSON body: empty (or only whitespace) is `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

/// Parses a JSON document; errors name the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            // Missing fields are reported at the parent; serde names them itself.
            let text = inner.to_string();
            match text.split('`').nth(1) {
                Some(field) if text.starts_with("missing field") => {
                    ApiError::invalid_field(field, text.clone())
                }
                _ => ApiError::malformed_body(text),
            }
        } else {
            ApiError::invalid_field(path, inner.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Admin JSON bodies, whatever they hold, parse or fail with a problem naming a field;
        /// never a panic.
        #[test]
        fn arbitrary_admin_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_json::<eventgate_raft_store::governance::Api>(&bytes);
            let _ = parse_json::<serde_json::Value>(&bytes);
        }

        #[test]
        fn authorization_values_never_panic(value in "\\PC{0,40}") {
            let _ = bearer(&value);
            let _ = is_loopback_host(&value);
        }
    }
}
