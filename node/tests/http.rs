//! The HTTP edge (probes, admin API) of a real single node started in-process.

mod common;

use std::time::Duration;

use common::{start, start_in};
use serde_json::{json, Value};

fn valid() -> Value {
    json!({"topic": "orders", "callback": "https://example.com/cb", "lease_seconds": 60})
}

#[tokio::test]
async fn malformed_admin_writes_name_the_field_and_create_nothing() {
    let node = start("").await;
    let cases = [
        (
            json!({"callback": "https://example.com/cb", "lease_seconds": 60}),
            "topic",
        ),
        (
            json!({"topic": "", "callback": "https://example.com/cb", "lease_seconds": 60}),
            "topic",
        ),
        (
            json!({"topic": "t", "callback": "not a url", "lease_seconds": 60}),
            "callback",
        ),
        (
            json!({"topic": "t", "callback": "ftp://example.com/x", "lease_seconds": 60}),
            "callback",
        ),
        (
            json!({"topic": "t", "callback": "https://example.com/cb", "lease_seconds": "soon"}),
            "lease_seconds",
        ),
        (
            json!({"topic": "t", "callback": "https://example.com/cb", "lease_seconds": 0}),
            "lease_seconds",
        ),
        (
            json!({"topic": "t", "callback": "https://example.com/cb", "lease_seconds": 60, "secret": "x".repeat(200)}),
            "secret",
        ),
        (
            json!({"topic": "t", "callback": "https://example.com/cb", "lease_seconds": 60, "state": "weird"}),
            "state",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = node.put("s1", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {problem}");
        assert_eq!(problem["field"], field, "{body} -> {problem}");
        assert_eq!(
            problem["type"], "https://eventgate.dev/problems/invalid-field",
            "{problem}"
        );
    }
    let (status, problem) = node.put("bad id!", valid()).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("id")));
    // Nothing was created by any of those.
    assert_eq!(node.get_status("/admin/subscriptions/s1").await, 404);

    // Not JSON at all: the media type is not the one taken.
    let r = node
        .client
        .put(format!("{}/admin/subscriptions/s1", node.base))
        .header("content-type", "text/plain")
        .body("topic=orders")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    node.stop().await;
}

#[tokio::test]
async fn subscription_record_round_trip_without_leaking_the_secret() {
    let node = start("").await;
    let mut body = valid();
    body["secret"] = json!("s3cret");
    let (status, created) = node.put("s1", body.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["has_secret"], true);
    assert!(!created.to_string().contains("s3cret"));
    let (status, _) = node.put("s1", body).await;
    assert_eq!(status, 200, "replacing answers 200");
    let r = node
        .client
        .delete(format!("{}/admin/subscriptions/s1", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(node.get_status("/admin/subscriptions/s1").await, 404);
    node.stop().await;
}

#[tokio::test]
async fn admin_token_is_enforced() {
    let node = start("[admin]\ntoken = \"0123456789abcdef-token\"\n").await;
    assert_eq!(node.get_status("/admin/cluster/status").await, 401);
    let r = node
        .client
        .get(format!("{}/admin/cluster/status", node.base))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = node
        .client
        .get(format!("{}/admin/cluster/status", node.base))
        .bearer_auth("0123456789abcdef-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["leader"], 1);
    // Probes need no token.
    assert_eq!(node.get_status("/healthz").await, 200);
    assert_eq!(node.get_status("/readyz").await, 200);
    node.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path(), "").await;
    let (status, _) = node.put("kept", valid()).await;
    assert_eq!(status, 201);
    node.stop().await;

    let node = start_in(dir.path(), "").await;
    let ids = node
        .handle()
        .control
        .reader()
        .read(|s| s.subscriptions.keys().cloned().collect::<Vec<_>>());
    assert_eq!(ids, vec!["kept".to_owned()]);
    node.stop().await;
}

/// `/metrics` is OpenMetrics text with the broker's connectivity, streams and Raft role.
#[tokio::test]
async fn metrics_report_broker_streams_and_raft() {
    let node = common::start("[broker]\nprobe_interval = \"100ms\"\n").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = node
            .client
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let text = r.text().await.unwrap();
        let has = |line: &str| text.lines().any(|l| l == line);
        if has("eventgate_broker_up{broker=\"embedded\"} 1") && has("eventgate_raft_is_leader 1") {
            assert!(has("eventgate_stream_connections 0"), "{text}");
            assert!(text.contains("eventgate_raft_applied_index "), "{text}");
            assert!(text.ends_with("# EOF\n"), "{text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.stop().await;
}

/// Slow and idle clients do not hold connections, and connections past the caps get a fast
/// 503 instead of starving the node: a half-sent request line and an idle kept-alive
/// connection are closed after `http.header_read_timeout`, a body that trickles gets 408 after
/// `http.body_timeout`, and one address past `http.max_connections_per_ip` is turned away while
/// the node keeps answering others.
#[tokio::test]
async fn slow_clients_and_connection_floods_are_held_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = common::start(
        "[http]\nheader_read_timeout = \"300ms\"\nbody_timeout = \"300ms\"\nmax_connections_per_ip = 20\n[topics]\nnames = [\"demo\"]\n",
    )
    .await;
    let addr = node.base.trim_start_matches("http://").to_owned();
    // Reads until the server closes; answers what it sent and how long that took.
    let until_closed = |mut socket: tokio::net::TcpStream| async move {
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got)).await;
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    };

    // Half a request line, then nothing.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HT").await.unwrap();
    let (_, took) = until_closed(half).await;
    assert!(took < Duration::from_secs(3), "held {took:?}");

    // A kept-alive connection that idles after its request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = until_closed(idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(3), "held {took:?}");

    // A body that trickles.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /webhook-receiver?topic=demo HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nten bytes.",
    )
    .await
    .unwrap();
    let (answer, _) = until_closed(slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");

    // 20 connections from this address are held; the 21st is turned away at once; once one
    // goes, there is room again.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (answer, took) = until_closed(extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections_per_ip"), "{answer}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The held ones idle past the header timeout and are let go: the address has room again.
    for socket in held {
        let _ = until_closed(socket).await;
    }
    let r = node
        .client
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    node.stop().await;
}
