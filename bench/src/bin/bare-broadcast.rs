//! The baseline of the stream fan-out benchmark, the practical ceiling on this machine: axum
//! and one `tokio::sync::broadcast` ring per process, no broker, no resume, no policies.
//! `POST /publish` takes one message per body line and sends them as one ring entry, encoded
//! once; `GET /sse/{topic}` and `GET /ws/{topic}` (4 KiB read buffer) stream the ring.
//!
//! `bare-broadcast <port>`

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::SinkExt;
use tokio::sync::broadcast;

/// One publish: the SSE encoding of all its messages, and each message for WebSocket.
struct Entry {
    sse: Bytes,
    messages: Vec<Bytes>,
}

type Ring = broadcast::Sender<Arc<Entry>>;

async fn publish(State(ring): State<Ring>, body: Bytes) -> &'static str {
    let mut sse = Vec::with_capacity(body.len() + 16);
    let mut messages = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        sse.extend_from_slice(b"data: ");
        sse.extend_from_slice(line);
        sse.extend_from_slice(b"\n\n");
        messages.push(body.slice_ref(line));
    }
    let _ = ring.send(Arc::new(Entry {
        sse: Bytes::from(sse),
        messages,
    }));
    "ok"
}

async fn sse(State(ring): State<Ring>) -> Response {
    let rx = ring.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(entry) => {
                    return Some((Ok::<_, std::convert::Infallible>(entry.sse.clone()), rx))
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn ws(State(ring): State<Ring>, upgrade: WebSocketUpgrade) -> Response {
    let mut rx = ring.subscribe();
    upgrade
        .read_buffer_size(4096)
        .on_upgrade(move |mut socket| async move {
            loop {
                match rx.recv().await {
                    Ok(entry) => {
                        for m in &entry.messages {
                            if socket.feed(Message::Binary(m.clone())).await.is_err() {
                                return;
                            }
                        }
                        if socket.flush().await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bare-broadcast <port>"))?
        .parse()?;
    let (ring, _) = broadcast::channel::<Arc<Entry>>(1024);
    let app = Router::new()
        .route("/publish", post(publish))
        .route("/sse/{topic}", get(sse))
        .route("/ws/{topic}", get(ws))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(ring);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
