//! `GET /ws/{topic}` and `GET /sse/{topic}`: a topic as a WebSocket or a Server-Sent Events
//! stream.
//!
//! Both start where the client asks (`Last-Event-ID` header, else `lastEventId`, else `from` =
//! `latest` (default) | `earliest` | a resume token) and read through a [`Feed`]: catch-up from
//! the broker, then the topic's live ring. Every message is one WebSocket frame (text for text
//! content types, binary otherwise) or one SSE event whose `id:` is its resume token;
//! `envelope=json` wraps each in a JSON document with its metadata. Each connection runs on
//! its own task, registered in `Connections`; when the server ends a stream it says why: a close frame with a
//! documented code, or a final SSE `close` event.
//!
//! The write path takes what the feed has ready, feeds every frame (shared bytes, no per-client
//! copy) and flushes once; SSE leaves the coalescing to hyper, which writes whatever the body
//! yields before it waits in one go.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use eventgate_actors::broker::{validate_topic_name, BrokerError, OutgoingMessage};
use eventgate_actors::stream::connection::{ConnectionInfo, Session, CLOSE_GRACE};
use eventgate_actors::stream::feed::{Chunk, Feed, FeedError, Start};
use eventgate_actors::stream::frame::{sse_control, Frame};
use eventgate_actors::stream::topic::StreamError;
use eventgate_actors::stream::CloseReason;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::error::ApiError;
use super::webhook::query_param;
use super::AppState;
use crate::limits::{ConnectionSlot, Limiter};
use crate::listener::Peer;
use crate::policy::{Action, Admission, Credential, Principal, Target};
use eventgate_raft_store::governance::{Entrypoint, OverLimit, QuotaKind, RateLimit};

/// Frame extension slots (see `Frame::ext`).
const SLOT_WS_TEXT: usize = 0;
const SLOT_WS_ENVELOPE: usize = 1;

/// Bytes fed to a WebSocket before a flush even if more is ready.
const WS_FLUSH_BYTES: usize = 256 * 1024;

/// Read buffer of a WebSocket: small, most clients only read.
const WS_READ_BUFFER: usize = 4096;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A checked request to stream a topic.
struct Prepared {
    /// The `Access-Control-Allow-Origin` to answer (SSE).
    allow_origin: Option<HeaderValue>,
    feed: Feed,
    info: ConnectionInfo,
    envelope: bool,
    /// What WebSocket frames from the client may be published under, if at all.
    publish: Option<Admission>,
    /// Who is reading, when known.
    principal: Option<Principal>,
    /// The API the client came through (its base path), if any.
    api: Option<String>,
    entrypoint: Entrypoint,
    slot: Option<ConnectionSlot>,
    budget: Option<DeliveryBudget>,
}

/// A stream's deliveries counted against its application's plan.
struct DeliveryBudget {
    limiter: Limiter,
    app: String,
    api: String,
    rate: RateLimit,
    mode: OverLimit,
}

