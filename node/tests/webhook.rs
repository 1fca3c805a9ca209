//! `POST /webhook-receiver` of a real single node: durable 202s with positions, byte-exact
//! bodies with their content type, 413 above the limit, 404 for unknown topics unless
//! auto-create is on, 400 naming the field.

mod common;

use std::time::Duration;

use common::start;
use eventgate_actors::broker::StartAt;
use serde_json::Value;

async fn publish(
    node: &common::TestNode,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = node
        .client
        .post(format!("{}/webhook-receiver{query}", node.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn publishes_are_durable_byte_exact_and_in_order() {
    let node = start("[topics]\nnames = [\"orders\"]\n").await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let (s1, a1) = publish(
        &node,
        "?topic=orders",
        "application/json",
        br#"{"n":1}"#.to_vec(),
    )
    .await;
    let (s2, a2) = publish(
        &node,
        "?topic=orders&key=k2",
        "application/octet-stream",
        binary.clone(),
    )
    .await;
    assert_eq!((s1, s2), (202, 202), "{a1} {a2}");
    assert_eq!(a1["id"], "0-0");
    assert_eq!(a2["id"], "0-1");
    assert_eq!(a2["offset"], 1);

    let broker = &node.handle().broker;
    let mut consumer = broker
        .consumer("orders", 0, StartAt::Earliest)
        .await
        .unwrap();
    let got = consumer
        .next_batch(10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload.as_ref(), br#"{"n":1}"#);
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(got[1].payload.as_ref(), binary.as_slice());
    assert_eq!(got[1].key.as_deref(), Some(&b"k2"[..]));
    node.stop().await;
}

#[tokio::test]
async fn body_limit_is_enforced_by_length_and_while_streaming() {
    let node = start("[topics]\nnames = [\"t\"]\n").await;
    let limit = 1024 * 1024;
    let (ok, _) = publish(
        &node,
        "?topic=t",
        "application/octet-stream",
        vec![1; limit],
    )
    .await;
    assert_eq!(ok, 202, "exactly the limit is accepted");
    let (too_big, problem) = publish(
        &node,
        "?topic=t",
        "application/octet-stream",
        vec![1; limit + 1],
    )
    .await;
    assert_eq!(too_big, 413);
    assert_eq!(
        problem["type"],
        "https://eventgate.dev/problems/payload-too-large"
    );

    // Without Content-Length: the body is cut off as it streams in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![2u8; 64 * 1024])).collect();
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=t", node.base))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let mut consumer = node
        .handle()
        .broker
        .consumer("t", 0, StartAt::Earliest)
        .await
        .unwrap();
    let got = consumer
        .next_batch(10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "only the accepted message is in the topic");
    node.stop().await;
}

#[tokio::test]
async fn unknown_topics_are_404_unless_auto_create_and_bad_input_names_the_field() {
    let node = start("[topics]\nnames = [\"t\"]\n").await;
    let (status, problem) = publish(&node, "?topic=nope", "text/plain", b"x".to_vec()).await;
    assert_eq!(status, 404);
    assert_eq!(
        problem["type"],
        "https://eventgate.dev/problems/topic-not-found"
    );
    assert!(!node.handle().broker.topic_exists("nope").await.unwrap());

    let (status, problem) = publish(&node, "", "text/plain", b"x".to_vec()).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("topic")));
    let (status, problem) = publish(&node, "?topic=a%2Fb", "text/plain", b"x".to_vec()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (400, Some("topic")),
        "{problem}"
    );
    node.stop().await;

    let node = start("[topics]\nauto_create = true\n").await;
    let (status, _) = publish(&node, "?topic=fresh", "text/plain", b"x".to_vec()).await;
    assert_eq!(status, 202);
    assert!(node.handle().broker.topic_exists("fresh").await.unwrap());
    node.stop().await;
}

/// Verified ingest (issue 19): an API can require the provider's signature on what reaches its
/// webhook receiver — GitHub's `X-Hub-Signature-256`, Standard Webhooks (signed here by the
/// specification's Rust library, timestamp within tolerance), or an HMAC in a header of its
/// choosing. Unsigned, wrongly signed or stale publishes get 401 `invalid-signature`, through the
/// API's base path and through the gateway's own route, and nothing is stored.
#[tokio::test]
async fn providers_signatures_are_required_where_an_api_says_so() {
    use hmac::Mac;
    let node = start(
        "[websub]\nsecret_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         [topics]\nnames = [\"pushes\", \"payments\", \"plain\", \"hooks\"]\n\
         [apis.github]\nbase_path = \"/github\"\nchannels = { pushes = \"pushes\" }\nsecurity = []\n\
         verify_ingest = { scheme = \"github\", secret = \"It's a Secret to Everybody\" }\n\
         [apis.pay]\nchannels = { payments = \"payments\" }\nsecurity = []\n\
         verify_ingest = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", tolerance = \"1m\" }\n\
         [apis.plain]\nchannels = { plain = \"plain\" }\nsecurity = []\n\
         verify_ingest = { scheme = \"hmac\", secret = \"k\", header = \"X-Provider-Signature\" }\n",
    )
    .await;
    let post = |path: &str, headers: Vec<(&str, String)>, body: &'static [u8]| {
        let mut request = node
            .client
            .post(format!("{}{path}", node.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let stored = |topic: &'static str| {
        let broker = node.handle().broker.clone();
        async move {
            let mut consumer = broker.consumer(topic, 0, StartAt::Earliest).await.unwrap();
            consumer
                .next_batch(10, Duration::from_millis(300))
                .await
                .unwrap()
                .len()
        }
    };

    // (Ready means the configuration's APIs are in force: no wait for them here.)
    // GitHub: the documented example, through the API's base path and the gateway's route.
    let body = b"Hello, World!";
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    for path in [
        "/github/webhook-receiver?topic=pushes",
        "/webhook-receiver?topic=pushes",
    ] {
        let (status, problem) = post(path, vec![], body).await;
        assert_eq!(status, 401, "{problem}");
        assert_eq!(
            problem["type"].as_str().unwrap().rsplit('/').next(),
            Some("invalid-signature")
        );
        let wrong = vec![("x-hub-signature-256", good.replace("75", "57"))];
        assert_eq!(post(path, wrong, body).await.0, 401);
        let (status, answer) =
            post(path, vec![("x-hub-signature-256", good.to_owned())], body).await;
        assert_eq!(status, 202, "{answer}");
    }
    assert_eq!(
        stored("pushes").await,
        2,
        "only the signed publishes were stored"
    );

    // Standard Webhooks, signed by the specification's library: now, and stale.
    let signer = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body: &'static [u8] = br#"{"amount":42}"#;
    let signed = |at: i64| {
        vec![
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", signer.sign("msg_1", at, body).unwrap()),
        ]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (status, answer) = post("/webhook-receiver?topic=payments", signed(now), body).await;
    assert_eq!(status, 202, "{answer}");
    let (status, problem) = post("/webhook-receiver?topic=payments", signed(now - 120), body).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"].as_str().unwrap().contains("from now"),
        "{problem}"
    );
    assert_eq!(stored("payments").await, 1);

    // A generic HMAC header.
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(b"k").unwrap();
    mac.update(b"{}");
    let hex_signature = hex::encode(mac.finalize().into_bytes());
    let (status, _) = post(
        "/webhook-receiver?topic=plain",
        vec![("x-provider-signature", hex_signature)],
        b"{}",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        post("/webhook-receiver?topic=plain", vec![], b"{}").await.0,
        401
    );

    // The admin API shows the scheme, never the secret; bad settings name the field.
    let shown = node.get_json("/admin/apis/github").await;
    assert_eq!(shown["verify_ingest"]["scheme"], "github");
    assert!(!shown.to_string().contains("Secret to Everybody"));
    let r = node
        .client
        .put(format!("{}/admin/apis/bad", node.base))
        .json(&serde_json::json!({
            "channels": { "c": "plain" },
            "verify_ingest": { "scheme": "standard-webhooks", "secret": "not-whsec" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "verify_ingest.secret", "{problem}");
    // Made through the admin API (its secret sealed like the configuration's): it holds too.
    let r = node
        .client
        .put(format!("{}/admin/apis/hooks", node.base))
        .json(&serde_json::json!({
            "channels": { "hooks": "hooks" }, "security": [], "lifecycle": "published",
            "verify_ingest": { "scheme": "hmac", "secret": "k2" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(b"k2").unwrap();
    mac.update(b"{}");
    let signature = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        post("/webhook-receiver?topic=hooks", vec![], b"{}").await.0,
        401
    );
    let (status, answer) = post(
        "/webhook-receiver?topic=hooks",
        vec![("x-signature", signature)],
        b"{}",
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    node.stop().await;
}

/// Idempotent publishes (issue 19): a retry with the same `Idempotency-Key` answers the first
/// answer (flagged `Idempotent-Replayed`) and stores nothing new; the same key with another body
/// is 422; keys are per topic; under Standard Webhooks ingest the provider's `webhook-id` is the
/// key. A malformed key is 400 naming the header.
#[tokio::test]
async fn a_retried_publish_with_the_same_idempotency_key_stores_nothing_new() {
    let node = start(
        "[topics]\nnames = [\"orders\", \"refunds\", \"payments\"]\n\
         [apis.pay]\nchannels = { payments = \"payments\" }\nsecurity = []\n\
         verify_ingest = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }\n",
    )
    .await;
    let post =
        |topic: &str, key: Option<&str>, headers: Vec<(&str, String)>, body: &'static [u8]| {
            let mut request = node
                .client
                .post(format!("{}/webhook-receiver?topic={topic}", node.base))
                .header("content-type", "text/plain")
                .body(body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            for (name, value) in headers {
                request = request.header(name, value);
            }
            async move {
                let r = request.send().await.unwrap();
                let replayed = r.headers().contains_key("idempotent-replayed");
                (
                    r.status().as_u16(),
                    replayed,
                    r.json::<Value>().await.unwrap(),
                )
            }
        };
    let stored = |topic: &'static str| {
        let broker = node.handle().broker.clone();
        async move {
            let mut consumer = broker.consumer(topic, 0, StartAt::Earliest).await.unwrap();
            consumer
                .next_batch(10, Duration::from_millis(300))
                .await
                .unwrap()
                .len()
        }
    };

    let (status, replayed, first) = post("orders", Some("k-1"), vec![], b"one").await;
    assert_eq!((status, replayed), (202, false), "{first}");
    for _ in 0..3 {
        let (status, replayed, again) = post("orders", Some("k-1"), vec![], b"one").await;
        assert_eq!((status, replayed), (202, true));
        assert_eq!(again, first);
    }
    assert_eq!(stored("orders").await, 1, "one message for four publishes");
    let (status, _, problem) = post("orders", Some("k-1"), vec![], b"two").await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("idempotency-key-reused"));
    // The same key on another topic is another publish; no key, no idempotency.
    assert_eq!(post("refunds", Some("k-1"), vec![], b"one").await.0, 202);
    assert_eq!(post("orders", None, vec![], b"one").await.0, 202);
    assert_eq!(post("orders", None, vec![], b"one").await.0, 202);
    assert_eq!(stored("orders").await, 3);
    let long = "k".repeat(300);
    let (status, _, problem) = post("orders", Some(&long), vec![], b"x").await;
    assert_eq!(status, 400);
    assert_eq!(problem["field"], "idempotency-key", "{problem}");

    // A Standard Webhooks provider's redelivery carries the same webhook-id: stored once.
    let signer = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body: &'static [u8] = b"paid";
    for attempt in 0..2 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let headers = vec![
            ("webhook-id", "msg_7".to_owned()),
            ("webhook-timestamp", now.to_string()),
            (
                "webhook-signature",
                signer.sign("msg_7", now, body).unwrap(),
            ),
        ];
        let (status, replayed, answer) = post("payments", None, headers, body).await;
        assert_eq!((status, replayed), (202, attempt == 1), "{answer}");
    }
    assert_eq!(stored("payments").await, 1);
    node.stop().await;
}
