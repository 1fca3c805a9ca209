//! WebSub helpers shared by the end-to-end suites.

use std::time::Duration;

use serde_json::Value;

use super::TestNode;

/// Bound on every wait of the WebSub suites.
pub const T: Duration = Duration::from_secs(15);

pub async fn hub(node: &TestNode, form: &[(&str, &str)]) -> (u16, String) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn subscriptions(node: &TestNode) -> Vec<Value> {
    node.client
        .get(format!("{}/admin/subscriptions", node.base))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

/// Waits until the subscription of `callback` is active and owned (deliveries run).
pub async fn wait_active(node: &TestNode, callback: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let found = subscriptions(node)
            .await
            .into_iter()
            .find(|s| s["callback"] == callback && s["state"] == "active" && !s["owner"].is_null());
        if let Some(s) = found {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{callback} never became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_gone(node: &TestNode, callback: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while subscriptions(node)
        .await
        .iter()
        .any(|s| s["callback"] == callback)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{callback} never went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn subscribe(node: &TestNode, topic: &str, callback: &str, extra: &[(&str, &str)]) {
    let mut form = vec![
        ("hub.mode", "subscribe"),
        ("hub.topic", topic),
        ("hub.callback", callback),
    ];
    form.extend_from_slice(extra);
    let (status, body) = hub(node, &form).await;
    assert_eq!(status, 202, "{body}");
    wait_active(node, callback).await;
}

pub async fn publish(node: &TestNode, topic: &str, content_type: &str, body: Vec<u8>) {
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic={topic}", node.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}