impl DeliveryBudget {
    /// How many of the next `n` frames go out: all of them once the quota allows (pausing
    /// until the next window meanwhile), or, when the plan drops, those the quota allows now.
    async fn admit(&self, n: usize, session: &Session) -> Result<usize, CloseReason> {
        let mut granted = 0u64;
        let mut noted = false;
        loop {
            let want = n as u64 - granted;
            let (taken, status) = self
                .limiter
                .take_up_to(&self.app, &self.api, QuotaKind::Deliveries, self.rate, want)
                .await
                .map_err(|_| CloseReason::TryAgainLater)?;
            granted += taken;
            if granted == n as u64 {
                return Ok(n);
            }
            if !noted {
                self.limiter.note_limited("deliveries");
                noted = true;
            }
            if self.mode == OverLimit::Drop {
                return Ok(granted as usize);
            }
            let wait = Duration::from_millis(status.reset_ms.max(10));
            tokio::select! {
                () = session.closed() => return Err(session.reason()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Ends the stream of `session` when its credential expires or its rights are withdrawn.
fn watch_credentials(
    state: &AppState,
    principal: Principal,
    topic: String,
    api: Option<String>,
    entrypoint: Entrypoint,
    session: Session,
) {
    let gate = state.gate().clone();
    let mut changes = gate.changes();
    tokio::spawn(async move {
        loop {
            let expiry = principal
                .expires_at_ms
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
            tokio::select! {
                () = session.closed() => return,
                changed = changes.changed() => if changed.is_err() { return },
                () = async {
                    match expiry {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            if let Err(e) = gate.recheck(
                &principal,
                Target {
                    topic: &topic,
                    api: api.as_deref(),
                },
                Action::Subscribe,
                entrypoint,
            ) {
                let expired = principal.expires_at_ms.is_some_and(|t| t <= now_ms());
                let reason = if expired {
                    CloseReason::CredentialExpired
                } else {
                    CloseReason::CredentialRevoked
                };
                tracing::info!(app = %principal.app, %topic, reason = reason.name(), detail = %e.detail, "ending a stream");
                session.close(reason);
                return;
            }
        }
    });
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

async fn prepare(
    state: &AppState,
    topic: String,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: &Peer,
    protocol: &'static str,
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
    let envelope = match query_param(query, "envelope").as_deref() {
        None | Some("none") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "envelope",
                format!("`{other}` is not one of json, none"),
            ))
        }
    };
    let start = start_of(headers, query)?;
    let credential = Credential::from_request(headers, query_param(query, "access_token"));
    let entrypoint = if protocol == "sse" {
        Entrypoint::Sse
    } else {
        Entrypoint::Websocket
    };
    let gate = state.gate();
    let admission = gate
        .admit(
            credential.as_ref(),
            Target {
                topic: &topic,
                api: api.as_deref(),
            },
            Action::Subscribe,
            entrypoint,
        )
        .await
        .map_err(|e| state.refused(entrypoint.name(), e))?;
    // The same principal, once authenticated, asked about publishing too.
    let publish = if entrypoint == Entrypoint::Websocket && state.inner.ws_allow_publish {
        gate.authorize(
            admission.principal.clone(),
            credential.is_some(),
            Target {
                topic: &topic,
                api: api.as_deref(),
            },
            Action::Publish,
            entrypoint,
        )
        .ok()
    } else {
        None
    };
    let (slot, budget) = match (&admission.principal, &admission.grant) {
        (Some(p), Some(grant)) => {
            let slot = grant
                .plan
                .max_connections
                .map(|max| state.limiter().open_connection(&p.app, &grant.api, max))
                .transpose()?;
            let budget = grant.plan.deliveries.map(|rate| DeliveryBudget {
                limiter: state.limiter().clone(),
                app: p.app.clone(),
                api: grant.api.clone(),
                rate,
                mode: grant.plan.on_delivery_limit,
            });
            (slot, budget)
        }
        _ => (None, None),
    };
    let broker = state.broker();
    if !broker.topic_exists(&topic).await? {
        if !state.inner.topics_auto_create {
            return Err(ApiError::topic_not_found(&topic));
        }
        broker.ensure_topic(&topic).await?;
    }
    let connections = &state.inner.connections;
    let Some(id) = connections.reserve() else {
        return Err(ApiError::too_many_connections(
            state.inner.streams.max_connections,
        ));
    };
    let feed = match Feed::open(
        &state.inner.topics,
        broker.clone(),
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
                FeedError::Stream(StreamError::Stopping) => {
                    ApiError::not_ready("the node is stopping")
                }
            });
        }
    };
    Ok(Prepared {
        allow_origin,
        feed,
        info: ConnectionInfo {
            id,
            topic,
            protocol,
            peer: peer.addr.to_string(),
            principal: admission.principal.as_ref().map(|p| p.app.clone()),
            opened_ms: now_ms(),
        },
        envelope,
        publish,
        principal: admission.principal,
        api,
        entrypoint,
        slot,
        budget,
    })
}

/// `GET /ws/{topic}`.
pub async fn ws(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<Peer>,
    via: Option<axum::Extension<super::ViaApi>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| ApiError::upgrade_required(e.body_text()))?;
    let prepared = prepare(
        &state,
        topic,
        query.as_deref(),
        &headers,
        &peer,
        "websocket",
        super::ViaApi::api_of(&via).map(str::to_owned),
    )
    .await?;
    let settings = &state.inner.streams;
    let connections = state.inner.connections.clone();
    let on_failure = connections.clone();
    let watch = prepared.principal.clone().map(|p| {
        (
            p,
            prepared.info.topic.clone(),
            prepared.api.clone(),
            prepared.entrypoint,
        )
    });
    let ctx = WsContext {
        state: state.clone(),
        topic: prepared.info.topic.clone(),
        envelope: prepared.envelope,
        publish: prepared.publish,
        send_timeout: settings.send_timeout,
        heartbeat: settings.heartbeat,
        budget: prepared.budget,
        session: Session::default(),
        out: crate::metrics::Metrics::counter(&state.inner.metrics.messages_out, "websocket"),
        into: crate::metrics::Metrics::counter(&state.inner.metrics.messages_in, "websocket"),
        _slot: prepared.slot,
    };
    let feed = prepared.feed;
    let info = prepared.info;
    Ok(upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_FLUSH_BYTES)
        .max_message_size(settings.max_publish_bytes)
        .max_frame_size(settings.max_publish_bytes)
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "websocket upgrade failed");
            on_failure.release();
        })
        .on_upgrade(move |socket| async move {
            let session = ctx.session.clone();
            if let Some((principal, topic, api, entrypoint)) = watch {
                watch_credentials(
                    &ctx.state,
                    principal,
                    topic,
                    api,
                    entrypoint,
                    session.clone(),
                );
            }
            let io = run_ws(socket, feed, session.clone(), ctx);
            connections.open(info, session, Box::pin(io));
        }))
}

