//! `GET /ws/{topic}`: a topic as a WebSocket (see `stream.rs` for what streams share). Frames
//! from the client are published to the topic when the stream may publish
//! ([`crate::ingress::Ingress::publish`]); with `envelope=json` each is answered by an `ack`,
//! or a `nack` when over the plan's rate, otherwise a refusal closes the stream with the code
//! of [`close_reason`].
//!
//! The write path takes what the feed has ready, feeds every frame (shared bytes, no
//! per-client copy) and flushes once.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use eventgate_actors::broker::{BrokerError, OutgoingMessage};
use eventgate_actors::stream::connection::{CloseSwitch, CLOSE_GRACE};
use eventgate_actors::stream::feed::{Chunk, Feed};
use eventgate_actors::stream::frame::Frame;
use eventgate_actors::stream::CloseReason;
use eventgate_raft_store::governance::Entrypoint;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use super::error::ApiError;
use super::stream::prepare;
use super::AppState;
use crate::http::listener::Peer;
use crate::ingress::{DeliveryBudget, PublishRight};
use crate::limits::ConnectionSlot;
use crate::refusal::Refusal;

/// Frame extension slots (see `Frame::ext`).
const SLOT_WS_TEXT: usize = 0;
const SLOT_WS_ENVELOPE: usize = 1;
/// The frame as a structured CloudEvent (`envelope=cloudevents`).
const SLOT_WS_CLOUDEVENT: usize = 2;

/// Bytes fed to a WebSocket before a flush even if more is ready.
const WS_FLUSH_BYTES: usize = 256 * 1024;

/// Read buffer of a WebSocket: small, most clients only read.
const WS_READ_BUFFER: usize = 4096;

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
        Entrypoint::Websocket,
        super::ViaApi::api_of(&via).map(str::to_owned),
    )
    .await?;
    let settings = &state.inner.streams;
    let connections = state.inner.connections.clone();
    let on_failure = connections.clone();
    let grant = prepared.grant;
    let watch = (
        grant.principal.clone(),
        prepared.info.topic.clone(),
        prepared.api.clone(),
        prepared.entrypoint,
    );
    let ctx = WsContext {
        state: state.clone(),
        topic: prepared.info.topic.clone(),
        envelope: prepared.envelope,
        cloudevents: prepared.cloudevents,
        publish: grant.publish,
        sticky: rand::random(),
        send_timeout: settings.send_timeout,
        heartbeat: settings.heartbeat,
        budget: grant.budget,
        closer: CloseSwitch::default(),
        out: crate::metrics::Metrics::counter(&state.inner.metrics.messages_out, "websocket"),
        latency: crate::metrics::Metrics::latency(&state.inner.metrics.stream_latency, "websocket"),
        _slot: grant.slot,
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
            let closer = ctx.closer.clone();
            let (principal, topic, api, entrypoint) = watch;
            ctx.state
                .ingress()
                .watch_rights(principal, topic, api, entrypoint, closer.clone());
            let io = run_ws(socket, feed, closer.clone(), ctx);
            connections.open(info, closer, Box::pin(io));
        }))
}

struct WsContext {
    state: AppState,
    topic: String,
    envelope: bool,
    /// Messages as structured CloudEvents (`envelope=cloudevents`).
    cloudevents: bool,
    /// Whom frames from the client are published as; `None`: this stream carries no
    /// publishes (`streams.allow_publish` is off).
    publish: Option<PublishRight>,
    /// The partition choice of this socket's keyless publishes (random per connection).
    sticky: u32,
    send_timeout: Duration,
    heartbeat: Duration,
    budget: Option<DeliveryBudget>,
    closer: CloseSwitch,
    /// `eventgate_messages_out_total{entrypoint="websocket"}`.
    out: prometheus_client::metrics::counter::Counter,
    /// `eventgate_stream_delivery_latency_seconds{entrypoint="websocket"}`.
    latency: crate::metrics::LatencyHistogram,
    /// Held while the connection lives.
    _slot: Option<ConnectionSlot>,
}

