//! The developer portal's catalog and API pages, served by a real node: only published and
//! deprecated APIs are listed, search narrows them, an API's page shows its channels' URLs,
//! schemas, examples, snippets with the real URLs and the plans, escapes what APIs say, and
//! the portal can be moved or turned off.

mod common;

use serde_json::json;

const SWEET: &[u8] = include_bytes!("fixtures/import/sweet-prod-ws-3.0.yaml");

/// The text of escaped HTML (the entities templates write), to look for content.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

async fn page(node: &common::TestNode, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let r = node
        .client
        .get(format!("{}{path}", node.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_published_apis_and_their_pages_say_how_to_connect() {
    let node = common::start(
        r#"[topics]
names = ["orders"]
[apis.shop]
description = "Orders of the <script>alert(1)</script> shop"
channels = { orders = "orders" }
[plans.gold]
description = "For production"
publish = { count = 100, per = "1m" }
max_connections = 5
approval_required = true
"#,
    )
    .await;
    let r = node
        .client
        .post(format!("{}/admin/apis/import", node.base))
        .body(SWEET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Created: not in the catalog yet; the configuration's API is (published).
    let (status, catalog, headers) = page(&node, "/portal").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(catalog.contains("/portal/apis/shop"), "{catalog}");
    assert!(!catalog.contains("sweet-prod-app"));
    // What an API says is text, never markup.
    assert!(!catalog.contains("<script>alert(1)</script>"));
    assert!(unescape(&catalog).contains("<script>alert(1)</script>"));
    assert_eq!(page(&node, "/portal/apis/sweet-prod-app").await.0, 404);

    let r = node
        .client
        .put(format!("{}/admin/apis/sweet-prod-app/lifecycle", node.base))
        .json(&json!({ "state": "published" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, catalog, _) = page(&node, "/portal/").await;
    assert!(catalog.contains("sweet-prod-app"));
    // Search: every word, anywhere in name, description or channels.
    let (_, found, _) = page(&node, "/portal?q=production+line").await;
    assert!(found.contains("sweet-prod-app") && !found.contains("/portal/apis/shop"));
    let (_, none, _) = page(&node, "/portal?q=nothing-like-it").await;
    assert!(none.contains("No published API matches"), "{none}");

    let (status, api, _) = page(&node, "/portal/apis/sweet-prod-app").await;
    assert_eq!(status, 200);
    let api = unescape(&api);
    let ws = node.base.replace("http://", "ws://");
    for want in [
        // Its channel's URLs under its base path, with the real address.
        format!("{ws}/sweet-prod-app/1.0.0/ws/production"),
        format!("{}/sweet-prod-app/1.0.0/sse/production", node.base),
        format!(
            "{}/sweet-prod-app/1.0.0/webhook-receiver?topic=production",
            node.base
        ),
        // OAuth2: the token URL and a snippet getting a token.
        format!("{}/oauth2/token", node.base),
        "grant_type=client_credentials".to_owned(),
        // The message's schema, pretty-printed.
        "\"minimum\": 1".to_owned(),
        // Snippets.
        "wscat -c".to_owned(),
        "new EventSource(".to_owned(),
        "websockets.connect(".to_owned(),
        "X-Hub-Signature".to_owned(),
        // The plan and its limits.
        "100 messages published per 1m".to_owned(),
        "5 WebSocket/SSE connections at once".to_owned(),
        "wait for an administrator".to_owned(),
        "/apis/sweet-prod-app/asyncapi.yaml".to_owned(),
    ] {
        assert!(api.contains(&want), "the page lacks {want}");
    }
    // The download links work.
    assert_eq!(
        node.get_status("/apis/sweet-prod-app/asyncapi.yaml").await,
        200
    );

    // Deprecated: still listed, with the notice.
    let r = node
        .client
        .put(format!("{}/admin/apis/sweet-prod-app/lifecycle", node.base))
        .json(&json!({ "state": "deprecated", "sunset": "2027-06-30T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, api, _) = page(&node, "/portal/apis/sweet-prod-app").await;
    assert!(api.contains("deprecated") && api.contains("2027-06-30T00:00:00Z"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_moves_or_turns_off() {
    let node = common::start("[portal]\npath = \"/developers\"\ntitle = \"Acme events\"\n").await;
    let (status, body, _) = page(&node, "/developers").await;
    assert_eq!(status, 200);
    assert!(body.contains("Acme events"));
    assert_eq!(page(&node, "/portal").await.0, 404);
    node.stop().await;

    let node = common::start("[portal]\nenabled = false\n").await;
    assert_eq!(page(&node, "/portal").await.0, 404);
    node.stop().await;
}
