//! Generated AsyncAPI documents validate against the official AsyncAPI 3.0.0 JSON Schema
//! (vendored in `tests/fixtures/asyncapi/`): the demo configuration's, served by a running
//! node, and one with every kind of topic declaration; the YAML form is the same document; the
//! snapshot in `docs/asyncapi-demo.json` is current.

mod common;

use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("fixtures/asyncapi/3.0.0-without-id.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(document: &Value) {
    // The validator does reject what the schema forbids.
    assert!(!validator().is_valid(&serde_json::json!({ "asyncapi": "3.0.0" })));
    let errors: Vec<String> = validator()
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{document:#}");
}

fn yaml_to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => serde_json::from_str(r).unwrap(),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), yaml_to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_validates_against_the_asyncapi_3_schema() {
    // A node with every kind of topic declaration, publishing over WebSocket off, behind an
    // https public URL with a base path.
    let node = common::start(
        "[http]\npublic_url = \"https://events.example.com/gw\"\n[topics]\nnames = [\"orders\", \"audit.log\"]\nauto_create = true\n[broker.topic_map]\npayments = \"payments\"\n[streams]\nallow_publish = false\n",
    )
    .await;
    let r = node
        .client
        .get(format!("{}/asyncapi.json", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let document: Value = r.json().await.unwrap();
    assert_valid(&document);
    let channels = document["channels"].as_object().unwrap();
    for id in ["orders", "audit.log", "payments", "any-topic"] {
        assert!(channels.contains_key(id), "{id}");
    }
    assert_eq!(document["servers"]["websocket"]["protocol"], "wss");
    assert_eq!(document["servers"]["websocket"]["pathname"], "/gw/ws");
    assert_eq!(document["servers"]["sse"]["host"], "events.example.com");
    assert_eq!(
        document["operations"]["orders.send"]["summary"],
        "POST to the webhook receiver."
    );

    let yaml = node
        .client
        .get(format!("{}/asyncapi.yaml", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.headers()["content-type"], "application/yaml");
    let text = yaml.text().await.unwrap();
    let parsed = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(yaml_to_json(&parsed[0]), document, "YAML and JSON differ");
    node.stop().await;
}

#[test]
fn the_demo_document_validates_and_its_snapshot_in_docs_is_current() {
    let config = eventgate::config::load(None, &[], &Default::default()).unwrap();
    let document = eventgate::asyncapi::document(&config, "http://127.0.0.1:8080");
    assert_valid(&document);
    assert!(document["channels"]["demo"].is_object());
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/asyncapi-demo.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        snapshot, document,
        "docs/asyncapi-demo.json is stale: regenerate it with `cargo run -p eventgate -- asyncapi export > docs/asyncapi-demo.json`"
    );
}

/// APIs with every entrypoint kind and every kind of security: the gateway's document and
/// each API's own validate; channels list only the servers their APIs offer and operations
/// carry the API's security schemes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_documents_with_security_validate() {
    let node = common::start(
        r#"[topics]
names = ["orders", "ticks", "open"]
[auth.jwt]
issuer = ["https://idp.example"]
audience = ["eventgate"]
algorithms = ["HS256"]
secret = "a-shared-secret-of-at-least-32-bytes!"
[apis.shop]
version = "2.1.0"
description = "Orders of the shop"
channels = { orders = "orders" }
entrypoints = ["websub", "webhook"]
security = ["api_key", "jwt"]
[apis.market]
channels = { ticks = "ticks" }
entrypoints = ["websocket", "sse"]
security = ["jwt"]
[apis.public]
base_path = "/public/v1"
channels = { feed = "open" }
security = []
"#,
    )
    .await;
    let get = |path: &str| {
        let url = format!("{}{path}", node.base);
        let client = node.client.clone();
        async move {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.json::<Value>().await.unwrap()
        }
    };
    // The configuration is applied just after start.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let gateway = loop {
        let doc = get("/asyncapi.json").await;
        // The topics are declared anyway; the APIs bring the security schemes.
        if doc["components"]["securitySchemes"].is_object() {
            break doc;
        }
        assert!(tokio::time::Instant::now() < deadline, "APIs never applied");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_valid(&gateway);
    let refs = |channel: &Value| -> Vec<String> {
        channel["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["$ref"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        refs(&gateway["channels"]["orders"]),
        ["#/servers/websub", "#/servers/webhook"]
    );
    assert_eq!(
        refs(&gateway["channels"]["ticks"]),
        ["#/servers/websocket", "#/servers/sse"]
    );
    let security = |op: &Value| -> Vec<String> {
        op["security"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["$ref"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        security(&gateway["operations"]["orders.send"]),
        [
            "#/components/securitySchemes/apiKeyHeader",
            "#/components/securitySchemes/apiKeyBearer",
            "#/components/securitySchemes/jwt"
        ]
    );
    assert_eq!(
        security(&gateway["operations"]["ticks.receive"]),
        ["#/components/securitySchemes/jwt"]
    );
    assert!(
        gateway["operations"].get("ticks.send").is_some(),
        "WebSocket publishing is on"
    );
    assert!(
        security(&gateway["operations"]["open.receive"]).is_empty(),
        "keyless"
    );
    assert_eq!(
        gateway["components"]["securitySchemes"]["jwt"]["bearerFormat"],
        "JWT"
    );

    for api in ["shop", "market", "public"] {
        let doc = get(&format!("/apis/{api}/asyncapi.json")).await;
        assert_valid(&doc);
        assert_eq!(doc["info"]["title"], api);
    }
    let shop = get("/apis/shop/asyncapi.json").await;
    assert_eq!(shop["info"]["version"], "2.1.0");
    assert_eq!(
        shop["servers"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["webhook", "websub"]
    );
    assert_eq!(shop["channels"].as_object().unwrap().len(), 1);
    // An API with a base path is described on its own routes, by channel name, and its
    // document is also under its base path.
    let public = get("/apis/public/asyncapi.json").await;
    assert_eq!(public["servers"]["websocket"]["pathname"], "/public/v1/ws");
    assert_eq!(public["servers"]["sse"]["pathname"], "/public/v1/sse");
    assert_eq!(
        public["servers"]["webhook"]["pathname"],
        "/public/v1/webhook-receiver"
    );
    assert_eq!(public["channels"]["feed"]["address"], "/feed");
    assert_eq!(get("/public/v1/asyncapi.json").await, public);
    let r = node
        .client
        .get(format!("{}/apis/nope/asyncapi.json", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    node.stop().await;
}