struct WsContext {
    state: AppState,
    topic: String,
    envelope: bool,
    /// What frames from the client are published under; `None`: they may not publish.
    publish: Option<Admission>,
    send_timeout: Duration,
    heartbeat: Duration,
    budget: Option<DeliveryBudget>,
    session: Session,
    /// `eventgate_messages_out_total{entrypoint="websocket"}`.
    out: prometheus_client::metrics::counter::Counter,
    /// `eventgate_messages_in_total{entrypoint="websocket"}`.
    into: prometheus_client::metrics::counter::Counter,
    /// Held while the connection lives.
    _slot: Option<ConnectionSlot>,
}

/// How a WebSocket loop ended.
enum WsEnd {
    /// Send this close frame.
    Close(CloseReason),
    /// The client closed (its close was answered) or the connection broke.
    Gone,
}

async fn run_ws(mut socket: WebSocket, mut feed: Feed, session: Session, ctx: WsContext) {
    let end = ws_loop(&mut socket, &mut feed, &session, &ctx).await;
    if let WsEnd::Close(reason) = end {
        if reason != CloseReason::GoingAway {
            tracing::debug!(topic = %ctx.topic, reason = reason.name(), "closing websocket");
        }
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.name()),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Message::Close(Some(frame)))).await;
    }
    // Dropping the socket closes the connection.
}

fn ws_message(frame: &Frame, envelope: bool) -> Message {
    if envelope {
        return Message::Text(frame.ext(SLOT_WS_ENVELOPE, |f| {
            Utf8Bytes::try_from(f.envelope().clone()).unwrap_or_default()
        }));
    }
    if frame.is_text() {
        Message::Text(frame.ext(SLOT_WS_TEXT, |f| {
            Utf8Bytes::try_from(f.payload.clone()).unwrap_or_default()
        }))
    } else {
        Message::Binary(frame.payload.clone())
    }
}

fn gap_message(missed: Option<u64>) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::json!({ "type": "gap", "missed": missed }).to_string(),
    ))
}

