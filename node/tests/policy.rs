//! Policies end to end on a real node with real clients: API keys and JWTs, topic permissions,
//! plans' rate, connection, subscription and delivery limits, message size, key revocation
//! and token expiry ending streams, and the admin API that manages them.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::callback::CallbackServer;
use common::stream::ws_next;
use common::websub::{wait_active, T};
use common::TestNode;
use eventgate_chaos_tests::sse::Sse;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

struct Keys {
    alice: String,
    reader: String,
    outsider: String,
}

fn keys() -> (Keys, String) {
    let (alice, alice_hash) = eventgate::auth::generate_key();
    let (reader, reader_hash) = eventgate::auth::generate_key();
    let (outsider, outsider_hash) = eventgate::auth::generate_key();
    let config = format!(
        r#"
[topics]
names = ["orders", "open", "ticks"]
[websub]
allow_private_callbacks = true
[auth.jwt]
issuer = ["https://idp.test"]
audience = ["eventgate"]
algorithms = ["HS256"]
secret = "{SECRET}"
leeway = "0s"

[apis.shop]
version = "2.0.0"
channels = {{ orders = "orders" }}
security = ["api_key", "jwt"]
max_message_bytes = 1024

[apis.market]
channels = {{ ticks = "ticks" }}
entrypoints = ["sse", "websocket", "webhook"]

[plans.small]
publish = {{ count = 5, per = "1h" }}
max_connections = 2
max_subscriptions = 1

[plans.trickle]
deliveries = {{ count = 3, per = "1h" }}
on_delivery_limit = "drop"

[applications.alice]
permissions = [{{ topics = "orders", publish = true, subscribe = true }}, {{ topics = "ticks", publish = true, subscribe = true }}]
api_key_hashes = ["{alice_hash}"]
access = {{ shop = "small", market = "trickle" }}

[applications.reader]
permissions = [{{ topics = "ord*", subscribe = true }}]
api_key_hashes = ["{reader_hash}"]
access = {{ shop = "small" }}

[applications.outsider]
permissions = [{{ topics = "*", subscribe = true, publish = true }}]
api_key_hashes = ["{outsider_hash}"]
"#
    );
    (
        Keys {
            alice,
            reader,
            outsider,
        },
        config,
    )
}

