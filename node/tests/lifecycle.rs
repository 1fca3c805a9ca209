//! APIs through their lifecycle: an API made through the admin API starts `created` and
//! admits nobody; published, it admits clients and is in the catalog; deprecated, every answer
//! through its base path carries `Deprecation` and `Sunset` and its AsyncAPI says so;
//! retired, its streams are closed with `api-retired`, its WebSub subscriptions end with
//! `hub.mode=denied`, new clients get 410, and it cannot come back.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::callback::CallbackServer;
use common::stream::{ws_next, ws_open};
use common::websub::{wait_active, T};
use eventgate_chaos_tests::sse::Sse;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_is_created_published_deprecated_and_retired() {
    let node =
        common::start("[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n")
            .await;
    let url = |path: &str| format!("{}{path}", node.base);
    let admin_put = |path: &str, body: Value| node.client.put(url(path)).json(&body).send();

    // Made through the admin API: created, in no catalog, admitting nobody.
    let r = admin_put(
        "/admin/apis/shop",
        json!({ "base_path": "/shop", "channels": { "sales": "orders" }, "security": [] }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let api: Value = r.json().await.unwrap();
    assert_eq!(api["lifecycle"], "created");
    let r = node
        .client
        .get(url("/shop/sse/sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not published"),
        "{problem}"
    );
    let catalog: Value = node
        .client
        .get(url("/asyncapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !catalog.to_string().contains("/shop"),
        "a created API is in no catalog"
    );

    // Published (with the CLI): open to clients.
    let bin = eventgate_chaos_tests::eventgate_bin();
    let base = node.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        eventgate_chaos_tests::run_ok(
            &bin,
            &["apis", "lifecycle", "shop", "published", "--node", &base],
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains("\"published\""), "{out}");
    let mut sse = Sse::open(&url("/shop/sse/sales"), None).await;
    let mut ws = ws_open(&url("/shop/ws/sales").replace("http://", "ws://")).await;
    let cb = CallbackServer::start().await;
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "subscribe"),
            ("hub.topic", &url("/shop/topics/sales")),
            ("hub.callback", &cb.url("/sub")),
        ])
        .finish();
    let r = node
        .client
        .post(url("/hub"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_active(&node, &cb.url("/sub")).await;
    // With a subscriber, it cannot go back to created.
    let r = admin_put("/admin/apis/shop/lifecycle", json!({ "state": "created" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // Deprecated with a sunset: every answer through the base path says so, and the AsyncAPI.
    let r = admin_put(
        "/admin/apis/shop/lifecycle",
        json!({ "state": "deprecated", "sunset": "2027-06-30T00:00:00Z" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let api: Value = r.json().await.unwrap();
    assert_eq!(api["sunset"], "2027-06-30T00:00:00Z");
    let r = node
        .client
        .post(url("/shop/webhook-receiver?topic=sales"))
        .header("content-type", "text/plain")
        .body("one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers()["deprecation"]
        .to_str()
        .unwrap()
        .starts_with('@'));
    assert_eq!(r.headers()["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
    let doc: Value = node
        .client
        .get(url("/shop/asyncapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["info"]["x-eventgate-lifecycle"], "deprecated");
    assert!(doc["info"]["description"]
        .as_str()
        .unwrap()
        .starts_with("**Deprecated.**"));
    assert_eq!(sse.expect(WAIT, "the message").await.data, "one");
    assert!(ws_next(&mut ws, WAIT).await.is_ok());
    cb.wait_for(&Method::POST, "/sub", 1, T).await;

    // Retired: streams closed with a clear reason, the WebSub subscriber told, new clients 410.
    let r = admin_put("/admin/apis/shop/lifecycle", json!({ "state": "retired" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let close = sse.expect(WAIT, "the close event").await;
    assert_eq!(close.event.as_deref(), Some("close"));
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["reason"], "api-retired");
    assert_eq!(ws_next(&mut ws, WAIT).await, Err(Some(4010)));
    let denial = &cb.wait_for(&Method::GET, "/sub", 2, T).await[1];
    assert_eq!(denial.query["hub.mode"], "denied");
    assert!(
        denial.query["hub.reason"].contains("retired"),
        "{:?}",
        denial.query
    );
    common::websub::wait_gone(&node, &cb.url("/sub")).await;
    let r = node
        .client
        .get(url("/shop/sse/sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("api-retired"),
        "{problem}"
    );
    // Retired is final; bad states and sunsets are refused, naming the field.
    let r = admin_put(
        "/admin/apis/shop/lifecycle",
        json!({ "state": "published" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let r = admin_put("/admin/apis/shop/lifecycle", json!({ "state": "gone" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "state");
    let r = admin_put(
        "/admin/apis/shop/lifecycle",
        json!({ "state": "retired", "sunset": "tomorrow" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "sunset");
}

/// An API of the configuration is published unless it says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_apis_are_published_unless_they_say_otherwise() {
    let node = common::start(
        "[topics]\nnames = [\"orders\", \"drafts\"]\n[apis.live]\nbase_path = \"/live\"\nchannels = { c = \"orders\" }\nsecurity = []\n[apis.draft]\nbase_path = \"/draft\"\nchannels = { c = \"drafts\" }\nsecurity = []\nlifecycle = \"created\"\n",
    )
    .await;
    let status = |path: &'static str| {
        let client = node.client.clone();
        let url = format!("{}{path}", node.base);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let s = client.get(&url).send().await.unwrap().status().as_u16();
                // The configuration is declared shortly after start.
                if s != 404 || tokio::time::Instant::now() > deadline || path.starts_with("/draft")
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(status("/live/asyncapi.json").await, 200);
    assert_eq!(status("/draft/asyncapi.json").await, 404);
    let r = node
        .client
        .post(format!("{}/draft/webhook-receiver?topic=c", node.base))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