async fn ws_loop(
    socket: &mut WebSocket,
    feed: &mut Feed,
    session: &Session,
    ctx: &WsContext,
) -> WsEnd {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + ctx.heartbeat, ctx.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut closed = std::pin::pin!(session.closed());
    loop {
        if let Err(end) = write_ready(socket, feed, ctx).await {
            return end;
        }
        tokio::select! {
            biased;
            () = closed.as_mut() => return WsEnd::Close(session.reason()),
            ready = feed.wait() => {
                if let Err(reason) = ready {
                    return WsEnd::Close(reason);
                }
            }
            incoming = socket.next() => {
                last_heard = Instant::now();
                match incoming {
                    None => return WsEnd::Gone,
                    Some(Err(e)) => return read_error(e),
                    Some(Ok(message)) => {
                        if let Err(end) = on_incoming(socket, message, ctx).await {
                            return end;
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > ctx.heartbeat * 2 + ctx.heartbeat / 2 {
                    return WsEnd::Close(CloseReason::PingTimeout);
                }
                let sent = tokio::time::timeout(ctx.send_timeout, socket.send(Message::Ping(Bytes::new()))).await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return WsEnd::Gone,
                    Err(_) => return WsEnd::Close(CloseReason::SlowConsumer),
                }
            }
        }
    }
}

fn read_error(e: axum::Error) -> WsEnd {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.into_inner().downcast::<WsError>() {
        Ok(e) if matches!(*e, WsError::Capacity(_)) => WsEnd::Close(CloseReason::TooBig),
        Ok(e) if matches!(*e, WsError::Protocol(_) | WsError::Utf8(_)) => {
            WsEnd::Close(CloseReason::PolicyViolation)
        }
        _ => WsEnd::Gone,
    }
}

/// A frame from the client: published to the topic when allowed.
async fn on_incoming(
    socket: &mut WebSocket,
    message: Message,
    ctx: &WsContext,
) -> Result<(), WsEnd> {
    let (payload, content_type) = match message {
        Message::Text(text) => (Bytes::from(text), "text/plain; charset=utf-8"),
        Message::Binary(data) => (data, "application/octet-stream"),
        Message::Ping(_) | Message::Pong(_) => {
            // Pongs to pings are queued by the protocol layer: send them now.
            return flush(socket, ctx).await;
        }
        Message::Close(_) => {
            // The protocol layer answers the close; flush it and stop.
            let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
            return Err(WsEnd::Gone);
        }
    };
    let Some(admission) = &ctx.publish else {
        return Err(WsEnd::Close(CloseReason::PolicyViolation));
    };
    if admission
        .max_message_bytes
        .is_some_and(|max| payload.len() as u64 > max)
    {
        return Err(WsEnd::Close(CloseReason::TooBig));
    }
    if let (Some(p), Some(grant)) = (&admission.principal, &admission.grant) {
        if let Some(rate) = grant.plan.publish {
            match ctx
                .state
                .limiter()
                .take_one(&p.app, &grant.api, QuotaKind::Publish, rate)
                .await
            {
                Ok(_) => {}
                Err(e) if e.status.as_u16() == 429 && ctx.envelope => {
                    // The frame is not published; the client is told and may retry later.
                    let nack = serde_json::json!({
                        "type": "nack",
                        "reason": "rate-limited",
                        "retry_after": e.retry_after,
                    });
                    return send_text(socket, nack.to_string(), ctx).await;
                }
                Err(e) if e.status.as_u16() == 429 => {
                    return Err(WsEnd::Close(CloseReason::RateLimited))
                }
                Err(_) => return Err(WsEnd::Close(CloseReason::TryAgainLater)),
            }
        }
    }
    let published = ctx
        .state
        .broker()
        .publish(
            &ctx.topic,
            OutgoingMessage {
                key: None,
                headers: Vec::new(),
                content_type: Some(content_type.to_owned()),
                payload,
            },
        )
        .await;
    match published {
        Ok(position) => {
            ctx.into.inc();
            if ctx.envelope {
                let ack = match position {
                    Some(position) => serde_json::json!({
                        "type": "ack",
                        "partition": position.partition,
                        "offset": position.offset,
                    }),
                    // MQTT does not number messages.
                    None => serde_json::json!({ "type": "ack" }),
                };
                let sent = tokio::time::timeout(
                    ctx.send_timeout,
                    socket.send(Message::Text(Utf8Bytes::from(ack.to_string()))),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(WsEnd::Gone),
                    Err(_) => return Err(WsEnd::Close(CloseReason::SlowConsumer)),
                }
            }
            Ok(())
        }
        Err(BrokerError::MessageTooLarge { .. }) => Err(WsEnd::Close(CloseReason::TooBig)),
        Err(e) if e.is_retryable() => {
            tracing::warn!(topic = %ctx.topic, error = %e, "websocket publish: broker unavailable");
            Err(WsEnd::Close(CloseReason::TryAgainLater))
        }
        Err(e) => {
            tracing::warn!(topic = %ctx.topic, error = %e, "websocket publish failed");
            Err(WsEnd::Close(CloseReason::InternalError))
        }
    }
}

async fn send_text(socket: &mut WebSocket, text: String, ctx: &WsContext) -> Result<(), WsEnd> {
    match tokio::time::timeout(
        ctx.send_timeout,
        socket.send(Message::Text(Utf8Bytes::from(text))),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WsEnd::Gone),
        Err(_) => Err(WsEnd::Close(CloseReason::SlowConsumer)),
    }
}

async fn flush(socket: &mut WebSocket, ctx: &WsContext) -> Result<(), WsEnd> {
    match tokio::time::timeout(ctx.send_timeout, socket.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WsEnd::Gone),
        Err(_) => Err(WsEnd::Close(CloseReason::SlowConsumer)),
    }
}

