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

/// `envelope=cloudevents` on WebSocket and SSE: each message is a structured CloudEvent the
/// SDK reads (`serde_json` into `cloudevents::Event`, which checks it): an event published as
/// one is that event again, with the resume token as the `eventgatetoken` extension; a plain
/// message gets an id from its place, `source` `/topics/<topic>`, `type`
/// `dev.eventgate.message`, its append time, and its JSON as `data`.
#[tokio::test]
async fn streams_carry_structured_cloudevents() {
    use futures_util::StreamExt;
    let node = start("[topics]\nnames = [\"orders\"]\n").await;
    let ws_url = format!(
        "{}/ws/orders?envelope=cloudevents",
        node.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let mut sse = eventgate_chaos_tests::sse::Sse::open(
        &format!("{}/sse/orders?envelope=cloudevents", node.base),
        None,
    )
    .await;
    let sent = event();
    let url = format!("{}/webhook-receiver?topic=orders", node.base);
    let r = node
        .client
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&sent).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = node
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"plain":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let mut from_ws = Vec::new();
    while from_ws.len() < 2 {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if m.is_text() {
            from_ws.push(m.into_text().unwrap().to_string());
        }
    }
    let mut from_sse = Vec::new();
    for _ in 0..2 {
        let e = sse.expect(T, "a CloudEvent").await;
        from_sse.push((e.id.clone().unwrap(), e.data.clone()));
    }
    for (i, text) in from_ws.iter().enumerate() {
        assert_eq!(text, &from_sse[i].1, "the same event on both");
    }
    let first: cloudevents::Event = serde_json::from_str(&from_ws[0]).expect("the SDK reads it");
    let token = first
        .extension("eventgatetoken")
        .map(|v| v.to_string())
        .expect("the resume token");
    assert_eq!(token, from_sse[0].0, "the SSE id");
    // The published event again, but for the extension the gateway adds.
    let mut again = first.clone();
    again.remove_extension("eventgatetoken");
    assert_eq!(again, sent);

    let second: cloudevents::Event = serde_json::from_str(&from_ws[1]).expect("the SDK reads it");
    assert_eq!(second.id(), "orders:0:1");
    assert_eq!(second.source().to_string(), "/topics/orders");
    assert_eq!(second.ty(), "dev.eventgate.message");
    assert!(second.time().is_some());
    assert_eq!(second.datacontenttype(), Some("application/json"));
    let data: Value = match second.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(data, serde_json::json!({ "plain": true }));
    node.stop().await;
}