/// Starts a node and waits until the configuration's applications are in the replicated state.
async fn start(config: &str) -> TestNode {
    let node = common::start(config).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = node
            .client
            .get(format!("{}/admin/applications/alice", node.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "config never declared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_as(
    node: &TestNode,
    topic: &str,
    key: Option<&str>,
    body: &[u8],
) -> reqwest::Response {
    let mut r = node
        .client
        .post(format!("{}/webhook-receiver?topic={topic}", node.base))
        .header("content-type", "text/plain")
        .body(body.to_vec());
    if let Some(key) = key {
        r = r.header("x-api-key", key);
    }
    r.send().await.unwrap()
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, r.json().await.unwrap())
}

fn jwt(app: &str, exp_in: i64, audience: &str) -> String {
    let now = (eventgate_raft_store::clock::now_ms() / 1000) as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": app, "iss": "https://idp.test", "aud": audience, "exp": now + exp_in, "iat": now }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_enforces_keys_permissions_size_and_rate() {
    let (keys, config) = keys();
    let node = start(&config).await;

    let (status, p) = problem(publish_as(&node, "orders", None, b"x").await).await;
    assert_eq!(status, 401);
    assert_eq!(p["type"], "https://eventgate.dev/problems/unauthorized");
    let r = publish_as(&node, "orders", Some("egk_not-a-key"), b"x").await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"eventgate\""
    );
    assert_eq!(problem(r).await.1["detail"], "unknown API key");

    // Subscribed to the API but without publish permission; permitted but not subscribed.
    let (status, p) = problem(publish_as(&node, "orders", Some(&keys.reader), b"x").await).await;
    assert_eq!(status, 403, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("may not publish"),
        "{p}"
    );
    let (status, p) = problem(publish_as(&node, "orders", Some(&keys.outsider), b"x").await).await;
    assert_eq!(status, 403);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("no access to API `shop`"),
        "{p}"
    );

    // The API's message size.
    let (status, _) =
        problem(publish_as(&node, "orders", Some(&keys.alice), &[b'x'; 1025]).await).await;
    assert_eq!(status, 413);

    // The plan: 5 per hour (the 413 above took none of it).
    for i in 0..5u64 {
        let r = publish_as(&node, "orders", Some(&keys.alice), b"ok").await;
        assert_eq!(r.status(), 202, "publish {i}");
        assert_eq!(r.headers()["ratelimit-limit"], "5");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            (4 - i).to_string().as_str()
        );
        assert_eq!(r.headers()["ratelimit-policy"], "5;w=3600");
    }
    let r = publish_as(&node, "orders", Some(&keys.alice), b"over").await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    let (status, p) = problem(r).await;
    assert_eq!(status, 429);
    assert_eq!(p["type"], "https://eventgate.dev/problems/rate-limited");

    // A JWT for the same application draws on the same quota.
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .bearer_auth(jwt("alice", 60, "eventgate"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);

    // A topic of no API stays open (auth.anonymous defaults to on).
    assert_eq!(publish_as(&node, "open", None, b"x").await.status(), 202);
    // Credentials presented there are still checked.
    assert_eq!(
        publish_as(&node, "open", Some("egk_wrong"), b"x")
            .await
            .status(),
        401
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified() {
    let (_, config) = keys();
    let node = start(&config).await;
    let send = |token: String| {
        let node = &node;
        async move {
            node.client
                .get(format!("{}/sse/orders", node.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let (status, p) = problem(send(jwt("alice", -5, "eventgate")).await).await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (401, "the token has expired")
    );
    let (status, p) = problem(send(jwt("alice", 60, "someone-else")).await).await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (401, "the token's audience is not accepted")
    );
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "alice", "iss": "https://idp.test", "aud": "eventgate", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
    )
    .unwrap();
    let (status, p) = problem(send(forged).await).await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (401, "the token's signature does not verify")
    );
    let (status, p) = problem(send(jwt("nobody", 60, "eventgate")).await).await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (403, "no application `nobody`")
    );
    let ok = send(jwt("alice", 60, "eventgate")).await;
    assert_eq!(ok.status(), 200);
    drop(ok);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_rights_and_end_when_they_go() {
    let (keys, config) = keys();
    let node = start(&config).await;
    let sse_url = |key: &str| format!("{}/sse/orders?access_token={key}", node.base);
    let ws_url = |key: &str| {
        format!(
            "{}/ws/orders?access_token={key}",
            node.base.replacen("http://", "ws://", 1)
        )
    };

    // No credentials: 401, before any upgrade; no permission: 403.
    let r = node
        .client
        .get(format!("{}/sse/orders", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 401);
    match tokio_tungstenite::connect_async(format!(
        "{}/ws/orders",
        node.base.replacen("http://", "ws://", 1)
    ))
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    let r = node
        .client
        .get(sse_url(&keys.outsider))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 403);

    // Happy path on both, each counted against the plan's two connections.
    let mut sse = Sse::open(&sse_url(&keys.alice), None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&keys.alice))
        .await
        .unwrap();
    let third = node.client.get(sse_url(&keys.alice)).send().await.unwrap();
    let (status, p) = problem(third).await;
    assert_eq!(status, 429, "{p}");
    assert_eq!(p["type"], "https://eventgate.dev/problems/quota-exceeded");

    assert_eq!(
        publish_as(&node, "orders", Some(&keys.alice), b"hello")
            .await
            .status(),
        202
    );
    let event = sse.expect(WAIT, "the published message").await;
    assert_eq!(event.data, "hello");
    assert_eq!(
        ws_next(&mut ws, WAIT).await.unwrap(),
        Message::Text("hello".into())
    );

    // A frame over the API's size closes the WebSocket with 1009.
    ws.send(Message::Text("x".repeat(2000).into()))
        .await
        .unwrap();
    assert_eq!(ws_next(&mut ws, WAIT).await, Err(Some(1009)));

    // Revoking the key ends the SSE stream (within a second) with a reason, and refuses the key.
    let key_id = eventgate::auth::sha256_hex(&keys.alice)[..16].to_owned();
    let revoked_at = tokio::time::Instant::now();
    let r = node
        .client
        .delete(format!(
            "{}/admin/applications/alice/keys/{key_id}",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let close = sse.expect(WAIT, "the close event").await;
    assert_eq!(close.event.as_deref(), Some("close"));
    let close: Value = serde_json::from_str(&close.data).unwrap();
    assert_eq!(close["reason"], "credential-revoked");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked_at.elapsed()
    );
    let (status, p) = problem(node.client.get(sse_url(&keys.alice)).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(p["detail"].as_str().unwrap().contains("revoked"));

    // The slot of the closed streams is free again: a JWT of the same application connects,
    // and its stream ends when the token expires.
    let token = jwt("alice", 2, "eventgate");
    let mut request = format!("{}/ws/orders", node.base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        ws_next(&mut ws, WAIT).await,
        Err(Some(4001)),
        "credential-expired"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_over_the_plan_are_dropped_with_a_gap() {
    let (keys, config) = keys();
    let node = start(&config).await;
    let mut sse = Sse::open(
        &format!("{}/sse/ticks?access_token={}", node.base, keys.alice),
        None,
    )
    .await;
    for i in 0..5 {
        let r = publish_as(
            &node,
            "ticks",
            Some(&keys.alice),
            format!("t{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let mut data = Vec::new();
    let mut missed = 0;
    while data.len() + missed < 5 {
        let e = sse.expect(WAIT, "ticks").await;
        match e.event.as_deref() {
            Some("gap") => {
                missed += serde_json::from_str::<Value>(&e.data).unwrap()["missed"]
                    .as_u64()
                    .unwrap() as usize
            }
            _ => data.push(e.data),
        }
    }
    assert_eq!(data, ["t0", "t1", "t2"]);
    assert_eq!(missed, 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_denies_and_counts_subscriptions() {
    let (keys, config) = keys();
    let node = start(&config).await;
    let cb = CallbackServer::start().await;
    let form = |callback: &str| {
        vec![
            ("hub.mode".to_owned(), "subscribe".to_owned()),
            ("hub.topic".to_owned(), "orders".to_owned()),
            ("hub.callback".to_owned(), callback.to_owned()),
        ]
    };
    let post = |key: Option<&str>, form: Vec<(String, String)>| {
        let node = &node;
        let key = key.map(str::to_owned);
        async move {
            let body: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let mut r = node
                .client
                .post(format!("{}/hub", node.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            if let Some(key) = key {
                r = r.header("x-api-key", key);
            }
            r.send().await.unwrap()
        }
    };
    // No credentials: 401 at once, and nothing reaches the callback.
    let r = post(None, form(&cb.url("/anon"))).await;
    assert_eq!(problem(r).await.0, 401);

    // Known but not allowed: accepted, then denied at the callback (WebSub §5.2).
    let r = post(Some(&keys.outsider), form(&cb.url("/outsider"))).await;
    assert_eq!(r.status(), 202);
    let denial = &cb.wait_for(&Method::GET, "/outsider", 1, T).await[0];
    assert_eq!(denial.query["hub.mode"], "denied");
    assert_eq!(denial.query["hub.topic"], "orders");
    assert!(denial.query["hub.reason"].contains("no access to API `shop`"));

    // An API that does not offer WebSub.
    let mut ticks = form(&cb.url("/ticks"));
    ticks[1].1 = "ticks".to_owned();
    assert_eq!(post(Some(&keys.alice), ticks).await.status(), 202);
    let denial = &cb.wait_for(&Method::GET, "/ticks", 1, T).await[0];
    assert_eq!(denial.query["hub.mode"], "denied");
    assert!(
        denial.query["hub.reason"].contains("not offered over websub"),
        "{:?}",
        denial.query
    );

    // Allowed: verified and active; the plan allows one subscription.
    let r = post(Some(&keys.reader), form(&cb.url("/reader"))).await;
    assert_eq!(r.status(), 202);
    wait_active(&node, &cb.url("/reader")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // The owner is recorded just after activation.
        let r = post(Some(&keys.reader), form(&cb.url("/reader-2"))).await;
        if r.status() == 429 {
            assert_eq!(
                problem(r).await.1["type"],
                "https://eventgate.dev/problems/quota-exceeded"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second subscription never refused"
        );
        // It was accepted before the first was counted: let it go away again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = post(Some(&keys.reader), {
            let mut f = form(&cb.url("/reader-2"));
            f[0].1 = "unsubscribe".to_owned();
            f
        })
        .await;
    }
    // A renewal of the counted one is not a new subscription.
    let r = post(Some(&keys.reader), form(&cb.url("/reader"))).await;
    assert_eq!(r.status(), 202);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_the_flow_and_refuses_bad_documents_whole() {
    let node = common::start("[topics]\nnames = [\"payments\"]\n").await;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let node = &node;
        let path = path.to_owned();
        async move {
            let mut r = node
                .client
                .request(method, format!("{}/admin{path}", node.base));
            if let Some(body) = body {
                r = r.json(&body);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Bad documents: 400 naming the field, nothing written.
    let (status, p) = admin(
        Method::PUT,
        "/apis/pay",
        Some(json!({ "channels": { "payments": "bad topic" } })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("channels.payments")),
        "{p}"
    );
    let (status, p) = admin(
        Method::PUT,
        "/apis/pay",
        Some(json!({ "channels": { "payments": "payments" }, "entrypoints": ["smoke-signals"] })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("entrypoints")),
        "{p}"
    );
    let (status, p) = admin(
        Method::PUT,
        "/plans/gold",
        Some(json!({ "publish": { "count": 10, "per": "soon" } })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("publish.per")),
        "{p}"
    );
    let (status, p) = admin(
        Method::PUT,
        "/applications/shop",
        Some(json!({ "permissions": [{ "topics": "pay ments", "publish": true }] })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("permissions[0].topics")),
        "{p}"
    );
    let (status, p) = admin(Method::PUT, "/applications/Shop!", Some(json!({}))).await;
    assert_eq!((status, p["field"].as_str()), (400, Some("id")), "{p}");
    let (status, p) = admin(
        Method::PUT,
        "/apis/pay",
        Some(json!({ "channels": { "payments": "payments" }, "security": ["jwt"] })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("security")),
        "no [auth.jwt] here: {p}"
    );
    assert_eq!(admin(Method::GET, "/apis/pay", None).await.0, 404);
    assert_eq!(admin(Method::GET, "/applications/shop", None).await.0, 404);

    // The flow: an API (made through the admin API it starts `created`, admitting nobody;
    // published here at once), a plan needing approval, an application, a key, a subscription.
    let (status, api) = admin(Method::PUT, "/apis/pay", Some(json!({ "version": "1.0.0", "channels": { "payments": "payments" }, "security": ["api_key"], "lifecycle": "published" }))).await;
    assert_eq!(
        (status, api["lifecycle"].as_str()),
        (201, Some("published"))
    );
    let (status, _) = admin(
        Method::PUT,
        "/plans/gold",
        Some(json!({ "publish": { "count": 100, "per": "1m" }, "approval_required": true })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = admin(
        Method::PUT,
        "/applications/shop",
        Some(json!({ "permissions": [{ "topics": "pay*", "publish": true }] })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, created) = admin(Method::POST, "/applications/shop/keys", None).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_owned();
    let (_, listed) = admin(Method::GET, "/applications/shop/keys", None).await;
    assert!(
        listed["keys"][0].get("key").is_none(),
        "a key is shown once: {listed}"
    );
    assert_eq!(listed["keys"][0]["id"], created["id"]);

    let (status, p) = admin(
        Method::PUT,
        "/applications/shop/access/pay",
        Some(json!({ "plan": "platinum" })),
    )
    .await;
    assert_eq!((status, p["field"].as_str()), (400, Some("plan")));
    let (status, access) = admin(
        Method::PUT,
        "/applications/shop/access/pay",
        Some(json!({ "plan": "gold" })),
    )
    .await;
    assert_eq!((status, access["state"].as_str()), (200, Some("pending")));
    let (status, p) = problem(publish_as(&node, "payments", Some(&key), b"1").await).await;
    assert_eq!(status, 403);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("waiting for approval"),
        "{p}"
    );
    let (status, _) = admin(Method::DELETE, "/plans/gold", None).await;
    assert_eq!(status, 409, "a plan in use stays");
    assert_eq!(
        admin(Method::POST, "/applications/shop/access/pay/approve", None)
            .await
            .0,
        200
    );
    assert_eq!(
        publish_as(&node, "payments", Some(&key), b"1")
            .await
            .status(),
        202
    );

    // Its AsyncAPI document declares the key.
    let doc: Value = node
        .client
        .get(format!("{}/apis/pay/asyncapi.json", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["info"]["title"], "pay");
    assert_eq!(
        doc["operations"]["payments.publish"]["security"][0]["$ref"],
        "#/components/securitySchemes/apiKeyHeader"
    );
    assert!(doc["servers"].get("websocket").is_some());

    // Deleting the application removes its keys.
    assert_eq!(
        admin(Method::DELETE, "/applications/shop", None).await.0,
        200
    );
    assert_eq!(
        publish_as(&node, "payments", Some(&key), b"1")
            .await
            .status(),
        401
    );
    node.stop().await;
}

/// The admin API's OpenAPI document lists every route, and every route it lists exists: each
/// is called on a running node and answers from its handler (not the router's bare 404/405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_openapi_document_matches_the_routes() {
    let node = common::start("").await;
    let doc: Value = node
        .client
        .get(format!("{}/admin/openapi.json", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    let mut calls = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            // Placeholders that no entity has; a body that parses nowhere.
            let concrete = path
                .replace("{partition}", "0")
                .replace("{offset}", "0")
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        "nothing-here"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            if concrete.ends_with("/cluster/leave") {
                continue; // would remove the only node
            }
            let r = node
                .client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", node.base),
                )
                .header("content-type", "application/json")
                .body("{\"unknown-field\": 1}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let problem = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json");
            assert!(
                status != 405 && (status != 404 || problem),
                "{method} {path}: {status} is not from a handler"
            );
            calls += 1;
        }
    }
    assert!(calls >= 25, "{calls}");
    node.stop().await;
}

/// Every answer of the admin API matches the schema its OpenAPI document gives it: a walk
/// through the API-management loop (API, plan, application, key, client secret, access,
/// invitation) and the reads, each answer validated with a JSON Schema validator against the
/// document's own components. Operation ids and tags are there and unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_match_their_documented_schemas() {
    let node = common::start("[topics]\nnames = [\"orders\"]\n").await;
    let doc: Value = node
        .client
        .get(format!("{}/admin/openapi.json", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operation id {id} twice");
            assert!(!op["tags"][0].as_str().unwrap().is_empty());
        }
    }
    // The answer's schema of `method template`, with the document's components beside it so
    // that its `$ref`s resolve.
    let validator = |method: &str, template: &str, status: u16| {
        let op = &doc["paths"][format!("/admin{template}")][method];
        let schema =
            op["responses"][status.to_string()]["content"]["application/json"]["schema"].clone();
        assert!(!schema.is_null(), "{method} {template} {status}: no schema");
        let mut root = schema;
        root["components"] = doc["components"].clone();
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{template}: {e}"))
    };
    let calls: &[(&str, &str, &str, Option<Value>, u16)] = &[
        (
            "put",
            "/plans/{name}",
            "/plans/gold",
            Some(json!({ "publish": { "count": 100, "per": "1m" }, "max_connections": 5 })),
            201,
        ),
        ("get", "/plans/{name}", "/plans/gold", None, 200),
        ("get", "/plans", "/plans", None, 200),
        (
            "put",
            "/apis/{name}",
            "/apis/shop",
            Some(
                json!({ "channels": { "orders": "orders" }, "tags": ["retail"], "verify_ingest": { "scheme": "hmac", "secret": "s3cret" } }),
            ),
            201,
        ),
        (
            "put",
            "/apis/{name}/lifecycle",
            "/apis/shop/lifecycle",
            Some(json!({ "state": "published" })),
            200,
        ),
        ("get", "/apis/{name}", "/apis/shop", None, 200),
        ("get", "/apis", "/apis", None, 200),
        (
            "put",
            "/applications/{id}",
            "/applications/app1",
            Some(
                json!({ "name": "App one", "permissions": [{ "topics": "orders", "publish": true, "subscribe": true }] }),
            ),
            201,
        ),
        (
            "post",
            "/applications/{id}/keys",
            "/applications/app1/keys",
            Some(json!({ "expires_in": "90d" })),
            201,
        ),
        (
            "get",
            "/applications/{id}/keys",
            "/applications/app1/keys",
            None,
            200,
        ),
        (
            "put",
            "/applications/{id}/access/{api}",
            "/applications/app1/access/shop",
            Some(json!({ "plan": "gold" })),
            200,
        ),
        (
            "get",
            "/applications/{id}/access",
            "/applications/app1/access",
            None,
            200,
        ),
        (
            "post",
            "/applications/{id}/access/{api}/approve",
            "/applications/app1/access/shop/approve",
            None,
            200,
        ),
        ("get", "/applications/{id}", "/applications/app1", None, 200),
        ("get", "/applications", "/applications", None, 200),
        (
            "post",
            "/applications/{id}/client-secrets",
            "/applications/app1/client-secrets",
            Some(json!({ "overlap": "1h" })),
            201,
        ),
        (
            "get",
            "/applications/{id}/client-secrets",
            "/applications/app1/client-secrets",
            None,
            200,
        ),
        (
            "post",
            "/accounts/invitations",
            "/accounts/invitations",
            Some(json!({ "email": "dev@example.com" })),
            201,
        ),
        (
            "get",
            "/accounts/invitations",
            "/accounts/invitations",
            None,
            200,
        ),
        ("get", "/accounts", "/accounts", None, 200),
        ("get", "/cluster/status", "/cluster/status", None, 200),
        ("get", "/cluster/node", "/cluster/node", None, 200),
        (
            "put",
            "/subscriptions/{id}",
            "/subscriptions/sub1",
            Some(
                json!({ "topic": "orders", "callback": "https://example.com/cb", "lease_seconds": 3600, "secret": "s" }),
            ),
            201,
        ),
        (
            "get",
            "/subscriptions/{id}",
            "/subscriptions/sub1",
            None,
            200,
        ),
        (
            "post",
            "/subscriptions/{id}/secret",
            "/subscriptions/sub1/secret",
            Some(json!({ "overlap": "1h" })),
            200,
        ),
        (
            "get",
            "/subscriptions/{id}/attempts",
            "/subscriptions/sub1/attempts",
            None,
            200,
        ),
        ("get", "/subscriptions", "/subscriptions", None, 200),
        ("get", "/endpoints", "/endpoints", None, 200),
        ("get", "/dead-letters", "/dead-letters", None, 200),
        (
            "put",
            "/plans/{name}",
            "/plans/silver",
            Some(json!({})),
            201,
        ),
        ("delete", "/plans/{name}", "/plans/silver", None, 200),
    ];
    for (method, template, path, body, status) in calls {
        let mut request = node.client.request(
            method.to_uppercase().parse().unwrap(),
            format!("{}/admin{path}", node.base),
        );
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{method} {path}");
        let answer: Value = r.json().await.unwrap();
        let validator = validator(method, template, *status);
        let errors: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path}: the answer does not match its schema: {errors:?}\n{answer:#}"
        );
    }
    node.stop().await;
}

/// ES256 tokens verified against a JWK set served over HTTP: a key rotated in later (new
/// `kid`) is fetched when a token names it; a `kid` the set does not hold is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_verify_against_a_rotating_jwks_url() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use std::sync::{Arc, Mutex};

    let signer = |kid: &str| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        (key, jwk)
    };
    let (key1, jwk1) = signer("k1");
    let (key2, jwk2) = signer("k2");
    let (key3, _) = signer("k3");
    let served = Arc::new(Mutex::new(JwkSet { keys: vec![jwk1] }));
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(
                |axum::extract::State(set): axum::extract::State<Arc<Mutex<JwkSet>>>| async move {
                    axum::Json(set.lock().unwrap().clone())
                },
            ),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let node = start(&format!(
        r#"[topics]
names = ["orders"]
[auth.jwt]
issuer = ["https://idp.test"]
audience = ["eventgate"]
algorithms = ["ES256"]
jwks_url = "{jwks_url}"
[apis.shop]
channels = {{ orders = "orders" }}
security = ["jwt"]
[plans.free]
[applications.alice]
permissions = [{{ topics = "orders", subscribe = true }}]
access = {{ shop = "free" }}
"#
    ))
    .await;
    let token = |key: &jsonwebtoken::EncodingKey, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let now = eventgate_raft_store::clock::now_ms() / 1000;
        jsonwebtoken::encode(
            &header,
            &json!({ "sub": "alice", "iss": "https://idp.test", "aud": "eventgate", "exp": now + 60 }),
            key,
        )
        .unwrap()
    };
    let status = |token: String| {
        let node = &node;
        async move {
            let r = node
                .client
                .get(format!("{}/sse/orders", node.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let detail = if status == 200 {
                String::new()
            } else {
                r.json::<Value>().await.unwrap()["detail"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            (status, detail)
        }
    };
    assert_eq!(status(token(&key1, "k1")).await.0, 200);
    // An HS256 token is refused: only ES256 is accepted.
    let (code, detail) = status(jwt("alice", 60, "eventgate")).await;
    assert_eq!(code, 401);
    assert!(detail.contains("not accepted"), "{detail}");
    // Rotation: the identity provider publishes k2; a token naming it triggers a reload.
    served.lock().unwrap().keys.push(jwk2);
    assert_eq!(status(token(&key2, "k2")).await.0, 200);
    let (code, detail) = status(token(&key3, "k3")).await;
    assert_eq!(code, 401);
    assert!(detail.contains("no verification key"), "{detail}");
    // A token signed by another key under a known kid fails its signature.
    let (code, detail) = status(token(&key3, "k1")).await;
    assert_eq!(
        (code, detail.as_str()),
        (401, "the token's signature does not verify")
    );
    node.stop().await;
}

/// RS256 tokens verified with a PEM public key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_with_a_pem_public_key() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let node = start(&format!(
        r#"[topics]
names = ["orders"]
[auth.jwt]
issuer = ["https://idp.test"]
audience = ["eventgate"]
algorithms = ["RS256"]
public_key_file = "{fixtures}/rs256-public.pem"
[apis.shop]
channels = {{ orders = "orders" }}
security = ["jwt"]
[plans.free]
[applications.alice]
permissions = [{{ topics = "orders", publish = true }}]
access = {{ shop = "free" }}
"#
    ))
    .await;
    let private = std::fs::read(format!("{fixtures}/rs256-private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let now = eventgate_raft_store::clock::now_ms() / 1000;
    let claims = |app: &str, nbf: u64| json!({ "sub": app, "iss": "https://idp.test", "aud": "eventgate", "exp": now + 60, "nbf": nbf });
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let publish = |token: String| {
        let node = &node;
        async move {
            node.client
                .post(format!("{}/webhook-receiver?topic=orders", node.base))
                .bearer_auth(token)
                .body("x")
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(publish(sign(claims("alice", now))).await.status(), 202);
    let (status, p) = problem(publish(sign(claims("alice", now + 3600))).await).await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (401, "the token is not valid yet (nbf)")
    );
    node.stop().await;
}

/// An API's base path routes its channels on every entrypoint, and only that API decides
/// there: the same topic, open through a keyless API, needs a key under the keyed API's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_base_paths_route_channels_and_decide_alone() {
    let (key, key_hash) = eventgate::auth::generate_key();
    let config = format!(
        r#"
[topics]
names = ["orders"]
[websub]
allow_private_callbacks = true
[apis.shop]
base_path = "/shop/v2"
channels = {{ purchases = "orders" }}
security = ["api_key"]
[apis.open]
base_path = "/open"
channels = {{ feed = "orders" }}
entrypoints = ["sse"]
security = []
[plans.free]
[applications.alice]
permissions = [{{ topics = "orders", publish = true, subscribe = true }}]
api_key_hashes = ["{key_hash}"]
access = {{ shop = "free" }}
"#
    );
    let node = start(&config).await;
    let url = |path: &str| format!("{}{path}", node.base);
    let get = |path: &str| node.client.get(url(path)).send();

    // Unknown routes and channels: 404 problem+json naming what exists.
    let (status, p) = problem(get("/nothing/here").await.unwrap()).await;
    assert_eq!(status, 404, "{p}");
    let (status, p) = problem(get("/shop/v2/sse/nope").await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(
        p["detail"].as_str().unwrap().contains("no channel `nope`"),
        "{p}"
    );
    assert_eq!(
        problem(get("/shop/v2/elsewhere").await.unwrap()).await.0,
        404
    );

    // The topic through the keyless API's path is open; through the shop's it needs a key.
    let r = get("/open/sse/feed").await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    assert_eq!(
        problem(get("/shop/v2/sse/purchases").await.unwrap())
            .await
            .0,
        401
    );
    // The keyless API offers SSE only.
    let r = node
        .client
        .post(url("/open/webhook-receiver?topic=feed"))
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!(status, 403);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not offered over webhook"),
        "{p}"
    );

    // Happy path: SSE and WebSocket by channel name, publishing by channel name.
    let mut sse = Sse::open(
        &url(&format!("/shop/v2/sse/purchases?access_token={key}")),
        None,
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/shop/v2/ws/purchases?access_token={key}",
        node.base.replacen("http://", "ws://", 1)
    ))
    .await
    .unwrap();
    let publish = |body: &'static str| {
        node.client
            .post(url("/shop/v2/webhook-receiver?topic=purchases"))
            .header("x-api-key", &key)
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };
    assert_eq!(publish("via the API").await.unwrap().status(), 202);
    assert_eq!(sse.expect(WAIT, "the message").await.data, "via the API");
    assert_eq!(
        ws_next(&mut ws, WAIT).await.unwrap(),
        Message::Text("via the API".into())
    );
    let r = node
        .client
        .post(url("/shop/v2/webhook-receiver"))
        .header("x-api-key", &key)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!((status, p["field"].as_str()), (400, Some("topic")), "{p}");

    // WebSub: discovery under the API names the API's topic URL, which the hub accepts; it
    // needs the API's credentials, as subscribing does.
    let (status, _) = problem(get("/shop/v2/topics/purchases").await.unwrap()).await;
    assert_eq!(status, 401);
    let r = node
        .client
        .get(url("/shop/v2/topics/purchases"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let topic_url = url("/shop/v2/topics/purchases");
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("<{topic_url}>; rel=\"self\"")),
        "{link}"
    );
    let cb = CallbackServer::start().await;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "subscribe"),
            ("hub.topic", topic_url.as_str()),
            ("hub.callback", cb.url("/shop").as_str()),
        ])
        .finish();
    let r = node
        .client
        .post(url("/hub"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", &key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_active(&node, &cb.url("/shop")).await;
    assert_eq!(publish("to the callback").await.unwrap().status(), 202);
    let delivered = &cb.wait_for(&Method::POST, "/shop", 1, T).await[0];
    assert_eq!(&delivered.body[..], b"to the callback");
    let link = delivered.headers["link"].to_str().unwrap();
    assert!(link.contains(&topic_url), "{link}");

    // The admin API refuses base paths that are taken or the gateway's own.
    for (base_path, needle) in [
        ("/ws/x", "own routes"),
        ("/open", "API `open`"),
        ("shop", "starts with"),
    ] {
        let r = node
            .client
            .put(url("/admin/apis/other"))
            .json(&json!({ "channels": { "c": "orders" }, "base_path": base_path }))
            .send()
            .await
            .unwrap();
        let (status, p) = problem(r).await;
        assert_eq!(
            (status, p["field"].as_str()),
            (400, Some("base_path")),
            "{p}"
        );
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    node.stop().await;
}

/// A WebSub subscription made under a plan spends the plan's delivery quota: over it, the
/// plan drops (counted in `eventgate_rate_limited_total{kind="deliveries"}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websub_deliveries_spend_the_plans_quota() {
    let (key, key_hash) = eventgate::auth::generate_key();
    let config = format!(
        r#"
[topics]
names = ["news"]
[websub]
allow_private_callbacks = true
[apis.news]
channels = {{ news = "news" }}
entrypoints = ["websub", "webhook"]
[plans.two]
deliveries = {{ count = 2, per = "1h" }}
on_delivery_limit = "drop"
[applications.alice]
permissions = [{{ topics = "news", publish = true, subscribe = true }}]
api_key_hashes = ["{key_hash}"]
access = {{ news = "two" }}
"#
    );
    let node = start(&config).await;
    let cb = CallbackServer::start().await;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "subscribe"),
            ("hub.topic", "news"),
            ("hub.callback", cb.url("/news").as_str()),
        ])
        .finish();
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", &key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_active(&node, &cb.url("/news")).await;
    // Activation records the subscription's application in the same write: counted at once,
    // under the access list and under its older name alike.
    let get = |path: &'static str| {
        let node = &node;
        async move {
            node.client
                .get(format!("{}/admin/applications/alice/{path}", node.base))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let access = get("access").await;
    assert_eq!(access["access"][0]["websub_subscriptions"], 1, "{access}");
    let legacy = get("subscriptions").await;
    assert_eq!(legacy["subscriptions"], access["access"], "{legacy}");
    for i in 0..5 {
        let r = publish_as(&node, "news", Some(&key), format!("n{i}").as_bytes()).await;
        assert_eq!(r.status(), 202);
    }
    // Every message is decided once three have been dropped.
    node.wait_metric("eventgate_rate_limited_total{kind=\"deliveries\"} 3")
        .await;
    let delivered = cb.wait_for(&Method::POST, "/news", 2, T).await;
    let bodies: Vec<&[u8]> = delivered.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"n0"[..], &b"n1"[..]]);
    // What an operator sees of it.
    let text = node.metrics().await;
    for line in [
        "eventgate_messages_in_total{entrypoint=\"webhook\"} 5",
        "eventgate_websub_deliveries_total 2",
        "eventgate_websub_dropped_total 3",
        "eventgate_websub_dead_letters_total 0",
        "eventgate_connections{entrypoint=\"sse\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let commits = text
        .lines()
        .find_map(|l| l.strip_prefix("eventgate_raft_write_latency_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(commits > 0, "{text}");
    node.stop().await;
}

/// A WebSub subscription lives only as long as the rights that admitted it: revoking the key
/// it was made with, disabling or deleting its application, withdrawing the application's
/// permission or its access to the API each end it — removed from the replicated state, the
/// subscriber told with `hub.mode=denied` — and nothing published after the change reaches it.
#[tokio::test]
async fn websub_subscriptions_end_when_their_rights_are_withdrawn() {
    let apps = [
        "deleted",
        "key-revoked",
        "disabled",
        "unpermitted",
        "no-access",
        "kept",
    ];
    let keys: Vec<(String, String)> = apps
        .iter()
        .map(|_| eventgate::auth::generate_key())
        .collect();
    let mut config = String::from(
        r#"
[topics]
names = ["orders"]
[websub]
allow_private_callbacks = true
[apis.shop]
channels = { orders = "orders" }
security = ["api_key"]
[plans.open]
description = "no limits"
"#,
    );
    for (app, (_, hash)) in apps.iter().zip(&keys) {
        config.push_str(&format!(
            "[applications.{app}]\npermissions = [{{ topics = \"orders\", publish = true, subscribe = true }}]\napi_key_hashes = [\"{hash}\"]\naccess = {{ shop = \"open\" }}\n"
        ));
    }
    let node = common::start(&config).await;
    let cb = CallbackServer::start().await;
    let admin = |method: reqwest::Method, path: String, body: Option<Value>| {
        let node = &node;
        async move {
            let mut r = node
                .client
                .request(method, format!("{}/admin{path}", node.base));
            if let Some(body) = body {
                r = r.json(&body);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // The configuration is declared shortly after start.
    let deadline = tokio::time::Instant::now() + WAIT;
    while admin(reqwest::Method::GET, "/applications/kept".to_owned(), None)
        .await
        .0
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "config never declared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (app, (key, _)) in apps.iter().zip(&keys) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", &cb.url(&format!("/{app}"))),
            ])
            .finish();
        let r = node
            .client
            .post(format!("{}/hub", node.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-api-key", key.as_str())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{app}");
        wait_active(&node, &cb.url(&format!("/{app}"))).await;
    }

    let key_id = |i: usize| keys[i].1[..16].to_owned();
    let permissions = |subscribe: bool| json!({ "permissions": [{ "topics": "orders", "publish": true, "subscribe": subscribe }] });
    let changes = [
        (
            reqwest::Method::DELETE,
            "/applications/deleted".to_owned(),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("/applications/key-revoked/keys/{}", key_id(1)),
            None,
        ),
        (reqwest::Method::PUT, "/applications/disabled".to_owned(), {
            let mut body = permissions(true);
            body["disabled"] = json!(true);
            Some(body)
        }),
        (
            reqwest::Method::PUT,
            "/applications/unpermitted".to_owned(),
            Some(permissions(false)),
        ),
        (
            reqwest::Method::DELETE,
            "/applications/no-access/access/shop".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in changes {
        let (status, text) = admin(method, path.clone(), body).await;
        assert!(status == 200 || status == 201, "{path}: {status} {text}");
    }

    // Published after every change was applied: only the untouched application gets it.
    let r = publish_as(&node, "orders", Some(&keys[5].0), b"after").await;
    assert_eq!(r.status(), 202);
    let got = cb.wait_for(&Method::POST, "/kept", 1, T).await;
    assert_eq!(&got[0].body[..], b"after");
    for app in &apps[..5] {
        let path = format!("/{app}");
        let denial = &cb.wait_for(&Method::GET, &path, 2, T).await[1];
        assert_eq!(denial.query["hub.mode"], "denied", "{app}");
        assert_eq!(denial.query["hub.topic"], "orders", "{app}");
        assert!(!denial.query["hub.reason"].is_empty(), "{app}");
        common::websub::wait_gone(&node, &cb.url(&path)).await;
        assert!(
            cb.requests(&Method::POST, &path).is_empty(),
            "{app}: delivered after its right was withdrawn"
        );
    }
    assert_eq!(common::websub::subscriptions(&node).await.len(), 1);
}

/// Small edges of the HTTP surface: every error is problem+json (405 too), the `Bearer`
/// scheme is case-insensitive, form fields that are not UTF-8 are refused rather than mangled,
/// and WebSub discovery is admitted as subscribing is.
#[tokio::test]
async fn errors_schemes_forms_and_discovery_hold_at_the_edges() {
    let (keys, config) = keys();
    let node = start(&config).await;
    // 405 with a problem and `Allow`, on the gateway's routes and the admin API's.
    for (method, path) in [
        (reqwest::Method::DELETE, "/hub"),
        (reqwest::Method::PUT, "/webhook-receiver"),
        (reqwest::Method::POST, "/admin/openapi.json"),
    ] {
        let r = node
            .client
            .request(method.clone(), format!("{}{path}", node.base))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("allow"), "{method} {path}");
        let (status, p) = problem(r).await;
        assert_eq!(status, 405, "{method} {path}");
        assert!(
            p["type"].as_str().unwrap().ends_with("/method-not-allowed"),
            "{p}"
        );
    }
    // `bearer` in any case.
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("authorization", format!("bEaReR {}", keys.alice))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // A secret that is not UTF-8 is refused, naming the field.
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", &keys.alice)
        .body("hub.mode=subscribe&hub.topic=orders&hub.callback=http%3A%2F%2F127.0.0.1%3A9%2Fcb&hub.secret=%FF%FE")
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("hub.secret")),
        "{p}"
    );
    // Discovery: a secured API's topic needs its credentials; an API without WebSub refuses.
    let discover = |topic: &'static str, key: Option<&str>| {
        let mut r = node.client.get(format!("{}/topics/{topic}", node.base));
        if let Some(key) = key {
            r = r.header("x-api-key", key.to_owned());
        }
        r.send()
    };
    let (status, _) = problem(discover("orders", None).await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(
        discover("orders", Some(&keys.alice))
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, p) = problem(discover("ticks", Some(&keys.alice)).await.unwrap()).await;
    assert_eq!(status, 403, "{p}");
    // A topic of no API stays open while anonymous access is on.
    assert_eq!(discover("open", None).await.unwrap().status(), 200);
}

/// A WebSocket's right to publish is decided for every frame, not once at connect: withdrawn
/// (reading kept), the next frame closes the socket with policy-violation and is not stored.
#[tokio::test]
async fn a_websocket_loses_its_publish_right_as_soon_as_it_is_withdrawn() {
    let (keys, config) = keys();
    let node = start(&config).await;
    let url = format!(
        "{}/ws/orders?envelope=json&access_token={}",
        node.base.replacen("http://", "ws://", 1),
        keys.alice
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text("first".into())).await.unwrap();
    let ack: Value = match ws_next(&mut ws, WAIT).await.unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ack["type"], "ack", "{ack}");
    // The frame it published comes back to it as a reader.
    let echoed = loop {
        let frame: Value = match ws_next(&mut ws, WAIT).await.unwrap() {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("{other:?}"),
        };
        if frame["type"] != "ack" {
            break frame;
        }
    };
    assert_eq!(echoed["payload"], "first", "{echoed}");

    let r = node
        .client
        .put(format!("{}/admin/applications/alice", node.base))
        .json(&json!({ "permissions": [
            { "topics": "orders", "publish": false, "subscribe": true },
            { "topics": "ticks", "publish": true, "subscribe": true },
        ] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ws.send(Message::Text("second".into())).await.unwrap();
    assert_eq!(ws_next(&mut ws, WAIT).await, Err(Some(1008)));
    let latest = node
        .client
        .get(format!("{}/topics/orders", node.base))
        .header("x-api-key", &keys.alice)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        latest["latest_offsets"]["0"], 1,
        "only the first frame was stored"
    );
}

/// Without an admin token the admin API answers loopback clients only, and not every loopback
/// client: a web page in a local browser (it sends `Origin`) and a DNS-rebound name (its `Host`
/// is not a loopback name) are refused.
#[tokio::test]
async fn a_tokenless_admin_api_refuses_web_pages_and_rebound_names() {
    let node = common::start("").await;
    let status = |origin: Option<&'static str>, host: Option<&'static str>| {
        let mut r = node
            .client
            .post(format!("{}/admin/applications/x/keys", node.base))
            .header("content-type", "text/plain")
            .body("{}");
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        if let Some(host) = host {
            r = r.header("host", host);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Some("http://evil.example"), None).await, 403);
    assert_eq!(status(None, Some("evil.example:8080")).await, 403);
    assert_eq!(status(None, Some("rebound.evil.example")).await, 403);
    // The same request from a local program, addressed to this machine, is answered (here:
    // no application `x`).
    assert_eq!(status(None, None).await, 404);
    assert_eq!(status(None, Some("localhost:8080")).await, 404);
    assert_eq!(status(None, Some("[::1]:8080")).await, 404);
}

/// A plan's `max_subscriptions` holds under concurrency: the slot is taken through the
/// replicated state when `/hub` accepts the request, not counted when it arrives.
#[tokio::test]
async fn max_subscriptions_holds_against_parallel_requests() {
    let (keys, config) = keys();
    let node = start(&config).await;
    let cb = CallbackServer::start().await;
    // alice's plan on `shop` allows one WebSub subscription.
    let requests = (0..12).map(|i| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", &cb.url(&format!("/parallel{i}"))),
            ])
            .finish();
        node.client
            .post(format!("{}/hub", node.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-api-key", &keys.alice)
            .body(body)
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        11,
        "{statuses:?}"
    );
    let accepted = statuses.iter().position(|s| *s == 202).unwrap();
    wait_active(&node, &cb.url(&format!("/parallel{accepted}"))).await;
    assert_eq!(common::websub::subscriptions(&node).await.len(), 1);
}

/// An application's subscription to a topic of no API (anonymous access off) is held to that
/// application's rights, not mistaken for an anonymous one and ended.
#[tokio::test]
async fn an_application_subscription_outside_any_api_stays_while_its_rights_do() {
    let (key, hash) = eventgate::auth::generate_key();
    let node = start(&format!(
        "[topics]\nnames = [\"open\"]\n[websub]\nallow_private_callbacks = true\n[auth]\nanonymous = false\n[applications.alice]\npermissions = [{{ topics = \"open\", publish = true, subscribe = true }}]\napi_key_hashes = [\"{hash}\"]\n"
    ))
    .await;
    let cb = CallbackServer::start().await;
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "subscribe"),
            ("hub.topic", "open"),
            ("hub.callback", &cb.url("/open")),
        ])
        .finish();
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", &key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_active(&node, &cb.url("/open")).await;
    assert_eq!(
        publish_as(&node, "open", Some(&key), b"kept")
            .await
            .status(),
        202
    );
    let got = cb.wait_for(&Method::POST, "/open", 1, T).await;
    assert_eq!(&got[0].body[..], b"kept");
    assert!(
        cb.requests(&Method::GET, "/open").iter().all(|r| r
            .query
            .get("hub.mode")
            .map(String::as_str)
            != Some("denied")),
        "the subscription was ended as if anonymous"
    );
    // Its right withdrawn, it ends.
    let r = node
        .client
        .put(format!("{}/admin/applications/alice", node.base))
        .json(
            &json!({ "permissions": [{ "topics": "open", "publish": true, "subscribe": false }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    common::websub::wait_gone(&node, &cb.url("/open")).await;
}
