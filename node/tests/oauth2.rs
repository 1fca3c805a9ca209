//! The publisher's flow of seed 001 with real clients: an AsyncAPI document imported, the API
//! published, an application subscribed under a plan, an access token from `/oauth2/token`,
//! WebSockets at the API's base path with `Authorization: Bearer` and with `?access_token=`,
//! a message through the webhook receiver, then the API retired and both sockets closed with
//! `api-retired`. Also: RFC 6749 errors, JWKS and RFC 8414 metadata, client secret rotation
//! with an overlap, revocation ending a token's stream, message schemas enforced on publish,
//! and signing-key rotation under load refusing no valid token.

mod common;

use std::time::Duration;

use base64::Engine;
use common::stream::ws_next;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const SWEET: &[u8] = include_bytes!("fixtures/import/sweet-prod-ws-3.0.yaml");
const BASE: &str = "/sweet-prod-app/1.0.0";

async fn admin(
    node: &common::TestNode,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = node
        .client
        .request(method, format!("{}/admin{path}", node.base));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Imports the seed's document, publishes it, and subscribes application `sweet` under plan
/// `gold`; answers the client secret.
async fn provision(node: &common::TestNode, query: &str) -> String {
    use reqwest::Method;
    let r = node
        .client
        .post(format!("{}/admin/apis/import{query}", node.base))
        .body(SWEET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (s, api) = admin(
        node,
        Method::PUT,
        "/apis/sweet-prod-app/lifecycle",
        Some(json!({ "state": "published" })),
    )
    .await;
    assert_eq!(s, 200, "{api}");
    assert_eq!(api["security"], json!(["oauth2"]));
    assert_eq!(
        admin(node, Method::PUT, "/plans/gold", Some(json!({})))
            .await
            .0,
        201
    );
    let (s, app) = admin(
        node,
        Method::PUT,
        "/applications/sweet",
        Some(
            json!({ "permissions": [{ "topics": "sweet.*", "publish": true, "subscribe": true }] }),
        ),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let (s, access) = admin(
        node,
        Method::PUT,
        "/applications/sweet/access/sweet-prod-app",
        Some(json!({ "plan": "gold" })),
    )
    .await;
    assert!(s == 200 || s == 201, "{access}");
    let (s, secret) = admin(
        node,
        Method::POST,
        "/applications/sweet/client-secrets",
        None,
    )
    .await;
    assert_eq!(s, 201, "{secret}");
    assert_eq!(secret["client_id"], "sweet");
    secret["client_secret"].as_str().unwrap().to_owned()
}

/// Asks `/oauth2/token` with Basic client authentication.
async fn token_basic(node: &common::TestNode, id: &str, secret: &str, form: &str) -> (u16, Value) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let r = node
        .client
        .post(format!("{}/oauth2/token", node.base))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    (status, r.json().await.unwrap())
}

async fn access_token(node: &common::TestNode, secret: &str) -> String {
    let (status, body) = token_basic(node, "sweet", secret, "grant_type=client_credentials").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_bearer(node: &common::TestNode, token: &str) -> Ws {
    let url = format!("{}{BASE}", node.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

async fn ws_query(node: &common::TestNode, token: &str) -> Ws {
    let url = format!(
        "{}{BASE}?access_token={token}",
        node.base.replace("http://", "ws://")
    );
    let (socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

async fn publish(node: &common::TestNode, token: &str, body: &str) -> (u16, Value) {
    let r = node
        .client
        .post(format!(
            "{}{BASE}/webhook-receiver?topic=production",
            node.base
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

const CONFIG: &str = "[topics]\nnames = [\"sweet.production\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_import_publish_token_connect_retire() {
    let node = common::start(CONFIG).await;
    let secret = provision(&node, "?validate_messages=true").await;

    // The token endpoint, its metadata and keys.
    let metadata: Value = node
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth2/token", node.base)
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials"])
    );
    let token = access_token(&node, &secret).await;
    let jwks: Value = node.get_json("/.well-known/jwks.json").await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(jwks["keys"][0]["kid"], header.kid.clone().unwrap().as_str());
    assert_eq!(jwks["keys"][0]["crv"], "P-256");

    // RFC 6749 §5.2 errors.
    let (s, e) = token_basic(
        &node,
        "sweet",
        "egcs_wrong",
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
    let (s, e) = token_basic(&node, "sweet", &secret, "grant_type=password").await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, e) = token_basic(&node, "sweet", &secret, "").await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")));
    let (s, e) = token_basic(
        &node,
        "sweet",
        &secret,
        "grant_type=client_credentials&scope=other-api",
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")));
    // Client authentication in the form works too.
    let r = node
        .client
        .post(format!("{}/oauth2/token", node.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sweet"),
            ("client_secret", &secret),
            ("scope", "sweet-prod-app"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let scoped: Value = r.json().await.unwrap();
    assert_eq!(scoped["scope"], "sweet-prod-app");
    // A scoped token reaches nothing outside its APIs, even where the application's
    // permissions would (unscoped, the same request gets past the rights: no such topic).
    let outside = |token: String| {
        let url = format!("{}/sse/sweet.other?access_token={token}", node.base);
        let client = node.client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        outside(scoped["access_token"].as_str().unwrap().to_owned()).await,
        403
    );
    assert_eq!(outside(token.clone()).await, 404);

    // Two WebSockets at the API's base path: Bearer header, and ?access_token= for browsers.
    let mut by_header = ws_bearer(&node, &token).await;
    let mut by_query = ws_query(&node, scoped["access_token"].as_str().unwrap()).await;
    // Without a token: refused.
    let url = format!("{}{BASE}", node.base.replace("http://", "ws://"));
    assert!(tokio_tungstenite::connect_async(url).await.is_err());

    // A message published through the webhook receiver reaches both.
    let (s, body) = publish(&node, &token, r#"{"sweet":"toffee","count":12}"#).await;
    assert_eq!(s, 202, "{body}");
    for ws in [&mut by_header, &mut by_query] {
        match ws_next(ws, WAIT).await {
            Ok(Message::Text(text)) => {
                assert_eq!(text.as_str(), r#"{"sweet":"toffee","count":12}"#)
            }
            other => panic!("expected the message, got {other:?}"),
        }
    }
    // The channel's schema holds: an invalid message is refused with where it fails, and
    // not stored (the sockets see only the next valid one).
    let (s, problem) = publish(&node, &token, r#"{"sweet":"toffee","count":0}"#).await;
    assert_eq!(s, 400, "{problem}");
    assert_eq!(
        problem["type"],
        "https://eventgate.dev/problems/invalid-message"
    );
    assert_eq!(problem["errors"][0]["instancePath"], "/count");
    let (s, problem) = publish(&node, &token, "not json").await;
    assert_eq!(s, 400, "{problem}");
    let (s, _) = publish(&node, &token, r#"{"sweet":"fudge","count":3}"#).await;
    assert_eq!(s, 202);
    match ws_next(&mut by_header, WAIT).await {
        Ok(Message::Text(text)) => assert!(text.as_str().contains("fudge"), "{text}"),
        other => panic!("expected the valid message, got {other:?}"),
    }
    match ws_next(&mut by_query, WAIT).await {
        Ok(Message::Text(text)) => assert!(text.as_str().contains("fudge"), "{text}"),
        other => panic!("expected the valid message, got {other:?}"),
    }
    // A WebSocket frame that fails the schema closes the socket with 1007 and the path.
    let mut publisher = ws_bearer(&node, &token).await;
    publisher
        .send(Message::Text(r#"{"sweet":"x","count":-1}"#.into()))
        .await
        .unwrap();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match publisher.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(u16::from(close.code), 1007);
    assert!(close.reason.as_str().contains("/count"), "{}", close.reason);

    // Retired: both sockets close with api-retired.
    let (s, _) = admin(
        &node,
        reqwest::Method::PUT,
        "/apis/sweet-prod-app/lifecycle",
        Some(json!({ "state": "retired" })),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ws_next(&mut by_header, WAIT).await, Err(Some(4010)));
    assert_eq!(ws_next(&mut by_query, WAIT).await, Err(Some(4010)));
    node.stop().await;
}

/// A rotated client secret keeps working for its overlap; revoking a secret refuses its
/// tokens at once and ends the streams they opened; disabling the application ends them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_with_an_overlap_and_revocation_ends_tokens() {
    use reqwest::Method;
    let node = common::start(CONFIG).await;
    let first = provision(&node, "").await;
    let token = access_token(&node, &first).await;
    // A new secret with an hour's overlap: both work.
    let (s, second) = admin(
        &node,
        Method::POST,
        "/applications/sweet/client-secrets",
        Some(json!({ "overlap": "1h" })),
    )
    .await;
    assert_eq!(s, 201);
    let second_secret = second["client_secret"].as_str().unwrap().to_owned();
    access_token(&node, &first).await;
    access_token(&node, &second_secret).await;
    // Another with no overlap: the earlier two stop at once, tokens already issued live on.
    let (_, third) = admin(
        &node,
        Method::POST,
        "/applications/sweet/client-secrets",
        Some(json!({ "overlap": "0s" })),
    )
    .await;
    let third_secret = third["client_secret"].as_str().unwrap().to_owned();
    let (s, _) = token_basic(&node, "sweet", &first, "grant_type=client_credentials").await;
    assert_eq!(s, 401);
    let (s, _) = token_basic(
        &node,
        "sweet",
        &second_secret,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(s, 401);
    let mut ws = ws_bearer(&node, &token).await;
    let (s, body) = publish(&node, &token, r#"{"a":1}"#).await;
    assert_eq!(s, 202, "{body}");
    assert!(ws_next(&mut ws, WAIT).await.is_ok());
    // Revoking the secret the token was issued on ends its stream and refuses it.
    // (The token names it: `egw_sid`; the listing shows the same ids.)
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    let first_id = claims["egw_sid"].as_str().unwrap().to_owned();
    let (secrets_status, secrets) = admin(
        &node,
        Method::GET,
        "/applications/sweet/client-secrets",
        None,
    )
    .await;
    assert_eq!(secrets_status, 200);
    assert_eq!(secrets["client_secrets"].as_array().unwrap().len(), 3);
    assert!(secrets.to_string().contains(&first_id));
    assert!(
        !secrets.to_string().contains(&first),
        "secrets are never shown again"
    );
    let (s, _) = admin(
        &node,
        Method::DELETE,
        &format!("/applications/sweet/client-secrets/{first_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ws_next(&mut ws, WAIT).await, Err(Some(4003)));
    assert_eq!(publish(&node, &token, r#"{"a":2}"#).await.0, 401);
    // A token of the current secret: disabling the application ends its stream.
    let token = access_token(&node, &third_secret).await;
    let mut ws = ws_query(&node, &token).await;
    let (s, _) = admin(
        &node,
        Method::PUT,
        "/applications/sweet",
        Some(json!({ "disabled": true, "permissions": [{ "topics": "sweet.*", "publish": true, "subscribe": true }] })),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ws_next(&mut ws, WAIT).await, Err(Some(4003)));
    let (s, e) = token_basic(
        &node,
        "sweet",
        &third_secret,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unauthorized_client")));
    node.stop().await;
}

/// Signing keys rotated five times while clients keep getting tokens and using them at once:
/// no valid token is refused, and a token signed before the rotations still verifies after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_under_load_refuses_no_valid_token() {
    let node = std::sync::Arc::new(
        common::start(&format!(
            "{CONFIG}[auth.oauth2]\ntoken_requests = {{ count = 100000, per = \"1m\" }}\n"
        ))
        .await,
    );
    let secret = provision(&node, "").await;
    let early = access_token(&node, &secret).await;
    let rotating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut users = Vec::new();
    for _ in 0..4 {
        let node = node.clone();
        let secret = secret.clone();
        let rotating = rotating.clone();
        users.push(tokio::spawn(async move {
            let (mut used, mut refused) = (0u32, Vec::new());
            // Bounded: stops when the rotations are done, or after 500 rounds.
            for _ in 0..500 {
                if !rotating.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let token = access_token(&node, &secret).await;
                let (s, body) = publish(&node, &token, r#"{"n":1}"#).await;
                used += 1;
                if s != 202 {
                    refused.push(format!("{s}: {body}"));
                }
            }
            (used, refused)
        }));
    }
    let mut kids = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, body) = admin(&node, reqwest::Method::POST, "/oauth2/keys/rotate", None).await;
        assert_eq!(s, 200, "{body}");
        kids.push(body["kid"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    rotating.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for user in users {
        let (used, refused) = user.await.unwrap();
        assert!(refused.is_empty(), "valid tokens refused: {refused:?}");
        total += used;
    }
    assert!(
        total >= 20,
        "only {total} tokens were used during the rotations"
    );
    eprintln!("{total} tokens issued and used at once while the signing key rotated 5 times");
    kids.dedup();
    assert_eq!(kids.len(), 5);
    // Every key that signed a live token is still published; the early token still works.
    let jwks: Value = node.get_json("/.well-known/jwks.json").await;
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for kid in &kids {
        assert!(
            published.contains(&kid.as_str()),
            "{kid} not in {published:?}"
        );
    }
    assert_eq!(publish(&node, &early, r#"{"n":2}"#).await.0, 202);
    let node = std::sync::Arc::try_unwrap(node)
        .ok()
        .expect("the users are done");
    node.stop().await;
}

/// The token endpoint is rate-limited per client: past the budget, 429 `slow_down` with
/// `Retry-After`, until the window turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_is_rate_limited() {
    let node = common::start(&format!(
        "{CONFIG}[auth.oauth2]\ntoken_requests = {{ count = 3, per = \"1m\" }}\n"
    ))
    .await;
    let secret = provision(&node, "").await;
    for _ in 0..3 {
        access_token(&node, &secret).await;
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("sweet:{secret}"));
    let r = node
        .client
        .post(format!("{}/oauth2/token", node.base))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");
    node.stop().await;
}