/// How a WebSocket loop ended.
enum WsEnd {
    /// Send this close frame.
    Close(CloseReason),
    /// Send this close frame, its reason followed by what went wrong.
    CloseWith(CloseReason, String),
    /// The client closed (its close was answered) or the connection broke.
    Gone,
}

async fn run_ws(mut socket: WebSocket, mut feed: Feed, closer: CloseSwitch, ctx: WsContext) {
    let end = ws_loop(&mut socket, &mut feed, &closer, &ctx).await;
    // A close a client should come back from names where to resume (`?from=` the token), in
    // the reason: raw frames carry no ids, and this is how a client without the envelope
    // resumes exactly, as SSE's final `close` event lets it.
    let token = feed.token();
    let resume = |reason: CloseReason| {
        matches!(
            reason,
            CloseReason::GoingAway | CloseReason::SlowConsumer | CloseReason::TryAgainLater
        )
        .then(|| format!("resume={token}"))
        // A token cut to fit the reason would resume elsewhere: none rather than that.
        .filter(|at| reason.name().len() + 2 + at.len() <= 123)
    };
    let (reason, text) = match end {
        WsEnd::Gone => return,
        WsEnd::Close(reason) => match resume(reason) {
            Some(at) => (reason, Utf8Bytes::from(close_text(reason.name(), &at))),
            None => (reason, Utf8Bytes::from_static(reason.name())),
        },
        WsEnd::CloseWith(reason, detail) => {
            (reason, Utf8Bytes::from(close_text(reason.name(), &detail)))
        }
    };
    {
        if reason != CloseReason::GoingAway {
            tracing::debug!(topic = %ctx.topic, reason = reason.name(), "closing websocket");
        }
        let frame = CloseFrame {
            code: reason.code(),
            reason: text,
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Message::Close(Some(frame)))).await;
    }
    // Dropping the socket closes the connection.
}

