//! The HTTP edge (probes, admin API) of a real single node started in-process.

mod common;

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

    // Not JSON at all.
    let r = node
        .client
        .put(format!("{}/admin/subscriptions/s1", node.base))
        .header("content-type", "text/plain")
        .body("topic=orders")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
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
