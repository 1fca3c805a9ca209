//! Serving HTTP/1.1 on the gateway's listener, with the limits `axum::serve` cannot set:
//!
//! - a **header-read timeout** (hyper's, with a Tokio timer): a request line and headers must
//!   arrive within `http.header_read_timeout` of the server waiting for them, on a new
//!   connection and between the requests of a kept-alive one; so a client that sends half a
//!   request line, or idles on keep-alive, is let go. Upgraded WebSockets and SSE responses are
//!   past their head and keep their own heartbeats;
//! - **connection caps**: at most `http.max_connections` in all (by default the process's file
//!   descriptor limit less a reserve for the node's own files and sockets) and
//!   `http.max_connections_per_ip` from one address; a connection past either gets a fast
//!   `503` problem and is closed at once, instead of the node running out of descriptors and
//!   turning everyone away. Loopback peers (a container's health check) may use half of the
//!   descriptor reserve past the total. Cluster traffic is QUIC on its own socket and is not
//!   counted.
//!
//! Body-read deadlines are the handlers' (`http/webhook.rs` `read_body`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{HttpLimits, DESCRIPTOR_RESERVE};
use crate::http::listener::{KillableStream, Peer};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One connection counted against the caps; uncounted on drop.
struct Counted {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

fn admit(
    counts: &Arc<Mutex<Counts>>,
    limits: &HttpLimits,
    ip: IpAddr,
) -> Result<Counted, &'static str> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    // This machine's own probes (a container's health check) are let in past the cap, into
    // half of the descriptor reserve: the node keeps the other half for itself.
    let probe_room = ip.is_loopback() && c.total < limits.max_connections + DESCRIPTOR_RESERVE / 2;
    if c.total >= limits.max_connections && !probe_room {
        return Err("this node holds as many connections as it may (http.max_connections); try another node");
    }
    let from_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
    if limits.max_connections_per_ip > 0 && from_ip >= limits.max_connections_per_ip {
        return Err(
            "this address holds as many connections as it may (http.max_connections_per_ip)",
        );
    }
    c.total += 1;
    *c.by_ip.entry(ip).or_insert(0) += 1;
    Ok(Counted {
        counts: counts.clone(),
        ip,
    })
}

/// Answers a connection past the caps with a 503 problem and closes it, without reading it.
async fn turn_away(mut stream: TcpStream, reason: &'static str) {
    let body = serde_json::json!({
        "type": format!("{}too-many-connections", crate::http::error::PROBLEM_BASE),
        "title": "The node holds as many connections as it may",
        "status": 503,
        "detail": reason,
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serves `app` on `listener` until `shutdown` completes, then lets every open connection
/// finish gracefully (its current request; the caller closes streams in `shutdown`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let draining = CancellationToken::new();
    // Each connection task holds a sender; all are gone when every connection has ended.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr): (TcpStream, SocketAddr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let counted = match admit(&counts, &limits, addr.ip()) {
            Ok(counted) => counted,
            Err(reason) => {
                tracing::debug!(peer = %addr, reason, "connection turned away");
                tokio::spawn(turn_away(stream, reason));
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let io = KillableStream::new(stream);
        let peer = Peer {
            addr,
            kill: io.switch().clone(),
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer.clone()));
                app.clone().oneshot(request)
            });
        let builder = builder.clone();
        let draining = draining.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let mut asked = false;
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::trace!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = draining.cancelled(), if !asked => {
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(counted);
            drop(alive);
        });
    }
    drop(listener);
    draining.cancel();
    drop(alive);
    let _ = all_done.recv().await;
}