/// Feeds everything the feed has ready, flushing every [`WS_FLUSH_BYTES`] and at the end.
async fn write_ready(
    socket: &mut WebSocket,
    feed: &mut Feed,
    ctx: &WsContext,
) -> Result<(), WsEnd> {
    let mut fed = 0usize;
    let mut any = false;
    let mut deadline = Instant::now() + ctx.send_timeout;
    loop {
        let chunk = match feed.next_ready().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(reason) => {
                // Deliver what was fed before saying why the stream ends.
                if any {
                    flush(socket, ctx).await?;
                }
                return Err(WsEnd::Close(reason));
            }
        };
        if let Chunk::Gap { missed } = chunk {
            feed_one(socket, gap_message(missed), deadline).await?;
            any = true;
            continue;
        }
        let frames = chunk.frames();
        let allowed = match &ctx.budget {
            None => frames.len(),
            Some(budget) => {
                if any {
                    // Whatever waits for quota, what was fed goes out first.
                    flush(socket, ctx).await?;
                    any = false;
                    fed = 0;
                }
                let allowed = budget
                    .admit(frames.len(), &ctx.session)
                    .await
                    .map_err(WsEnd::Close)?;
                deadline = Instant::now() + ctx.send_timeout;
                allowed
            }
        };
        for frame in &frames[..allowed] {
            feed_one(socket, ws_message(frame, ctx.envelope), deadline).await?;
            fed += frame.payload.len();
            any = true;
        }
        ctx.out.inc_by(allowed as u64);
        if allowed < frames.len() {
            let missed = (frames.len() - allowed) as u64;
            feed_one(socket, gap_message(Some(missed)), deadline).await?;
            any = true;
        }
        if fed >= WS_FLUSH_BYTES {
            flush(socket, ctx).await?;
            fed = 0;
            any = false;
            deadline = Instant::now() + ctx.send_timeout;
        }
    }
    if any {
        flush(socket, ctx).await?;
    }
    Ok(())
}

async fn feed_one(
    socket: &mut WebSocket,
    message: Message,
    deadline: Instant,
) -> Result<(), WsEnd> {
    match tokio::time::timeout_at(deadline, socket.feed(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WsEnd::Gone),
        Err(_) => Err(WsEnd::Close(CloseReason::SlowConsumer)),
    }
}

/// `GET /sse/{topic}`.
pub async fn sse(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<Peer>,
    via: Option<axum::Extension<super::ViaApi>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let prepared = prepare(
        &state,
        topic,
        query.as_deref(),
        &headers,
        &peer,
        "sse",
        super::ViaApi::api_of(&via).map(str::to_owned),
    )
    .await?;
    let allow_origin = prepared.allow_origin.clone();
    let settings = state.inner.streams.clone();
    let session = Session::default();
    if let Some(principal) = prepared.principal.clone() {
        watch_credentials(
            &state,
            principal,
            prepared.info.topic.clone(),
            prepared.api.clone(),
            prepared.entrypoint,
            session.clone(),
        );
    }
    let base = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let (alive, gone) = tokio::sync::oneshot::channel::<()>();
    let watchdog = sse_watchdog(
        gone,
        session.clone(),
        peer.kill.clone(),
        base,
        progress.clone(),
        settings.heartbeat + settings.send_timeout,
    );
    state
        .inner
        .connections
        .open(prepared.info, session.clone(), Box::pin(watchdog));
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = Bytes::from(format!(
        "retry: {}\n: stream of {}\n\n",
        settings.sse_retry.as_millis(),
        prepared.feed.topic()
    ));
    let session_closed = session.closed_owned();
    let body = SseBody {
        feed: prepared.feed,
        session,
        envelope: prepared.envelope,
        heartbeat,
        pending: None,
        head: Some(first),
        tail: None,
        done: false,
        base,
        progress,
        closed: Box::pin(session_closed),
        budget: prepared.budget,
        dropped: None,
        out: crate::metrics::Metrics::counter(&state.inner.metrics.messages_out, "sse"),
        _slot: prepared.slot,
        _alive: alive,
    };
    let stream = futures_util::stream::unfold(body, sse_step);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = allow_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    Ok(response)
}

/// Ends a stuck SSE connection: hyper stops polling a body whose client does not read, so the
/// body cannot notice; this task can, by the body's last progress, and kills the socket.
async fn sse_watchdog(
    mut gone: tokio::sync::oneshot::Receiver<()>,
    session: Session,
    kill: crate::listener::KillSwitch,
    base: Instant,
    progress: Arc<AtomicU64>,
    stall_limit: Duration,
) {
    let mut check = tokio::time::interval(stall_limit / 2);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut gone => return,
            () = session.closed() => {
                // The body says goodbye if it is polled at all; give it the grace period.
                if tokio::time::timeout(CLOSE_GRACE, &mut gone).await.is_err() {
                    kill.kill();
                }
                return;
            }
            _ = check.tick() => {
                let last = Duration::from_millis(progress.load(Ordering::Relaxed));
                if base.elapsed().saturating_sub(last) > stall_limit {
                    tracing::debug!("sse client stopped reading; closing its connection");
                    session.close(CloseReason::SlowConsumer);
                    kill.kill();
                    return;
                }
            }
        }
    }
}

