//! CloudEvents on the webhook receiver and on WebSub deliveries (issue 20), checked with the
//! CloudEvents SDK (`cloudevents-sdk`), not with our code: an event published in the structured
//! or the binary content mode reaches a real callback as the same event, in the binary mode.

mod common;

use axum::http::Method;
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use common::callback::{CallbackServer, Received};
use common::start;
use common::websub::{subscribe, T};
use serde_json::Value;

fn event() -> cloudevents::Event {
    EventBuilderV10::new()
        .id("e-1")
        .source("https://shop.example/orders")
        .ty("com.example.order.created")
        .subject("order-17")
        .time("2026-12-01T10:00:00Z")
        .extension("tenant", "acme corp \"east\" 100%")
        .data("application/json", serde_json::json!({"n": 1, "name": "ü"}))
        .build()
        .expect("a valid event")
}

/// The event a delivery carries in the binary mode, rebuilt with the SDK (which checks it).
fn delivered(post: &Received) -> cloudevents::Event {
    let header = |name: &str| {
        let raw = post
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())?;
        Some(
            percent_encoding::percent_decode_str(&raw)
                .decode_utf8()
                .unwrap()
                .into_owned(),
        )
    };
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    let mut builder = EventBuilderV10::new()
        .id(header("ce-id").expect("ce-id"))
        .source(header("ce-source").expect("ce-source"))
        .ty(header("ce-type").expect("ce-type"));
    if let Some(subject) = header("ce-subject") {
        builder = builder.subject(subject);
    }
    if let Some(time) = header("ce-time") {
        builder = builder.time(time);
    }
    if let Some(tenant) = header("ce-tenant") {
        builder = builder.extension("tenant", tenant);
    }
    let content_type = header("content-type").expect("content-type");
    let data: Value = serde_json::from_slice(&post.body).expect("JSON data");
    builder
        .data(content_type, data)
        .build()
        .expect("the SDK takes the delivered event")
}

#[tokio::test]
async fn events_in_either_mode_reach_the_subscriber_as_the_same_event() {
    let node =
        start("[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n").await;
    let cb = CallbackServer::start().await;
    subscribe(&node, "orders", &cb.url("/ce"), &[]).await;
    let sent = event();
    let url = format!("{}/webhook-receiver?topic=orders", node.base);

    // Structured mode: the SDK's own JSON form of the event.
    let r = node
        .client
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&sent).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    // Binary mode: attributes as percent-encoded ce-* headers, the data as the body.
    const HEADER_VALUE: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');
    let encode = |v: &str| percent_encoding::utf8_percent_encode(v, HEADER_VALUE).to_string();
    let r = node
        .client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", sent.id())
        .header("ce-source", sent.source().to_string())
        .header("ce-type", sent.ty())
        .header("ce-subject", sent.subject().unwrap())
        .header("ce-time", "2026-12-01T10:00:00Z")
        .header("ce-tenant", encode("acme corp \"east\" 100%"))
        .header("content-type", "application/json")
        .body(r#"{"n":1,"name":"ü"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    let posts = cb.wait_for(&Method::POST, "/ce", 2, T).await;
    for post in &posts {
        assert_eq!(delivered(post), sent, "{:?}", post.headers);
    }

    // A CloudEvent without its type: refused, naming the attribute; nothing stored.
    let r = node
        .client
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-2")
        .header("ce-source", "/s")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "ce-type");
    node.stop().await;
}
