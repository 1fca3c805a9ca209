//! `GET /sse/{topic}`: a topic as Server-Sent Events (see `stream.rs` for what streams share).
//! Each message is one event whose `id:` is its resume token; the server ends a stream with a
//! final `close` event saying why. hyper coalesces: it writes whatever the body yields before
//! it waits, in one go.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use eventgate_actors::stream::connection::{CloseSwitch, CLOSE_GRACE};
use eventgate_actors::stream::feed::{Chunk, Feed};
use eventgate_actors::stream::frame::sse_control;
use eventgate_actors::stream::CloseReason;
use eventgate_raft_store::governance::Entrypoint;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::error::ApiError;
use super::stream::prepare;
use super::AppState;
use crate::http::listener::Peer;
use crate::ingress::DeliveryBudget;
use crate::limits::ConnectionSlot;

/// Frame extension slot (see `Frame::ext`) of the SSE event carrying the structured CloudEvent;
/// 0 to 2 are the WebSocket's.
const SLOT_SSE_CLOUDEVENT: usize = 3;

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
        Entrypoint::Sse,
        super::ViaApi::api_of(&via).map(str::to_owned),
    )
    .await?;
    let allow_origin = prepared.allow_origin.clone();
    let settings = state.inner.streams.clone();
    let closer = CloseSwitch::default();
    prepared.watch_rights(&state, &closer);
    let base = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let (alive, gone) = tokio::sync::oneshot::channel::<()>();
    let watchdog = sse_watchdog(
        gone,
        closer.clone(),
        peer.kill.clone(),
        base,
        progress.clone(),
        settings.heartbeat + settings.send_timeout,
    );
    state
        .inner
        .connections
        .open(prepared.info, closer.clone(), Box::pin(watchdog));
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = Bytes::from(format!(
        "retry: {}\n: stream of {}\n\n",
        settings.sse_retry.as_millis(),
        prepared.feed.topic()
    ));
    let closer_closed = closer.closed_owned();
    let body = SseBody {
        feed: prepared.feed,
        closer,
        envelope: prepared.envelope,
        cloudevents: prepared.cloudevents,
        heartbeat,
        pending: None,
        head: Some(first),
        tail: None,
        done: false,
        base,
        progress,
        closed: Box::pin(closer_closed),
        budget: prepared.grant.budget,
        dropped: None,
        out: crate::metrics::Metrics::counter(&state.inner.metrics.messages_out, "sse"),
        latency: crate::metrics::Metrics::latency(&state.inner.metrics.stream_latency, "sse"),
        _slot: prepared.grant.slot,
        _alive: alive,
    };
    let stream = futures_util::stream::unfold(body, sse_step);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        // With its charset: a client that defaults text/* to ISO-8859-1 would garble
        // non-ASCII otherwise.
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
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
    closer: CloseSwitch,
    kill: crate::http::listener::KillSwitch,
    base: Instant,
    progress: Arc<AtomicU64>,
    stall_limit: Duration,
) {
    let mut check = tokio::time::interval(stall_limit / 2);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut gone => return,
            () = closer.closed() => {
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
                    closer.close(CloseReason::SlowConsumer);
                    kill.kill();
                    return;
                }
            }
        }
    }
}

struct SseBody {
    feed: Feed,
    closer: CloseSwitch,
    envelope: bool,
    /// Messages as structured CloudEvents.
    cloudevents: bool,
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
    /// `eventgate_stream_delivery_latency_seconds{entrypoint="sse"}`.
    latency: crate::metrics::LatencyHistogram,
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
                if *index == 0
                    && *start == 0
                    && *end == batch.frames.len()
                    && !self.cloudevents =>
            {
                // The whole batch: its events encoded once for every reader.
                let bytes = batch.sse(self.envelope).clone();
                self.pending = None;
                Some(bytes)
            }
            Chunk::Frames { .. } => match chunk.frames().get(*index) {
                Some(frame) => {
                    *index += 1;
                    Some(if self.cloudevents {
                        // Encoded once per frame for every reader that wants it.
                        frame.ext(SLOT_SSE_CLOUDEVENT, |f| f.sse_json(&f.cloudevent()))
                    } else if self.envelope {
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
        if body.closer.is_closed() {
            let reason = body.closer.reason();
            body.finish(reason);
            continue;
        }
        body.progress
            .store(body.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        match body.feed.next_ready().await {
            Ok(Some(chunk)) => {
                let chunk = match (&body.budget, chunk) {
                    (Some(budget), Chunk::Frames { batch, start, end }) => {
                        match budget.admit(end - start, &body.closer).await {
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
                if let Chunk::Frames { start, end, batch } = &chunk {
                    body.out.inc_by((end - start) as u64);
                    if body.feed.live() {
                        crate::metrics::observe_chunk(&body.latency, &batch.frames[*start..*end]);
                    }
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
