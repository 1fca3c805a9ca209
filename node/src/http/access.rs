//! Access logs and HTTP request metrics, for every request of the HTTP listener.
//!
//! Each request gets a request id — the client's `X-Request-Id` when it sends a usable one,
//! else a new one — answered in `X-Request-Id`. Its duration (arrival to the answer's head;
//! a stream's life is not in it) goes to `eventgate_http_request_duration_seconds{route,
//! method, status}`, the route being the template (`/admin/subscriptions/{id}`), never the
//! path, so that the series stay few. With `log.access` (on by default) a line goes to the
//! target `eventgate::access` at `info`: method, route, path (without its query, which may hold
//! an `access_token`), status, latency, bytes (when known), client address, request id.

use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::listener::Peer;
use super::AppState;
use crate::metrics::HttpLabels;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// A client's request id is kept if it is 1 to 64 characters of `A-Z a-z 0-9 - _ .`.
fn usable(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(text)
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Known methods keep their name as a label; anything else is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The middleware; see the module documentation.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(usable)
        .map_or_else(new_id, str::to_owned);
    let access =
        state.access_log() && tracing::enabled!(target: "eventgate::access", tracing::Level::INFO);
    let (path, client) = if access {
        (
            request.uri().path().to_owned(),
            request
                .extensions()
                .get::<ConnectInfo<Peer>>()
                .map(|c| c.0.addr.to_string()),
        )
    } else {
        (String::new(), None)
    };
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let labels = HttpLabels {
        route: route.unwrap_or_else(|| "other".to_owned()),
        method,
        status: status_class(status),
    };
    state
        .metrics()
        .http_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    let route = labels.route;
    if access {
        let bytes = response.body().size_hint().exact();
        tracing::info!(
            target: "eventgate::access",
            method,
            route = %route,
            path = %path,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            bytes,
            client = client.as_deref().unwrap_or("-"),
            request_id = %request_id,
            "request"
        );
    }
    response
}
