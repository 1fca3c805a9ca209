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

/// The portal's try-it page in a real browser: a developer signed in (the session cookie set in
/// the browser), with an application subscribed to an API, opens the try page from the API's
/// page, connects the live stream (SSE, then WebSocket), publishes from the page and through the
/// webhook receiver, and sees the messages arrive on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_try_page_streams_in_a_real_browser() {
    let browser = chromium();
    let node = common::start(
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\nchannels = { orders = \"orders\" }\n[plans.free]\n",
    )
    .await;
    // A developer through the portal's own forms (no redirects followed: the cookies).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client
        .get(format!("{}/portal/signup", node.base))
        .send()
        .await
        .unwrap();
    let cookie_value = |r: &reqwest::Response, name: &str| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(|v| v[name.len() + 1..].to_owned())
            .unwrap()
    };
    let csrf = cookie_value(&form, "egw_csrf");
    let r = client
        .post(format!("{}/portal/signup", node.base))
        .header("cookie", format!("egw_csrf={csrf}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("password", "a long enough password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = cookie_value(&r, "egw_session");
    let page = client
        .get(format!("{}/portal/account", node.base))
        .header("cookie", format!("egw_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let token = page[at..].split('"').next().unwrap().to_owned();
    for (path, form) in [
        ("/portal/apps", vec![("id", "ada-app")]),
        (
            "/portal/apps/ada-app/subscribe",
            vec![("api", "shop"), ("plan", "free")],
        ),
        ("/portal/apps/ada-app/secrets", vec![]),
    ] {
        let mut form = form;
        form.push(("csrf", token.as_str()));
        let r = client
            .post(format!("{}{path}", node.base))
            .header("cookie", format!("egw_session={session}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_redirection(),
            "{path}: {}",
            r.status()
        );
    }

    // The browser, with the session cookie.
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
    tools
        .call(
            "Network.setCookie",
            serde_json::json!({ "name": "egw_session", "value": session, "url": format!("{}/portal", node.base), "httpOnly": true, "sameSite": "Strict" }),
        )
        .await;
    tools
        .call(
            "Page.navigate",
            serde_json::json!({ "url": format!("{}/portal/apis/shop", node.base) }),
        )
        .await;
    tools
        .until("the API page, signed in", "document.readyState === 'complete' && !!document.querySelector('form[action$=\"/try\"]')")
        .await;
    tools
        .eval("document.querySelector('form[action$=\"/try\"]').submit(); true")
        .await;
    tools
        .until(
            "the try page",
            "document.readyState === 'complete' && !!document.getElementById('connect')",
        )
        .await;

    // SSE: connect, publish from the page, see it arrive.
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
    // WebSocket: reconnect that way, publish from outside (webhook receiver), see it arrive.
    tools
        .eval("document.querySelector('input[value=ws]').checked = true; document.getElementById('connect').click(); true")
        .await;
    tools
        .until(
            "the WebSocket to open",
            "document.getElementById('state').textContent === 'connected (WebSocket)'",
        )
        .await;
    let app_token = tools
        .eval("document.getElementById('try').dataset.token")
        .await;
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .bearer_auth(app_token.as_str().unwrap())
        .header("content-type", "text/plain")
        .body("from outside")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tools
        .until("the outside message on the page", "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes('from outside'))")
        .await;
    let _ = chrome.kill().await;
    node.stop().await;
}
