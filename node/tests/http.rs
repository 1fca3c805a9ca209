//! The HTTP edge of a real single node started in-process on 127.0.0.1:0.

use std::time::Duration;

use eventgate::config::{self, CliOverrides};
use eventgate::node::{self, Listeners, NodeHandle};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct TestNode {
    handle: Option<NodeHandle>,
    shutdown: CancellationToken,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(extra_toml: &str) -> TestNode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventgate.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[cluster]\nlisten = \"127.0.0.1:0\"\n{extra_toml}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = config::load(Some(&path), &[], &CliOverrides::default()).unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = node::start(config, listeners, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", handle.http_addr);
    let node = TestNode {
        handle: Some(handle),
        shutdown,
        base,
        client: reqwest::Client::new(),
        _dir: dir,
    };
    // Ready once the single voter has elected itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = node
            .client
            .get(format!("{}/readyz", node.base))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

impl TestNode {
    async fn put(&self, id: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .put(format!("{}/admin/subscriptions/{id}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get_status(&self, path: &str) -> u16 {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.handle.take().unwrap().wait().await.unwrap();
    }
}

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
    let node = start("").await;
    let (status, _) = node.put("kept", valid()).await;
    assert_eq!(status, 201);
    let dir = tempfile::tempdir().unwrap();
    // Move the data aside: stop the node, then start a new one on the same data directory.
    let data = node._dir.path().to_owned();
    let TestNode {
        handle,
        shutdown,
        _dir,
        ..
    } = node;
    shutdown.cancel();
    handle.unwrap().wait().await.unwrap();
    let config_path = dir.path().join("again.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[cluster]\nlisten = \"127.0.0.1:0\"\n",
            data.join("data").display()
        ),
    )
    .unwrap();
    let config = config::load(Some(&config_path), &[], &CliOverrides::default()).unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = node::start(config, listeners, shutdown.clone())
        .await
        .unwrap();
    let ids = handle
        .control
        .reader()
        .read(|s| s.subscriptions.keys().cloned().collect::<Vec<_>>());
    assert_eq!(ids, vec!["kept".to_owned()]);
    shutdown.cancel();
    handle.wait().await.unwrap();
    drop(_dir);
}
