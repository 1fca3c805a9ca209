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
