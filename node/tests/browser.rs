//! A real browser (headless Chromium) reads a topic with `EventSource` and `WebSocket`, from a
//! page of another origin, with its API key in the query (browsers cannot set headers there):
//! the topic belongs to an API that needs credentials. And the portal's try-it page, driven over
//! the DevTools protocol with a developer's session cookie: its live SSE and WebSocket streams
//! show what is published from the page and from outside.
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

/// Chromium driven over the DevTools protocol (one page target): commands by id, answers read
/// until the one with that id.
struct DevTools {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl DevTools {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let command = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("no DevTools answer in 30 s")
                .expect("DevTools closed")
                .unwrap();
            if let Message::Text(text) = message {
                let answer: Value = serde_json::from_str(&text).unwrap();
                if answer["id"] == id {
                    assert!(answer.get("error").is_none(), "{method}: {answer}");
                    return answer["result"].clone();
                }
            }
        }
    }

    /// Evaluates `expression` in the page, answering its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true (bounded).
    async fn until(&mut self, what: &str, expression: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.eval(expression).await != Value::Bool(true) {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The developer portal walked in a real browser, as a new developer would: sign up, find the
/// API in the catalog, create an application, subscribe it under a plan that needs approval
/// (approved by an administrator meanwhile), issue an API key, a client secret and a token,
/// open the try-it page, stream the channel (SSE, then WebSocket), publish from the page and
/// through the webhook receiver with the new key, and see the messages arrive on the page.
/// Headless Chromium is driven over the DevTools protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_developer_walks_the_portal_in_a_real_browser() {
    let browser = chromium();
    let node = common::start(
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\ndescription = \"Orders of the shop\"\nchannels = { orders = \"orders\" }\n[plans.gold]\napproval_required = true\n",
    )
    .await;
    let profile = tempfile::tempdir().unwrap();
    let mut chrome = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
    let stderr = chrome.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                return rest.split('/').next().unwrap().to_owned();
            }
        }
        panic!("chromium ended without a DevTools address");
    })
    .await
    .expect("no DevTools address in 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .expect("a page target");
    let (socket, _) =
        tokio_tungstenite::connect_async(target["webSocketDebuggerUrl"].as_str().unwrap())
            .await
            .unwrap();
    let mut tools = DevTools { socket, next_id: 0 };
    let base = node.base.clone();
    let go = async |tools: &mut DevTools, path: &str| {
        tools
            .call(
                "Page.navigate",
                serde_json::json!({ "url": format!("{base}{path}") }),
            )
            .await;
    };
    // Waits for a page at `path` to be loaded.
    let at = async |tools: &mut DevTools, path: &str| {
        tools
            .until(
                &format!("the page {path}"),
                &format!("location.pathname === '{path}' && document.readyState === 'complete'"),
            )
            .await;
    };

    // Sign up.
    go(&mut tools, "/portal/signup").await;
    at(&mut tools, "/portal/signup").await;
    tools
        .eval("document.getElementById('name').value = 'Ada'; document.getElementById('email').value = 'ada@example.com'; document.getElementById('password').value = 'a long enough password'; document.querySelector('main form').submit(); true")
        .await;
    at(&mut tools, "/portal/account").await;
    assert!(
        tools
            .eval("document.body.textContent.includes('ada@example.com')")
            .await
            == Value::Bool(true)
    );

    // Find the API in the catalog.
    go(&mut tools, "/portal?q=orders").await;
    at(&mut tools, "/portal").await;
    tools
        .eval("document.querySelector('a[href=\"/portal/apis/shop\"]').click(); true")
        .await;
    at(&mut tools, "/portal/apis/shop").await;
    assert!(
        tools
            .eval("document.body.textContent.includes('Orders of the shop')")
            .await
            == Value::Bool(true)
    );

    // An application, subscribed under a plan that needs approval.
    go(&mut tools, "/portal/apps").await;
    at(&mut tools, "/portal/apps").await;
    tools
        .eval("document.getElementById('id').value = 'ada-app'; document.querySelector('main form').submit(); true")
        .await;
    at(&mut tools, "/portal/apps/ada-app").await;
    tools
        .eval("document.getElementById('api').value = 'shop'; document.getElementById('plan').value = 'gold'; document.querySelector('form[action$=\"/subscribe\"]').submit(); true")
        .await;
    at(&mut tools, "/portal/apps/ada-app/subscribe").await;
    assert!(
        tools
            .eval("document.body.textContent.includes('waiting for approval')")
            .await
            == Value::Bool(true)
    );
    // An administrator approves it.
    let r = node
        .client
        .post(format!(
            "{base}/admin/applications/ada-app/access/shop/approve"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    go(&mut tools, "/portal/apps/ada-app").await;
    at(&mut tools, "/portal/apps/ada-app").await;
    assert!(
        tools
            .eval("document.body.textContent.includes('under plan gold: approved')")
            .await
            == Value::Bool(true)
    );

    // Credentials, each shown once on the page.
    let shown = async |tools: &mut DevTools, action: &str| -> String {
        tools
            .eval(&format!(
                "document.querySelector('form[action$=\"/{action}\"]').submit(); true"
            ))
            .await;
        let path = format!("/portal/apps/ada-app/{action}");
        tools
            .until(
                &format!("{action} shown"),
                &format!(
                    "location.pathname === '{path}' && !!document.getElementById('shown-value')"
                ),
            )
            .await;
        tools
            .eval("document.getElementById('shown-value').textContent")
            .await
            .as_str()
            .unwrap()
            .to_owned()
    };
    let key = shown(&mut tools, "keys").await;
    assert!(key.starts_with("egk_"), "{key}");
    let secret = shown(&mut tools, "secrets").await;
    assert!(secret.starts_with("egcs_"), "{secret}");
    let token = shown(&mut tools, "token").await;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // Try it: from the API's page, stream the channel and publish.
    go(&mut tools, "/portal/apis/shop").await;
    at(&mut tools, "/portal/apis/shop").await;
    tools
        .eval("document.querySelector('form[action$=\"/try\"]').submit(); true")
        .await;
    tools
        .until(
            "the try page",
            "document.readyState === 'complete' && !!document.getElementById('connect')",
        )
        .await;
    tools
        .eval("document.getElementById('connect').click(); true")
        .await;
    tools
        .until(
            "the SSE stream to open",
            "document.getElementById('state').textContent.startsWith('connected')",
        )
        .await;
    tools
        .eval("document.getElementById('message').value = '{\"from\":\"the page\"}'; document.getElementById('publish').click(); true")
        .await;
    tools
        .until("the page's message on the page", "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('the page'))")
        .await;
    tools
        .eval("document.querySelector('input[value=ws]').checked = true; document.getElementById('connect').click(); true")
        .await;
    tools
        .until(
            "the WebSocket to open",
            "document.getElementById('state').textContent === 'connected (WebSocket)'",
        )
        .await;
    // Published through the webhook receiver with the key the portal issued.
    let r = node
        .client
        .post(format!("{base}/webhook-receiver?topic=orders"))
        .header("x-api-key", &key)
        .header("content-type", "text/plain")
        .body("from the webhook receiver")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tools
        .until("the webhook's message on the page", "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('from the webhook receiver'))")
        .await;
    let _ = chrome.kill().await;
    node.stop().await;
}
