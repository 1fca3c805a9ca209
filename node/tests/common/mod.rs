//! A real single node started in-process on 127.0.0.1:0, for the HTTP tests.

#![allow(dead_code, unreachable_pub)]

pub mod callback;
pub mod stream;
pub mod websub;

use std::time::Duration;

use eventgate::config::{self, CliOverrides};
use eventgate::node::{self, Listeners, NodeHandle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestNode {
    pub handle: Option<NodeHandle>,
    pub shutdown: CancellationToken,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: Option<tempfile::TempDir>,
}

/// Starts a node whose config file holds `extra_toml` after its addresses.
pub async fn start(extra_toml: &str) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_in(dir.path(), extra_toml).await;
    node.dir = Some(dir);
    node
}

/// Starts a node with its config and data in `dir` (which the caller keeps).
pub async fn start_in(dir: &std::path::Path, extra_toml: &str) -> TestNode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = dir.join("eventgate.toml");
    // An `[http]` table of the test's own gets the listen address; else one is added.
    let listen = "[http]\nlisten = \"127.0.0.1:0\"\n";
    let (http, extra) = if extra_toml.contains("[http]\n") {
        ("", extra_toml.replace("[http]\n", listen))
    } else {
        (listen, extra_toml.to_owned())
    };
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n{http}[cluster]\nlisten = \"127.0.0.1:0\"\n{extra}",
            dir.join("data").display()
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
        dir: None,
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
    pub async fn put(&self, id: &str, body: Value) -> (u16, Value) {
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

    /// `GET path` answered as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_status(&self, path: &str) -> u16 {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (bounded) until `/metrics` has the line `want`.
    pub async fn wait_metric(&self, want: &str) {
        let deadline = tokio::time::Instant::now() + websub::T;
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never `{want}`:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `/metrics` reports `eventgate_broker_up{broker}` = `value`.
    pub async fn wait_broker_up(&self, broker: &str, value: u8) {
        self.wait_metric(&format!(
            "eventgate_broker_up{{broker=\"{broker}\"}} {value}"
        ))
        .await;
    }

    /// The node's handle (its control plane and broker).
    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("running")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.handle.take().unwrap().wait().await.unwrap();
    }
}
