//! Endpoint health and the delivery ledger (issue 19), end to end with real callback servers:
//! a failing endpoint's breaker opens and pauses its subscriptions (cursor held, nothing
//! dead-lettered) while a healthy endpoint on the same topic keeps receiving everything; probes
//! go out at growing intervals; the first that succeeds resumes delivery in order. A long outage
//! disables the subscription until an operator re-enables it. Operators learn of all of it from
//! the events topic, to which they subscribe a webhook like any other; every attempt is in the
//! ledger, queryable by outcome, status and message id.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::callback::{CallbackServer, Received};
use common::websub::{publish, subscribe, subscriptions, T};
use common::{start, TestNode};
use serde_json::Value;

fn config(breaker: &str) -> String {
    format!(
        "[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"20ms\"\nretry_max = \"100ms\"\nmax_attempts = 4\n[websub.ledger]\nflush_interval = \"20ms\"\nmax_entries = 1000\n[websub.breaker]\n{breaker}"
    )
}

/// The operator events received by the `ops` callback, in order.
fn events(ops: &CallbackServer) -> Vec<Value> {
    ops.requests(&Method::POST, "/ops")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("an event is JSON"))
        .collect()
}

async fn wait_event(ops: &CallbackServer, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(e) = events(ops).into_iter().find(|e| e["type"] == kind) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{kind}` event; got {:?}",
            events(ops)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn numbers(posts: &[Received]) -> Vec<u64> {
    posts
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(&p.body).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

async fn subscription_of(node: &TestNode, callback: &str) -> Value {
    subscriptions(node)
        .await
        .into_iter()
        .find(|s| s["callback"] == callback)
        .expect("subscribed")
}

async fn wait_subscription(
    node: &TestNode,
    callback: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = subscription_of(node, callback).await;
        if ok(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {s:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn attempts(node: &TestNode, id: &str, query: &str) -> Vec<Value> {
    let v = node
        .get_json(&format!("/admin/subscriptions/{id}/attempts?{query}"))
        .await;
    v["attempts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_failing_endpoint_pauses_while_a_healthy_one_on_the_topic_gets_everything() {
    let node = start(&config(
        "failure_run = 3\nprobe_initial = \"300ms\"\nprobe_max = \"600ms\"\nfailing_after = 2\n",
    ))
    .await;
    let ops = CallbackServer::start().await;
    let good = CallbackServer::start().await;
    let bad = CallbackServer::start().await;
    subscribe(&node, "eventgate.events", &ops.url("/ops"), &[]).await;
    let (good_cb, bad_cb) = (good.url("/good"), bad.url("/bad"));
    subscribe(&node, "orders", &good_cb, &[]).await;
    subscribe(&node, "orders", &bad_cb, &[]).await;
    let bad_sub = subscription_of(&node, &bad_cb).await;
    let bad_id = bad_sub["id"].as_str().unwrap().to_owned();
    let start_offset = bad_sub["cursor"]["0"].as_u64().unwrap();
    bad.always("/bad", Some(500));

    const N: u64 = 200;
    for n in 0..N {
        publish(
            &node,
            "orders",
            "application/json",
            format!("{{\"n\":{n}}}").into_bytes(),
        )
        .await;
    }
    // The healthy endpoint gets every message, in order, while the other is paused.
    let got = good.wait_for(&Method::POST, "/good", N as usize, T).await;
    assert_eq!(numbers(&got), (0..N).collect::<Vec<_>>());
    let paused = wait_event(&ops, "endpoint.paused").await;
    assert_eq!(paused["data"]["origin"], format!("http://{}", bad.addr));
    let failing = wait_event(&ops, "attempt.failing").await;
    assert_eq!(failing["data"]["subscription"], bad_id.as_str());
    assert_eq!(failing["data"]["attempt"], 2);

    let endpoints = node.get_json("/admin/endpoints").await;
    let listed = &endpoints["paused"][0];
    assert_eq!(
        listed["origin"],
        format!("http://{}", bad.addr),
        "{endpoints:#}"
    );
    assert_eq!(listed["subscriptions"], 1);
    assert_eq!(listed["last_error"], "callback answered 500");
    assert_eq!(
        endpoints["paused"].as_array().unwrap().len(),
        1,
        "{endpoints:#}"
    );
    let shown = subscription_of(&node, &bad_cb).await;
    assert_eq!(shown["endpoint"]["state"], "paused");
    assert_eq!(
        shown["cursor"]["0"].as_u64(),
        Some(start_offset),
        "the paused subscription's cursor holds"
    );
    node.wait_metric("eventgate_websub_endpoints_paused 1")
        .await;
    // Its backlog shows as consumer lag: the whole batch behind the broker's end.
    let text = node.metrics().await;
    let lag = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert_eq!(
        lag("eventgate_websub_consumer_lag_max_messages"),
        N,
        "{text}"
    );
    assert!(lag("eventgate_websub_consumer_lag_messages") >= N);

    // Probes (one message at a time, at growing intervals) keep failing: no dead letter even
    // past max_attempts, the head message held.
    let deadline = tokio::time::Instant::now() + T;
    while bad.requests(&Method::POST, "/bad").len() < 7 {
        assert!(tokio::time::Instant::now() < deadline, "no probes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tried = bad.requests(&Method::POST, "/bad");
    assert!(
        numbers(&tried).iter().all(|n| *n == 0),
        "only the head message is tried while paused: {:?}",
        numbers(&tried)
    );
    let gaps: Vec<Duration> = tried.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[3..].iter().all(|g| *g >= Duration::from_millis(250)),
        "probes are spaced by the probe interval: {gaps:?}"
    );
    let letters = node.get_json("/admin/dead-letters").await;
    assert_eq!(
        letters,
        serde_json::json!([]),
        "nothing is dead-lettered while paused"
    );

    // The ledger has every attempt: by outcome, by status, by message id.
    let failed = attempts(&node, &bad_id, "outcome=failed&status=500").await;
    assert!(failed.len() >= 5, "{failed:#?}");
    assert!(failed.iter().any(|a| a["kind"] == "probe"), "{failed:#?}");
    let first = failed.last().unwrap();
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["offset"].as_u64(), Some(start_offset));
    assert_eq!(first["error"], "callback answered 500");
    let message_id = first["message_id"].as_str().unwrap();
    assert_eq!(message_id, format!("{bad_id}:0:{start_offset}"));
    let of_message = attempts(&node, &bad_id, &format!("message_id={message_id}")).await;
    assert!(of_message.len() >= failed.len());
    assert!(of_message.iter().all(|a| a["message_id"] == message_id));
    assert!(attempts(&node, &bad_id, "outcome=succeeded")
        .await
        .is_empty());

    // The endpoint comes back: the next probe succeeds, everything follows, in order.
    bad.always("/bad", None);
    let recovered = wait_event(&ops, "endpoint.recovered").await;
    assert_eq!(recovered["data"]["origin"], format!("http://{}", bad.addr));
    let all = bad
        .wait_for(&Method::POST, "/bad", tried.len() + N as usize, T)
        .await;
    let delivered: Vec<u64> = numbers(&all).into_iter().filter(|n| *n != 0).collect();
    assert_eq!(delivered, (1..N).collect::<Vec<_>>());
    wait_subscription(&node, &bad_cb, "cursor past everything", |s| {
        s["cursor"]["0"].as_u64() == Some(start_offset + N) && s["endpoint"].is_null()
    })
    .await;
    node.wait_metric("eventgate_websub_endpoints_paused 0")
        .await;
    node.wait_metric("eventgate_websub_consumer_lag_max_messages 0")
        .await;
    let deadline = tokio::time::Instant::now() + T;
    while attempts(&node, &bad_id, "outcome=succeeded&limit=1000")
        .await
        .len()
        < N as usize
    {
        assert!(tokio::time::Instant::now() < deadline, "ledger behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bad filters are named.
    let r = node
        .client
        .get(format!(
            "{}/admin/subscriptions/{bad_id}/attempts?outcome=maybe",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "outcome");
    node.stop().await;
}

#[tokio::test]
async fn a_long_outage_disables_the_subscription_until_it_is_re_enabled() {
    let node = start(&config(
        "failure_run = 2\nprobe_initial = \"100ms\"\nprobe_max = \"200ms\"\ndisable_after = \"1s\"\n",
    ))
    .await;
    let ops = CallbackServer::start().await;
    let bad = CallbackServer::start().await;
    subscribe(&node, "eventgate.events", &ops.url("/ops"), &[]).await;
    let cb = bad.url("/down");
    subscribe(&node, "orders", &cb, &[]).await;
    let id = subscription_of(&node, &cb).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start_offset = subscription_of(&node, &cb).await["cursor"]["0"]
        .as_u64()
        .unwrap();
    bad.always("/down", Some(503));
    for n in 0..3 {
        publish(
            &node,
            "orders",
            "application/json",
            format!("{{\"n\":{n}}}").into_bytes(),
        )
        .await;
    }
    let disabled = wait_event(&ops, "endpoint.disabled").await;
    assert_eq!(disabled["data"]["subscriptions"], 1, "{disabled:#}");
    let shown = wait_subscription(&node, &cb, "disabled", |s| !s["disabled"].is_null()).await;
    assert!(
        shown["disabled"]["reason"]
            .as_str()
            .unwrap()
            .contains("callback answered 503"),
        "{shown:#}"
    );
    assert_eq!(shown["cursor"]["0"].as_u64(), Some(start_offset));
    let listed = node.get_json("/admin/endpoints").await;
    assert_eq!(
        listed["disabled"][0]["subscription"],
        id.as_str(),
        "{listed:#}"
    );
    assert_eq!(listed["paused"], serde_json::json!([]));
    node.wait_metric("eventgate_websub_subscriptions_disabled 1")
        .await;

    // Re-enabled once the endpoint is back: everything it missed, in order.
    bad.always("/down", None);
    let tried = bad.requests(&Method::POST, "/down").len();
    let enable = |id: String| {
        let node = &node;
        async move {
            node.client
                .post(format!("{}/admin/subscriptions/{id}/enable", node.base))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(enable(id.clone()).await, 200);
    assert_eq!(enable(id.clone()).await, 409, "not disabled any more");
    assert_eq!(enable("nope".to_owned()).await, 404);
    let posts = bad.wait_for(&Method::POST, "/down", tried + 3, T).await;
    assert_eq!(numbers(&posts[tried..]), vec![0, 1, 2]);
    wait_subscription(&node, &cb, "cursor past everything", |s| {
        s["cursor"]["0"].as_u64() == Some(start_offset + 3) && s["disabled"].is_null()
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn the_gateways_own_topics_are_not_for_publishing_and_the_ledger_not_for_reading() {
    let node = start(&config("")).await;
    for topic in ["eventgate.events", "eventgate.ledger"] {
        let r = node
            .client
            .post(format!("{}/webhook-receiver?topic={topic}", node.base))
            .header("content-type", "application/json")
            .body("{\"type\":\"endpoint.recovered\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{topic}");
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(topic),
            "{problem:#}"
        );
    }
    let r = node
        .client
        .get(format!("{}/sse/eventgate.ledger", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    node.stop().await;
}
