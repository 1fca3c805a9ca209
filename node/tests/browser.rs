//! A real browser (headless Chromium) reads a topic with `EventSource` and `WebSocket`, from a
//! page of another origin, with its API key in the query (browsers cannot set headers there):
//! the topic belongs to an API that needs credentials. And the portal's try-it page, driven over
//! the DevTools protocol with a developer's session cookie: its live SSE and WebSocket streams
//! show what is published from the page and from outside.
//!
//! Needs `chromium` (Debian package; `.ci/run` installs it). `EVENTGATE_CHROMIUM` names another
//! binary. With `EVENTGATE_PORTAL_SCREENSHOTS=<dir>` the portal walk also writes screenshots of
//! the pages it passes (`docs/screenshots/make.sh` uses it, so the docs' pictures stay current).

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
    /// What the browser logged about the Content-Security-Policy (`Log.entryAdded`): a page
    /// of the portal that needs more than its policy allows.
    csp_reports: Vec<String>,
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
                if answer["method"] == "Log.entryAdded" {
                    let text = answer["params"]["entry"]["text"]
                        .as_str()
                        .unwrap_or_default();
                    if text.contains("Content Security Policy") {
                        self.csp_reports.push(text.to_owned());
                    }
                }
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

    /// Writes a PNG of the whole page, `width` pixels wide, to `$EVENTGATE_PORTAL_SCREENSHOTS/name`
    /// when that is set.
    async fn screenshot(&mut self, name: &str, width: u64) {
        let Ok(dir) = std::env::var("EVENTGATE_PORTAL_SCREENSHOTS") else {
            return;
        };
        let metrics = |height: u64| serde_json::json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 });
        self.call("Emulation.setDeviceMetricsOverride", metrics(800))
            .await;
        let height = self
            .eval("document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap_or(800)
            .clamp(400, 4000);
        self.call("Emulation.setDeviceMetricsOverride", metrics(height))
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            )
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
        self.call(
            "Emulation.clearDeviceMetricsOverride",
            serde_json::json!({}),
        )
        .await;
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
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\ndescription = \"Orders of the shop\"\nchannels = { orders = \"orders\" }\ntags = [\"retail\", \"orders\"]\n[plans.gold]\ndescription = \"For production use\"\napproval_required = true\npublish = { count = 1000, per = \"1h\" }\nmax_connections = 10\n",
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
    let mut tools = DevTools {
        socket,
        next_id: 0,
        csp_reports: Vec::new(),
    };
    tools.call("Log.enable", serde_json::json!({})).await;
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
    tools.screenshot("portal-catalog.png", 1000).await;
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
        .eval("document.getElementById('id').value = 'ada-app'; document.getElementById('name').value = 'First try'; document.querySelector('main form').submit(); true")
        .await;
    at(&mut tools, "/portal/apps/ada-app").await;
    assert_eq!(
        tools.eval("document.querySelector('h1').textContent").await,
        "First try ada-app"
    );
    // Renamed (the id stays).
    tools
        .eval("document.querySelector('form[action$=\"/edit\"] #name').value = 'Ada\\'s shop client'; document.querySelector('form[action$=\"/edit\"]').submit(); true")
        .await;
    tools
        .until(
            "the new name",
            "location.pathname === '/portal/apps/ada-app' && document.querySelector('h1').textContent === 'Ada\\'s shop client ada-app'",
        )
        .await;
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

    // The API's page with the code filled in for the application.
    go(&mut tools, "/portal/apis/shop?app=ada-app").await;
    at(&mut tools, "/portal/apis/shop").await;
    assert!(
        tools
            .eval("[...document.querySelectorAll('pre code')].some(c => c.textContent.includes('CLIENT_ID=\\'ada-app\\'')) && [...document.querySelectorAll('pre code')].some(c => c.textContent.includes('an access token of application ada-app'))")
            .await
            == Value::Bool(true),
        "the snippets name the chosen application"
    );
    tools
        .eval("document.querySelectorAll('details').forEach(d => d.open = true); true")
        .await;
    tools.screenshot("portal-api.png", 1000).await;
    tools.screenshot("portal-api-phone.png", 390).await;

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
    tools.screenshot("portal-try.png", 1000).await;

    // The application's page shows its usage against the plan: the two messages published,
    // the try-it page's stream open.
    go(&mut tools, "/portal/apps/ada-app").await;
    at(&mut tools, "/portal/apps/ada-app").await;
    let published = tools
        .eval("(() => { const row = [...document.querySelectorAll('tr')].find(r => r.textContent.includes('Messages published')); return row ? row.querySelector('meter').value : null; })()")
        .await;
    assert_eq!(published, 2, "published messages counted against the plan");
    assert!(
        tools
            .eval("[...document.querySelectorAll('tr')].some(r => r.textContent.includes('WebSocket and SSE connections') && r.querySelector('meter') && r.querySelector('meter').max === 10)")
            .await
            == Value::Bool(true),
        "the plan's connection limit shown"
    );
    tools.screenshot("portal-app.png", 1000).await;
    assert!(
        tools.csp_reports.is_empty(),
        "the pages needed more than their Content-Security-Policy allows: {:?}",
        tools.csp_reports
    );
    let _ = chrome.kill().await;
    node.stop().await;
}
