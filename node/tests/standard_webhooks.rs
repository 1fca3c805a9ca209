//! Standard Webhooks deliveries (issue 19), end to end: a subscriber chooses the scheme at
//! subscribe time (`hub.signing=standard-webhooks`, a `whsec_` secret); every delivery is
//! checked by the `standardwebhooks` crate (the specification's own Rust library), not by our
//! code. The message id is the same on every attempt; a secret rotated by re-subscribing, or by
//! the operator, signs next to the new one for the overlap and then no more. WebSub stays the
//! default and carries the previous secret's signature in its own header during an overlap.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::callback::{CallbackServer, Received};
use common::start;
use common::websub::{hub, publish, subscribe, T};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        "[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"20ms\"\nretry_max = \"100ms\"\n{extra}"
    )
}

/// Whether the delivery verifies under `secret`, as a Standard Webhooks receiver checks it.
fn verifies(post: &Received, secret: &str) -> bool {
    let webhook = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    webhook.verify(&post.body, &post.headers).is_ok()
}

/// `X-Hub-Signature` of `body` under `secret` (sha256), computed here.
fn websub_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
            .unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[tokio::test]
async fn deliveries_verify_with_a_standard_webhooks_library_and_keep_their_id_across_retries() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;

    // A secret that is not a Standard Webhooks one, or none, or an unknown scheme: 400 naming
    // the field.
    for (form, field) in [
        (vec![("hub.secret", "plain")], "hub.secret"),
        (vec![], "hub.secret"),
        (vec![("hub.secret", "whsec_c2hvcnQ=")], "hub.secret"),
    ] {
        let mut request = vec![
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", "http://127.0.0.1:9/x"),
            ("hub.signing", "standard-webhooks"),
        ];
        request.extend(form);
        let (status, body) = hub(&node, &request).await;
        assert_eq!(status, 400, "{body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["field"], field, "{body}");
    }
    let (status, body) = hub(
        &node,
        &[
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", "http://127.0.0.1:9/x"),
            ("hub.signing", "sha-something"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("hub.signing"), "{body}");

    let callback = cb.url("/standard");
    subscribe(
        &node,
        "orders",
        &callback,
        &[("hub.secret", OLD), ("hub.signing", "standard-webhooks")],
    )
    .await;
    let shown = common::websub::subscriptions(&node).await;
    assert_eq!(shown[0]["signing"], "standard-webhooks");

    // Two failures, then success: three attempts of one message, one id.
    cb.fail_next_posts("/standard", &[503, 500]);
    publish(&node, "orders", "application/json", br#"{"n":1}"#.to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/standard", 3, T).await;
    for post in &posts {
        assert!(verifies(post, OLD), "{:?}", post.headers);
        assert!(!verifies(post, NEW));
        assert!(
            post.headers.get("x-hub-signature").is_none(),
            "one scheme per subscription"
        );
    }
    let ids: Vec<_> = posts
        .iter()
        .map(|p| p.headers["webhook-id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0], posts[0].headers["x-eventgate-delivery"]);
    // The next message has its own id.
    publish(&node, "orders", "application/json", br#"{"n":2}"#.to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/standard", 4, T).await;
    assert_ne!(posts[3].headers["webhook-id"], ids[0]);
    assert!(verifies(&posts[3], OLD));
    node.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_next_to_the_new_one_for_the_overlap_only() {
    let node = start(&config("secret_overlap = \"2s\"\n")).await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/rotating");
    let standard = [("hub.signing", "standard-webhooks")];
    subscribe(
        &node,
        "orders",
        &callback,
        &[standard[0], ("hub.secret", OLD)],
    )
    .await;

    // The subscriber rotates by subscribing again with a new secret.
    let (status, _) = hub(
        &node,
        &[
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", &callback),
            standard[0],
            ("hub.secret", NEW),
        ],
    )
    .await;
    assert_eq!(status, 202);
    // Verified (a second GET), then recorded: the overlap shows in the admin API.
    cb.wait_for(&Method::GET, "/rotating", 2, T).await;
    let deadline = tokio::time::Instant::now() + T;
    while common::websub::subscriptions(&node).await[0]["previous_secret_until_ms"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "never rotated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&node, "orders", "text/plain", b"during".to_vec()).await;
    let post = cb
        .wait_for(&Method::POST, "/rotating", 1, T)
        .await
        .remove(0);
    let signatures = post.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(verifies(&post, NEW), "the new secret verifies");
    assert!(verifies(&post, OLD), "and, during the overlap, the old one");

    // After the overlap only the new one signs: published until a delivery shows it (bounded).
    let deadline = tokio::time::Instant::now() + T;
    let mut n = 1;
    loop {
        publish(
            &node,
            "orders",
            "text/plain",
            format!("after {n}").into_bytes(),
        )
        .await;
        n += 1;
        let post = cb
            .wait_for(&Method::POST, "/rotating", n, T)
            .await
            .pop()
            .unwrap();
        assert!(verifies(&post, NEW));
        if !verifies(&post, OLD) {
            assert_eq!(
                post.headers["webhook-signature"]
                    .to_str()
                    .unwrap()
                    .split(' ')
                    .count(),
                1
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old secret still signs after the overlap"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn the_operator_rotates_a_secret_and_websub_carries_the_previous_signature() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/websub");
    subscribe(
        &node,
        "orders",
        &callback,
        &[("hub.secret", "first secret")],
    )
    .await;
    let id = common::websub::subscriptions(&node).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = |body: Value| {
        let (client, url) = (
            node.client.clone(),
            format!("{}/admin/subscriptions/{id}/secret", node.base),
        );
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, problem) = rotate(serde_json::json!({ "overlap": "soon" })).await;
    assert_eq!(status, 400, "{problem}");
    // A new random secret, shown once; the old one signs too for an hour.
    let (status, rotated) = rotate(serde_json::json!({ "overlap": "1h" })).await;
    assert_eq!(status, 200, "{rotated}");
    let secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(rotated["previous_secret_until_ms"].is_u64());
    publish(&node, "orders", "text/plain", b"rotated".to_vec()).await;
    let post = cb.wait_for(&Method::POST, "/websub", 1, T).await.remove(0);
    let sign = |secret: &str| websub_signature(secret, &post.body);
    assert_eq!(post.headers["x-hub-signature"], sign(&secret).as_str());
    assert_eq!(
        post.headers["x-hub-signature-previous"],
        sign("first secret").as_str()
    );
    assert!(post.headers.get("webhook-signature").is_none());
    // Rotated again with no overlap: only the newest signs.
    let (status, _) =
        rotate(serde_json::json!({ "secret": "third secret", "overlap": "0s" })).await;
    assert_eq!(status, 200);
    publish(&node, "orders", "text/plain", b"again".to_vec()).await;
    let post = cb.wait_for(&Method::POST, "/websub", 2, T).await.remove(1);
    assert!(post.headers.get("x-hub-signature-previous").is_none());
    assert_eq!(
        post.headers["x-hub-signature"],
        websub_signature("third secret", &post.body).as_str()
    );
    // Unknown subscription: 404.
    let r = node
        .client
        .post(format!("{}/admin/subscriptions/nope/secret", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    node.stop().await;
}

/// The retry policy: only 2xx is success (a redirect is a failure, never followed); 429 and
/// 503 are tried again when their `Retry-After` says, capped by `websub.retry_after_max`; a
/// schedule's waits come in order and after its last the message is a dead letter.
#[tokio::test]
async fn retries_follow_the_schedule_and_honour_retry_after() {
    let node = start(
        "[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_schedule = [\"300ms\", \"300ms\", \"300ms\"]\nretry_after_max = \"2s\"\n",
    )
    .await;
    let cb = CallbackServer::start().await;

    // 429 with Retry-After: 1 → the next attempt a second later, not the schedule's 300 ms.
    let callback = cb.url("/busy");
    subscribe(&node, "orders", &callback, &[]).await;
    cb.retry_after("/busy", Some("1"));
    cb.fail_next_posts("/busy", &[429]);
    publish(&node, "orders", "text/plain", b"busy".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/busy", 2, T).await;
    let waited = posts[1].at - posts[0].at;
    assert!(waited >= Duration::from_millis(990), "{waited:?}");
    assert_eq!(posts[1].headers["x-eventgate-attempt"], "2");

    // 503 asking for an hour: capped at retry_after_max (2 s).
    cb.retry_after("/busy", Some("3600"));
    cb.fail_next_posts("/busy", &[503]);
    publish(&node, "orders", "text/plain", b"unavailable".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/busy", 4, T).await;
    let waited = posts[3].at - posts[2].at;
    assert!(
        waited >= Duration::from_millis(1990) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    // A redirect is a failure, retried on the schedule; after the schedule's three waits
    // (four attempts) the message is a dead letter.
    let callback = cb.url("/moved");
    subscribe(&node, "orders", &callback, &[]).await;
    cb.always("/moved", Some(302));
    publish(&node, "orders", "text/plain", b"moved".to_vec()).await;
    let posts = cb.wait_for(&Method::POST, "/moved", 4, T).await;
    for pair in posts.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let letters: Value = node.get_json("/admin/dead-letters").await;
        let found = letters
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["attempts"] == 4);
        if let Some(letter) = found {
            assert!(
                letter["last_error"].as_str().unwrap().contains("302"),
                "{letter}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {letters}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cb.requests(&Method::POST, "/moved").len(),
        4,
        "no fifth attempt"
    );
    node.stop().await;

    // A schedule and exponential settings together are refused, naming the field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventgate.toml");
    std::fs::write(
        &path,
        "[websub]\nretry_schedule = [\"1s\"]\nretry_base = \"1s\"\n",
    )
    .unwrap();
    let error = eventgate::config::load(
        Some(&path),
        &[],
        &eventgate::config::CliOverrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("websub.retry_schedule"), "{error}");
}

/// Replay (issue 19, item 6): messages of a range of offsets, or of append times, delivered
/// again to one subscription, in order, with their usual delivery ids; a start past the
/// broker's retention is 410; a failing callback stops the replay with 502 naming the offset.
#[tokio::test]
async fn a_range_of_messages_is_replayed_in_order() {
    let node = start(&config("")).await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/replayed");
    subscribe(&node, "orders", &callback, &[("hub.secret", "s")]).await;
    let id = common::websub::subscriptions(&node).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 0..5 {
        publish(&node, "orders", "text/plain", format!("m{n}").into_bytes()).await;
    }
    let first = cb.wait_for(&Method::POST, "/replayed", 5, T).await;
    let replay = |body: Value| {
        let (client, url) = (
            node.client.clone(),
            format!("{}/admin/subscriptions/{id}/replay", node.base),
        );
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Offsets 1 to 3, in order, with the ids they had.
    let (status, answer) = replay(serde_json::json!({ "from_offset": 1, "to_offset": 3 })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 3);
    assert_eq!(answer["last_offset"], 3);
    let posts = cb.wait_for(&Method::POST, "/replayed", 8, T).await;
    let bodies: Vec<&[u8]> = posts[5..].iter().map(|p| p.body.as_ref()).collect();
    assert_eq!(bodies, [b"m1", b"m2", b"m3"]);
    assert_eq!(
        posts[5].headers["x-eventgate-delivery"],
        first[1].headers["x-eventgate-delivery"]
    );
    assert_eq!(
        posts[5].headers["x-hub-signature"], first[1].headers["x-hub-signature"],
        "signed as the deliveries are"
    );
    // By time: everything appended since before the first publish, at most two.
    let (status, answer) =
        replay(serde_json::json!({ "since": "2000-01-01T00:00:00Z", "max": 2 })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 2);
    let posts = cb.wait_for(&Method::POST, "/replayed", 10, T).await;
    assert_eq!(posts[8].body.as_ref(), b"m0");
    // Bad requests name the field; a failing callback stops the replay.
    let (status, problem) = replay(serde_json::json!({ "to_offset": 3 })).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (400, Some("from_offset")),
        "{problem}"
    );
    let (status, problem) = replay(serde_json::json!({ "from_offset": 0, "partition": 7 })).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (400, Some("partition")),
        "{problem}"
    );
    cb.always("/replayed", Some(500));
    let (status, problem) = replay(serde_json::json!({ "from_offset": 2 })).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["failed_offset"], 2);
    assert_eq!(problem["delivered"], 0);
    cb.always("/replayed", None);
    node.stop().await;
}

/// A replay, like every delivery, holds to the subscriber's right: once the API key the
/// subscription was made with is revoked, a replay delivers nothing (404 once the hub has ended
/// the subscription, 409 in the moment before). The moment before is too short to hit on
/// purpose here: this checks what a user sees, not which of the two guards answered.
#[tokio::test]
async fn nothing_is_replayed_after_the_right_is_revoked() {
    use sha2::Digest;
    let key = "egk_replay-test-key-0123456789";
    let sha = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let node = start(&config(&format!(
        "[apis.shop]\nchannels = {{ orders = \"orders\" }}\nsecurity = [\"api_key\"]\n[plans.free]\n\
         [applications.app]\npermissions = [{{ topics = \"orders\", publish = true, subscribe = true }}]\n\
         api_key_hashes = [\"{sha}\"]\naccess = {{ shop = \"free\" }}\n"
    )))
    .await;
    let cb = CallbackServer::start().await;
    let callback = cb.url("/revoked");
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", callback.as_str()),
        ])
        .finish();
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-api-key", key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let sub = common::websub::wait_active(&node, &callback).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("x-api-key", key)
        .body("before")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    cb.wait_for(&Method::POST, "/revoked", 1, T).await;
    let r = node
        .client
        .delete(format!(
            "{}/admin/applications/app/keys/{}",
            node.base,
            &sha[..16]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = node
        .client
        .post(format!("{}/admin/subscriptions/{id}/replay", node.base))
        .json(&serde_json::json!({ "from_offset": 0 }))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(r.status().as_u16(), 404 | 409),
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(
        cb.requests(&Method::POST, "/revoked").len(),
        1,
        "nothing delivered after the revocation"
    );
    node.stop().await;
}
