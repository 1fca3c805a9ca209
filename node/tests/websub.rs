//! WebSub hub, end to end: a real node, a real callback server, publishes through
//! `/webhook-receiver`. Covers the hub's MUSTs and SHOULDs of the W3C Recommendation.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::callback::{CallbackServer, Verify};
use common::start;
use common::websub::{hub, publish, subscribe, subscriptions, wait_active, wait_gone, T};
use hmac::{Hmac, Mac};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        "[topics]\nnames = [\"orders\", \"other\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"20ms\"\nretry_max = \"100ms\"\nlease_min = \"1s\"\n{extra}"
    )
}

#[tokio::test]
async fn verified_subscription_receives_content_byte_for_byte() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/plain?existing=1");
    subscribe(&node, "orders", &callback, &[("hub.lease_seconds", "3600")]).await;

    let verification = &cb.requests(&Method::GET, "/plain")[0];
    assert_eq!(verification.query["hub.mode"], "subscribe");
    assert_eq!(verification.query["hub.topic"], "orders");
    assert_eq!(verification.query["hub.lease_seconds"], "3600");
    assert_eq!(
        verification.query["existing"], "1",
        "the callback's own query is kept"
    );
    assert!(!verification.query["hub.challenge"].is_empty());

    publish(
        &node,
        "orders",
        "application/json; charset=utf-8",
        br#"{"id":1}"#.to_vec(),
    )
    .await;
    let posts = cb.wait_for(&Method::POST, "/plain", 1, T).await;
    let post = &posts[0];
    assert_eq!(post.body.as_ref(), br#"{"id":1}"#);
    assert_eq!(
        post.headers["content-type"],
        "application/json; charset=utf-8"
    );
    let link = post.headers["link"].to_str().unwrap();
    assert!(
        link.contains(&format!("<{}/hub>; rel=\"hub\"", node.base)),
        "{link}"
    );
    assert!(
        link.contains(&format!("<{}/topics/orders>; rel=\"self\"", node.base)),
        "{link}"
    );
    assert!(
        post.headers.get("x-hub-signature").is_none(),
        "no secret, no signature"
    );
    assert!(post.headers.get("x-eventgate-delivery").is_some());
    node.stop().await;
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn content_is_signed_with_each_configured_algorithm() {
    for algorithm in ["sha1", "sha256", "sha384", "sha512"] {
        let node = start(&config(&format!("signature_algorithm = \"{algorithm}\"\n"))).await;
        let cb = CallbackServer::start().await;
        let callback = cb.url("/signed");
        subscribe(&node, "orders", &callback, &[("hub.secret", "s3cr3t")]).await;
        let body = b"signed payload".to_vec();
        publish(&node, "orders", "text/plain", body.clone()).await;
        let post = cb.wait_for(&Method::POST, "/signed", 1, T).await.remove(0);
        let expected = match algorithm {
            "sha1" => hmac_hex::<Hmac<sha1::Sha1>>(b"s3cr3t", &body),
            "sha256" => hmac_hex::<Hmac<sha2::Sha256>>(b"s3cr3t", &body),
            "sha384" => hmac_hex::<Hmac<sha2::Sha384>>(b"s3cr3t", &body),
            _ => hmac_hex::<Hmac<sha2::Sha512>>(b"s3cr3t", &body),
        };
        assert_eq!(
            post.headers["x-hub-signature"].to_str().unwrap(),
            format!("{algorithm}={expected}")
        );
        node.stop().await;
    }
}

#[tokio::test]
async fn failed_verification_creates_nothing_and_unknown_topic_is_denied() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    cb.set_verify("/wrong", Verify::WrongChallenge);
    cb.set_verify("/missing", Verify::NotFound);
    for path in ["/wrong", "/missing"] {
        let (status, _) = hub(
            &node,
            &[
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", &cb.url(path)),
            ],
        )
        .await;
        assert_eq!(status, 202);
        cb.wait_for(&Method::GET, path, 1, T).await;
    }
    // A subscription verified after those proves their processing is over.
    subscribe(&node, "orders", &cb.url("/good"), &[]).await;
    let callbacks: Vec<String> = subscriptions(&node)
        .await
        .iter()
        .map(|s| s["callback"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(callbacks, vec![cb.url("/good")]);

    let (status, _) = hub(
        &node,
        &[
            ("hub.mode", "subscribe"),
            ("hub.topic", "nope"),
            ("hub.callback", &cb.url("/denied")),
        ],
    )
    .await;
    assert_eq!(status, 202);
    let denial = cb.wait_for(&Method::GET, "/denied", 1, T).await.remove(0);
    assert_eq!(denial.query["hub.mode"], "denied");
    assert_eq!(denial.query["hub.topic"], "nope");
    assert!(denial.query["hub.reason"].contains("does not exist"));
    node.stop().await;
}

#[tokio::test]
async fn failures_are_retried_with_the_same_delivery_id_then_succeed() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    cb.fail_next_posts("/flaky", &[500, 503]);
    subscribe(&node, "orders", &cb.url("/flaky"), &[]).await;
    publish(&node, "orders", "text/plain", b"retry me".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/flaky", 3, T).await;
    let ids: Vec<_> = posts
        .iter()
        .map(|p| p.headers["x-eventgate-delivery"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let attempts: Vec<_> = posts
        .iter()
        .map(|p| {
            p.headers["x-eventgate-attempt"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(attempts[..3], ["1", "2", "3"]);
    // The next message flows (the cursor moved on after the success).
    publish(&node, "orders", "text/plain", b"next".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/flaky", 4, T).await;
    assert_eq!(posts[3].body.as_ref(), b"next");
    node.stop().await;
}

#[tokio::test]
async fn gone_ends_the_subscription() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    cb.always("/gone", Some(410));
    subscribe(&node, "orders", &cb.url("/gone"), &[]).await;
    publish(&node, "orders", "text/plain", b"x".to_vec()).await;
    cb.wait_for(&Method::POST, "/gone", 1, T).await;
    wait_gone(&node, &cb.url("/gone")).await;
    node.stop().await;
}

#[tokio::test]
async fn five_hundred_messages_arrive_in_order_and_large_binary_bodies_intact() {
    let node = start(&config("[webhook_receiver]\nmax_body_bytes = 1048576\n")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/ordered"), &[]).await;
    for i in 0..500u32 {
        publish(&node, "orders", "text/plain", i.to_string().into_bytes()).await;
    }
    let binary: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    publish(&node, "orders", "application/octet-stream", binary.clone()).await;
    let posts = cb
        .wait_for(&Method::POST, "/ordered", 501, Duration::from_secs(60))
        .await;
    for (i, post) in posts.iter().take(500).enumerate() {
        assert_eq!(post.body.as_ref(), i.to_string().as_bytes(), "message {i}");
    }
    assert_eq!(posts[500].body.as_ref(), binary.as_slice());
    assert_eq!(
        posts[500].headers["content-type"],
        "application/octet-stream"
    );
    node.stop().await;
}

#[tokio::test]
async fn fifty_subscribers_on_one_topic_and_topics_are_isolated() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    for i in 0..50 {
        subscribe(&node, "orders", &cb.url(&format!("/fan/{i}")), &[]).await;
    }
    subscribe(&node, "other", &cb.url("/other"), &[]).await;
    publish(&node, "orders", "text/plain", b"to all".to_vec()).await;
    publish(&node, "other", "text/plain", b"only other".to_vec()).await;
    for i in 0..50 {
        let posts = cb.wait_for(&Method::POST, &format!("/fan/{i}"), 1, T).await;
        assert_eq!(posts[0].body.as_ref(), b"to all");
    }
    let posts = cb.wait_for(&Method::POST, "/other", 1, T).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body.as_ref(), b"only other");
    // Nothing of "other" reached the "orders" subscribers.
    for i in 0..50 {
        assert_eq!(cb.requests(&Method::POST, &format!("/fan/{i}")).len(), 1);
    }
    node.stop().await;
}

#[tokio::test]
async fn leases_expire_and_unsubscribe_is_verified() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    subscribe(
        &node,
        "orders",
        &cb.url("/short"),
        &[("hub.lease_seconds", "1")],
    )
    .await;
    wait_gone(&node, &cb.url("/short")).await;

    subscribe(&node, "orders", &cb.url("/leaving"), &[]).await;
    let (status, _) = hub(
        &node,
        &[
            ("hub.mode", "unsubscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", &cb.url("/leaving")),
        ],
    )
    .await;
    assert_eq!(status, 202);
    wait_gone(&node, &cb.url("/leaving")).await;
    let gets = cb.requests(&Method::GET, "/leaving");
    assert_eq!(gets.last().unwrap().query["hub.mode"], "unsubscribe");
    node.stop().await;
}

#[tokio::test]
async fn malformed_hub_requests_name_the_field_and_create_nothing() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let good = cb.url("/x");
    let secret = "s".repeat(200);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("hub.topic", "orders"), ("hub.callback", &good)],
            "hub.mode",
        ),
        (
            vec![
                ("hub.mode", "publish"),
                ("hub.topic", "orders"),
                ("hub.callback", &good),
            ],
            "hub.mode",
        ),
        (
            vec![("hub.mode", "subscribe"), ("hub.callback", &good)],
            "hub.topic",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "bad topic"),
                ("hub.callback", &good),
            ],
            "hub.topic",
        ),
        (
            vec![("hub.mode", "subscribe"), ("hub.topic", "orders")],
            "hub.callback",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", "ftp://x/y"),
            ],
            "hub.callback",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", &good),
                ("hub.lease_seconds", "soon"),
            ],
            "hub.lease_seconds",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", &good),
                ("hub.secret", &secret),
            ],
            "hub.secret",
        ),
    ];
    for (form, field) in cases {
        let (status, body) = hub(&node, &form).await;
        assert_eq!(status, 400, "{form:?}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["field"], field, "{form:?} -> {problem}");
    }
    assert!(
        cb.requests(&Method::GET, "/x").is_empty(),
        "nothing was verified"
    );
    assert!(subscriptions(&node).await.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn private_callbacks_are_refused_by_default() {
    let node = start("[topics]\nnames = [\"orders\"]\n").await;
    // Loopback however it is written: IPv4, IPv4 embedded in IPv6 (compatible, mapped, NAT64,
    // 6to4), and special-purpose ranges besides.
    for callback in [
        "http://127.0.0.1:9/cb",
        "http://[::127.0.0.1]:9/cb",
        "http://[::ffff:127.0.0.1]:9/cb",
        "http://[64:ff9b::7f00:1]:9/cb",
        "http://[2002:7f00:1::]:9/cb",
        "http://192.0.2.1:9/cb",
        "http://198.18.0.1:9/cb",
        "http://240.0.0.1:9/cb",
        "http://[fec0::1]:9/cb",
    ] {
        let (status, body) = hub(
            &node,
            &[
                ("hub.mode", "subscribe"),
                ("hub.topic", "orders"),
                ("hub.callback", callback),
            ],
        )
        .await;
        assert_eq!(status, 400, "{callback}: {body}");
        assert!(body.contains("hub.callback"), "{callback}: {body}");
    }
    node.stop().await;
}

#[tokio::test]
async fn exhausted_deliveries_are_dead_lettered_listed_and_redriven() {
    let node = start(&config("max_attempts = 2\n")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/dlq"), &[]).await;
    cb.always("/dlq", Some(500));
    publish(&node, "orders", "text/plain", b"doomed".to_vec()).await;
    cb.wait_for(&Method::POST, "/dlq", 2, T).await;

    let deadline = tokio::time::Instant::now() + T;
    let letters = loop {
        let letters: Vec<Value> = node
            .client
            .get(format!("{}/admin/dead-letters", node.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["topic"], "orders");
    assert!(letters[0]["last_error"].as_str().unwrap().contains("500"));

    // The cursor moved on: the next message is delivered once the callback recovers.
    cb.always("/dlq", None);
    publish(&node, "orders", "text/plain", b"after".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/dlq", 3, T).await;
    assert_eq!(posts[2].body.as_ref(), b"after");

    let redrive = format!(
        "{}/admin/dead-letters/{}/{}/{}/redrive",
        node.base,
        letters[0]["subscription"].as_str().unwrap(),
        letters[0]["partition"],
        letters[0]["offset"]
    );
    let r = node.client.post(&redrive).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let posts = cb.requests(&Method::POST, "/dlq");
    assert_eq!(posts.last().unwrap().body.as_ref(), b"doomed");
    let left: Vec<Value> = node
        .client
        .get(format!("{}/admin/dead-letters", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let again = node.client.post(&redrive).send().await.unwrap();
    assert_eq!(again.status(), 404);
    node.stop().await;
}

#[tokio::test]
async fn a_delivery_window_delivers_everything_and_moves_the_cursor_past_it() {
    let node = start(&config("delivery_window = 8\n")).await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/window"), &[]).await;
    cb.fail_next_posts("/window", &[500, 500, 500]);
    for i in 0..200u32 {
        publish(&node, "orders", "text/plain", i.to_string().into_bytes()).await;
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got: std::collections::BTreeSet<String> = cb
            .requests(&Method::POST, "/window")
            .iter()
            .map(|p| String::from_utf8(p.body.to_vec()).unwrap())
            .collect();
        let sub = wait_active(&node, &cb.url("/window")).await;
        if got.len() == 200 && sub["cursor"]["0"] == 200 && sub["pending_retries"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} distinct messages, cursor {}",
            got.len(),
            sub["cursor"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn resubscribing_renews_the_lease_replaces_the_secret_and_keeps_the_position() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/renew");
    subscribe(
        &node,
        "orders",
        &callback,
        &[("hub.secret", "first"), ("hub.lease_seconds", "100")],
    )
    .await;
    publish(&node, "orders", "text/plain", b"m1".to_vec()).await;
    cb.wait_for(&Method::POST, "/renew", 1, T).await;

    let (status, _) = hub(
        &node,
        &[
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", &callback),
            ("hub.secret", "second"),
            ("hub.lease_seconds", "200"),
        ],
    )
    .await;
    assert_eq!(status, 202);
    cb.wait_for(&Method::GET, "/renew", 2, T).await;
    let deadline = tokio::time::Instant::now() + T;
    while wait_active(&node, &callback).await["lease_seconds"] != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never renewed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&node, "orders", "text/plain", b"m2".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/renew", 2, T).await;
    assert_eq!(posts.len(), 2, "m1 is not delivered again after a renewal");
    assert_eq!(posts[1].body.as_ref(), b"m2");
    let expected = format!(
        "sha256={}",
        hmac_hex::<Hmac<sha2::Sha256>>(b"second", b"m2")
    );
    assert_eq!(
        posts[1].headers["x-hub-signature"].to_str().unwrap(),
        expected
    );
    assert_eq!(
        subscriptions(&node).await.len(),
        1,
        "still one subscription"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_topic_url_of_the_hub_names_the_topic() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let topic_url = format!("{}/topics/orders", node.base);
    subscribe(&node, &topic_url, &cb.url("/by-url"), &[]).await;
    let verification = &cb.requests(&Method::GET, "/by-url")[0];
    assert_eq!(
        verification.query["hub.topic"], topic_url,
        "echoed as the subscriber gave it"
    );
    publish(&node, "orders", "text/plain", b"via url".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/by-url", 1, T).await;
    assert_eq!(posts[0].body.as_ref(), b"via url");
    node.stop().await;
}

#[tokio::test]
async fn topic_urls_answer_discovery_links() {
    let node = start(&config("")).await;
    let topic_url = format!("{}/topics/orders", node.base);
    let r = node.client.get(&topic_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("<{}/hub>; rel=\"hub\"", node.base)),
        "{link}"
    );
    assert!(
        link.contains(&format!("<{topic_url}>; rel=\"self\"")),
        "{link}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["topic"], "orders");
    let head = node.client.head(&topic_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers().get("link").is_some());
    let missing = node
        .client
        .get(format!("{}/topics/nope", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    node.stop().await;
}

/// The data directory (replicated state with WebSub secrets, broker logs) is its owner's
/// alone.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_in(dir.path(), &config("")).await;
    let mode = std::fs::metadata(dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
    node.stop().await;
}

/// A subscriber's secret is sealed before it is stored: deliveries are signed with it, and
/// nowhere in the data directory (Raft log, state, snapshots) does it appear.
#[tokio::test]
async fn subscribers_secrets_are_sealed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let key = "5a".repeat(32);
    let node = common::start_in(dir.path(), &config(&format!("secret_key = \"{key}\"\n"))).await;
    let cb = CallbackServer::start().await;
    let secret = "a-recognisable-subscriber-secret-7b1f";
    subscribe(
        &node,
        "orders",
        &cb.url("/sealed"),
        &[("hub.secret", secret)],
    )
    .await;
    let body = b"signed payload".to_vec();
    publish(&node, "orders", "text/plain", body.clone()).await;
    let post = cb.wait_for(&Method::POST, "/sealed", 1, T).await.remove(0);
    assert_eq!(
        post.headers["x-hub-signature"].to_str().unwrap(),
        format!(
            "sha256={}",
            hmac_hex::<Hmac<sha2::Sha256>>(secret.as_bytes(), &body)
        )
    );
    node.stop().await;
    let mut dirs = vec![dir.path().join("data")];
    let mut files = 0;
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret in the clear",
                path.display()
            );
        }
    }
    assert!(files > 3, "the data directory was searched ({files} files)");
}