fn ws_message(frame: &Frame, envelope: bool, cloudevents: bool) -> Message {
    if cloudevents {
        return Message::Text(frame.ext(SLOT_WS_CLOUDEVENT, |f| {
            Utf8Bytes::try_from(f.cloudevent()).unwrap_or_default()
        }));
    }
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
    closer: &CloseSwitch,
    ctx: &WsContext,
) -> WsEnd {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + ctx.heartbeat, ctx.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A client silent for 2.5 heartbeats is gone: its own deadline, moved on by whatever it
    // sends (checking at the pings only would close at the third).
    let silence_limit = ctx.heartbeat * 2 + ctx.heartbeat / 2;
    let mut silence = std::pin::pin!(tokio::time::sleep(silence_limit));
    let mut closed = std::pin::pin!(closer.closed());
    loop {
        if let Err(end) = write_ready(socket, feed, ctx).await {
            return end;
        }
        tokio::select! {
            biased;
            () = closed.as_mut() => return WsEnd::Close(closer.reason()),
            ready = feed.wait() => {
                if let Err(reason) = ready {
                    return WsEnd::Close(reason);
                }
            }
            incoming = socket.next() => {
                silence.as_mut().reset(Instant::now() + silence_limit);
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
            () = silence.as_mut() => return WsEnd::Close(CloseReason::PingTimeout),
            _ = heartbeat.tick() => {
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
    let Some(right) = &ctx.publish else {
        return Err(WsEnd::Close(CloseReason::PolicyViolation));
    };
    // Only a text frame can be a publish envelope.
    let envelope = if ctx.envelope && content_type.starts_with("text/") {
        match publish_envelope(&payload) {
            Ok(envelope) => envelope,
            Err(detail) => {
                let nack = serde_json::json!({
                    "type": "nack",
                    "reason": "invalid-envelope",
                    "detail": detail,
                });
                return send_text(socket, nack.to_string(), ctx).await;
            }
        }
    } else {
        None
    };
    let mut message = envelope.unwrap_or_else(|| OutgoingMessage {
        key: None,
        headers: Vec::new(),
        content_type: Some(content_type.to_owned()),
        payload,
        sticky: None,
    });
    // This socket's keyless frames stay on one partition, in the order they were sent.
    message.sticky = Some(ctx.sticky);
    match ctx.state.ingress().publish_as(right, message).await {
        Ok(published) => {
            if ctx.envelope {
                let ack = match published.position {
                    Some(position) => serde_json::json!({
                        "type": "ack",
                        "partition": position.partition,
                        "offset": position.offset,
                    }),
                    // MQTT does not number messages.
                    None => serde_json::json!({ "type": "ack" }),
                };
                send_text(socket, ack.to_string(), ctx).await?;
            }
            Ok(())
        }
        Err(Refusal::RateLimited { status, .. }) if ctx.envelope => {
            // The frame is not published; the client is told and may retry later.
            let nack = serde_json::json!({
                "type": "nack",
                "reason": "rate-limited",
                "retry_after": status.reset_ms.div_ceil(1000).max(1),
            });
            send_text(socket, nack.to_string(), ctx).await
        }
        Err(Refusal::InvalidMessage(invalid)) => {
            // Nothing was stored; the client learns where its frame failed: in the close
            // reason (the first failing instance path) and, with envelopes, a nack with all.
            if ctx.envelope {
                let nack = serde_json::json!({
                    "type": "nack",
                    "reason": "invalid-message",
                    "errors": invalid.errors_json(),
                });
                send_text(socket, nack.to_string(), ctx).await?;
            }
            let first = invalid.errors.first().map_or(String::new(), |e| {
                let at = if e.instance_path.is_empty() {
                    "/"
                } else {
                    &e.instance_path
                };
                format!("{at} {}", e.message)
            });
            Err(WsEnd::CloseWith(CloseReason::InvalidMessage, first))
        }
        // A topic that cannot be published to (an MQTT wildcard mapping is read-only): the
        // client's mistake, said as such (1008 with the reason), not "reconnect" (1011), which
        // would make it loop.
        Err(Refusal::Broker(BrokerError::InvalidTopic { topic, reason })) => Err(WsEnd::CloseWith(
            CloseReason::PolicyViolation,
            format!("`{topic}` cannot be published to: {reason}"),
        )),
        Err(refusal) => {
            if let Refusal::Broker(e) = &refusal {
                tracing::warn!(topic = %ctx.topic, error = %e, "websocket publish failed");
            }
            Err(WsEnd::Close(close_reason(&refusal)))
        }
    }
}

/// A publish envelope (with `envelope=json`): a text frame that is a JSON object with
/// `"type":"publish"` — `payload` (text) or `payload_base64`, `content_type`, `key` or
/// `key_base64`, `headers` (an object of string values or arrays of them, or an array of
/// `[name, value]` pairs: a repeated name is kept as often as it comes). `Ok(None)`: an
/// ordinary frame, published as it is.
fn publish_envelope(frame: &Bytes) -> Result<Option<OutgoingMessage>, String> {
    use base64::Engine as _;
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(frame)
    else {
        return Ok(None);
    };
    if doc.get("type").and_then(|t| t.as_str()) != Some("publish") {
        return Ok(None);
    }
    let b64 = |field: &str, text: &serde_json::Value| -> Result<Bytes, String> {
        let text = text
            .as_str()
            .ok_or_else(|| format!("`{field}` is a base64 string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| format!("`{field}` is not base64: {e}"))
    };
    let text = |field: &str, v: &serde_json::Value| -> Result<Bytes, String> {
        v.as_str()
            .map(|s| Bytes::from(s.to_owned()))
            .ok_or_else(|| format!("`{field}` is a string"))
    };
    let (payload, default_type) = match (doc.get("payload"), doc.get("payload_base64")) {
        (Some(p), None) => (text("payload", p)?, "text/plain; charset=utf-8"),
        (None, Some(p)) => (b64("payload_base64", p)?, "application/octet-stream"),
        (None, None) => return Err("a publish needs `payload` or `payload_base64`".to_owned()),
        (Some(_), Some(_)) => return Err("`payload` or `payload_base64`, not both".to_owned()),
    };
    let key = match (doc.get("key"), doc.get("key_base64")) {
        (Some(serde_json::Value::Null) | None, None) => None,
        (Some(k), None) => Some(text("key", k)?),
        (None, Some(k)) => Some(b64("key_base64", k)?),
        (Some(_), Some(_)) => return Err("`key` or `key_base64`, not both".to_owned()),
    };
    let content_type = match doc.get("content_type") {
        None | Some(serde_json::Value::Null) => default_type.to_owned(),
        Some(v) => v.as_str().ok_or("`content_type` is a string")?.to_owned(),
    };
    let mut headers = Vec::new();
    let value_of = |name: &str, v: &serde_json::Value| -> Result<Bytes, String> {
        v.as_str()
            .map(|s| Bytes::from(s.to_owned()))
            .ok_or_else(|| format!("header `{name}`: a string value"))
    };
    match doc.get("headers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, v) in map {
                match v {
                    serde_json::Value::Array(values) => {
                        for v in values {
                            headers.push((name.clone(), value_of(name, v)?));
                        }
                    }
                    v => headers.push((name.clone(), value_of(name, v)?)),
                }
            }
        }
        Some(serde_json::Value::Array(pairs)) => {
            for pair in pairs {
                let (Some(name), Some(v)) = (
                    pair.get(0).and_then(|n| n.as_str()),
                    pair.get(1)
                        .filter(|_| pair.as_array().is_some_and(|a| a.len() == 2)),
                ) else {
                    return Err("`headers` pairs are `[name, value]`".to_owned());
                };
                headers.push((name.to_owned(), value_of(name, v)?));
            }
        }
        Some(_) => return Err("`headers` is an object or an array of pairs".to_owned()),
    }
    Ok(Some(OutgoingMessage {
        key,
        headers,
        content_type: Some(content_type),
        payload,
        sticky: None,
    }))
}

/// `name: detail`, cut to the 123 bytes a close frame's reason may hold.
fn close_text(name: &str, detail: &str) -> String {
    let mut text = format!("{name}: {detail}");
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The one translation of a [`Refusal`] into a WebSocket close.
pub fn close_reason(refusal: &Refusal) -> CloseReason {
    match refusal {
        Refusal::RateLimited { .. } | Refusal::QuotaExceeded { .. } => CloseReason::RateLimited,
        Refusal::PayloadTooLarge { .. } | Refusal::Broker(BrokerError::MessageTooLarge { .. }) => {
            CloseReason::TooBig
        }
        Refusal::Unauthenticated { .. } => CloseReason::CredentialRevoked,
        Refusal::Forbidden { .. } | Refusal::NotOffered { .. } | Refusal::InvalidField { .. } => {
            CloseReason::PolicyViolation
        }
        Refusal::TopicNotFound { .. } => CloseReason::TopicGone,
        Refusal::ApiRetired { .. } => CloseReason::ApiRetired,
        Refusal::InvalidMessage(_) => CloseReason::InvalidMessage,
        Refusal::Broker(BrokerError::InvalidTopic { .. }) => CloseReason::PolicyViolation,
        Refusal::Broker(e) if !e.is_retryable() => CloseReason::InternalError,
        Refusal::Broker(_) | Refusal::Control(_) | Refusal::NodeFull { .. } | Refusal::Stopping => {
            CloseReason::TryAgainLater
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
                    .admit(frames.len(), &ctx.closer)
                    .await
                    .map_err(WsEnd::Close)?;
                deadline = Instant::now() + ctx.send_timeout;
                allowed
            }
        };
        for frame in &frames[..allowed] {
            feed_one(
                socket,
                ws_message(frame, ctx.envelope, ctx.cloudevents),
                deadline,
            )
            .await?;
            fed += frame.payload.len();
            any = true;
        }
        ctx.out.inc_by(allowed as u64);
        if feed.live() {
            crate::metrics::observe_chunk(&ctx.latency, &frames[..allowed]);
        }
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
