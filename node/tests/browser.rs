//! A real browser (headless Chromium) reads a topic with `EventSource` and `WebSocket`, from a
//! page of another origin, with its API key in the query (browsers cannot set headers there):
//! the topic belongs to an API that needs credentials.
//!
//! Needs `chromium` (Debian package; `.ci/run` installs it). `EVENTGATE_CHROMIUM` names another
//! binary.

mod common;

use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

fn chromium() -> String {
    if let Ok(path) = std::env::var("EVENTGATE_CHROMIUM") {
        return path;
    }
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(path) = eventgate_chaos_tests::find_program(candidate) {
            return path.display().to_string();
        }
    }
    panic!("no chromium found: install Debian's `chromium` (as .ci/run does) or set EVENTGATE_CHROMIUM");
}

const PAGE: &str = r#"<!doctype html>
<html><body><script>
const gateway = "GATEWAY";
const report = (kind, data) =>
  fetch("/report", { method: "POST", body: JSON.stringify({ kind, data }) });
const sse = [], ws = [];
const es = new EventSource(gateway + "/sse/browser?access_token=t0k3n");
es.onopen = () => report("open", "sse");
es.onerror = () => report("error", "sse");
es.onmessage = (e) => {
  sse.push([e.lastEventId, e.data]);
  if (sse.length === 3) report("sse", sse);
};
const socket = new WebSocket(gateway.replace("http://", "ws://") + "/ws/browser?access_token=t0k3n");
socket.onopen = () => report("open", "ws");
socket.onerror = () => report("error", "ws");
socket.onmessage = (e) => {
  ws.push(e.data);
  if (ws.length === 3) report("ws", ws);
};
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reads_with_eventsource_and_websocket() {
    let browser = chromium();
    let (key, hash) = eventgate::auth::generate_key();
    let node = common::start(&format!(
        r#"[topics]
names = ["browser"]
[apis.web]
channels = {{ browser = "browser" }}
security = ["api_key"]
[plans.basic]
[applications.page]
permissions = [{{ topics = "browser", subscribe = true, publish = true }}]
api_key_hashes = ["{hash}"]
subscriptions = {{ web = "basic" }}
"#
    ))
    .await;
    let publish = async |body: &[u8]| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // The configuration's applications are applied just after the node starts.
            let r = node
                .client
                .post(format!("{}/webhook-receiver?topic=browser", node.base))
                .header("x-api-key", &key)
                .header("content-type", "text/plain")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            if r.status() == 202 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publish: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    publish(b"before").await;

    let (tx, mut reports) = mpsc::unbounded_channel::<Value>();
    let page = PAGE.replace("GATEWAY", &node.base).replace("t0k3n", &key);
    let app = Router::new()
        .route("/", get(move || async move { Html(page) }))
        .route(
            "/report",
            post(
                |State(tx): State<mpsc::UnboundedSender<Value>>, body: String| async move {
                    let _ = tx.send(serde_json::from_str(&body).unwrap_or(Value::Null));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let profile = tempfile::tempdir().unwrap();
    let mut chrome = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&page_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");

    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(60), reports.recv())
            .await
            .expect("no report from the page in 60s")
            .expect("report channel closed")
    };
    let mut opened = Vec::new();
    while opened.len() < 2 {
        let r = next().await;
        assert_eq!(r["kind"], "open", "the page reported {r}");
        opened.push(r["data"].as_str().unwrap().to_owned());
    }
    for body in ["one", "two", "three"] {
        publish(body.as_bytes()).await;
    }
    let mut sse = None;
    let mut ws = None;
    while sse.is_none() || ws.is_none() {
        let r = next().await;
        match r["kind"].as_str() {
            Some("sse") => sse = Some(r["data"].clone()),
            Some("ws") => ws = Some(r["data"].clone()),
            _ => panic!("the page reported {r}"),
        }
    }
    assert_eq!(
        sse.unwrap(),
        serde_json::json!([["2", "one"], ["3", "two"], ["4", "three"]])
    );
    assert_eq!(ws.unwrap(), serde_json::json!(["one", "two", "three"]));
    let _ = chrome.kill().await;
    node.stop().await;
}