struct SseBody {
    feed: Feed,
    session: Session,
    envelope: bool,
    heartbeat: tokio::time::Interval,
    pending: Option<(Chunk, usize)>,
    head: Option<Bytes>,
    tail: Option<Bytes>,
    done: bool,
    base: Instant,
    progress: Arc<AtomicU64>,
    /// Kept across polls: registering a fresh waiter with the close switch for every message
    /// costs a lock per message per client.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    budget: Option<DeliveryBudget>,
    /// Messages skipped by the plan's delivery limit, told after the pending chunk.
    dropped: Option<u64>,
    /// `eventgate_messages_out_total{entrypoint="sse"}`.
    out: prometheus_client::metrics::counter::Counter,
    /// Held while the stream lives.
    _slot: Option<ConnectionSlot>,
    /// Dropped with the body: tells the connection's actor the stream is over.
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl SseBody {
    fn next_pending(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        let Some((chunk, index)) = self.pending.as_mut() else {
            let missed = self.dropped.take()?;
            return Some(sse_control("gap", &serde_json::json!({ "missed": missed })));
        };
        match chunk {
            Chunk::Gap { missed } => {
                let event = sse_control("gap", &serde_json::json!({ "missed": missed }));
                self.pending = None;
                Some(event)
            }
            Chunk::Frames { batch, start, end }
                if *index == 0 && *start == 0 && *end == batch.frames.len() =>
            {
                // The whole batch: its events encoded once for every reader.
                let bytes = batch.sse(self.envelope).clone();
                self.pending = None;
                Some(bytes)
            }
            Chunk::Frames { .. } => match chunk.frames().get(*index) {
                Some(frame) => {
                    *index += 1;
                    Some(if self.envelope {
                        frame.sse_envelope().clone()
                    } else {
                        frame.sse().clone()
                    })
                }
                None => {
                    self.pending = None;
                    None
                }
            },
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.done = true;
        self.tail = Some(sse_control(
            "close",
            &serde_json::json!({
                "code": reason.code(),
                "reason": reason.name(),
                "id": self.feed.token(),
            }),
        ));
    }
}

async fn sse_step(mut body: SseBody) -> Option<(Result<Bytes, Infallible>, SseBody)> {
    loop {
        if let Some(bytes) = body.next_pending() {
            return Some((Ok(bytes), body));
        }
        if body.pending.is_some() || body.dropped.is_some() {
            continue;
        }
        if body.done {
            let tail = body.tail.take()?;
            return Some((Ok(tail), body));
        }
        if body.session.is_closed() {
            let reason = body.session.reason();
            body.finish(reason);
            continue;
        }
        body.progress
            .store(body.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        match body.feed.next_ready().await {
            Ok(Some(chunk)) => {
                let chunk = match (&body.budget, chunk) {
                    (Some(budget), Chunk::Frames { batch, start, end }) => {
                        match budget.admit(end - start, &body.session).await {
                            Ok(allowed) => {
                                if allowed < end - start {
                                    body.dropped = Some((end - start - allowed) as u64);
                                }
                                Chunk::Frames {
                                    batch,
                                    start,
                                    end: start + allowed,
                                }
                            }
                            Err(reason) => {
                                body.finish(reason);
                                continue;
                            }
                        }
                    }
                    (_, chunk) => chunk,
                };
                if let Chunk::Frames { start, end, .. } = &chunk {
                    body.out.inc_by((end - start) as u64);
                }
                body.pending = Some((chunk, 0));
                continue;
            }
            Ok(None) => {}
            Err(reason) => {
                body.finish(reason);
                continue;
            }
        }
        tokio::select! {
            biased;
            () = body.closed.as_mut() => {}
            ready = body.feed.wait() => {
                if let Err(reason) = ready {
                    body.finish(reason);
                }
            }
            _ = body.heartbeat.tick() => {
                return Some((Ok(Bytes::from_static(b": heartbeat\n\n")), body));
            }
        }
    }
}
