//! Generated AsyncAPI documents validate against the official AsyncAPI 3.0.0 JSON Schema
//! (vendored in `tests/fixtures/asyncapi/`): the demo configuration's, served by a running
//! node, and one with every kind of topic declaration; the YAML form is the same document; the
//! snapshot in `docs/asyncapi-demo.json` is current.

mod common;

use serde_json::{json, Value};

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
    // Publishing over WebSocket is off: only the webhook receiver receives.
    assert!(document["operations"].get("orders.frames").is_none());
    assert_eq!(
        document["operations"]["orders.publish"]["action"],
        "receive"
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
    // Each entrypoint addresses a channel its own way: streams by path, the webhook receiver
    // by its `topic` parameter, WebSub by topic URL.
    assert!(
        gateway["channels"].get("orders").is_none(),
        "no stream entrypoint"
    );
    assert_eq!(
        refs(&gateway["channels"]["orders.webhook"]),
        ["#/servers/webhook"]
    );
    assert_eq!(
        refs(&gateway["channels"]["orders.websub"]),
        ["#/servers/websub"]
    );
    assert_eq!(
        gateway["channels"]["orders.webhook"]["address"],
        Value::Null
    );
    assert_eq!(
        gateway["operations"]["orders.publish"]["bindings"]["http"]["query"]["properties"]["topic"]
            ["const"],
        "orders"
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
    // What the gateway receives (publishes) and what it sends (streams, deliveries).
    assert_eq!(gateway["operations"]["orders.publish"]["action"], "receive");
    assert_eq!(gateway["operations"]["orders.deliver"]["action"], "send");
    assert_eq!(gateway["operations"]["ticks.stream"]["action"], "send");
    assert_eq!(
        security(&gateway["operations"]["orders.publish"]),
        [
            "#/components/securitySchemes/apiKeyHeader",
            "#/components/securitySchemes/apiKeyBearer",
            "#/components/securitySchemes/accessTokenQuery",
            "#/components/securitySchemes/jwt"
        ]
    );
    assert_eq!(
        security(&gateway["operations"]["ticks.stream"]),
        [
            "#/components/securitySchemes/jwt",
            "#/components/securitySchemes/accessTokenQuery"
        ]
    );
    assert!(
        gateway["operations"].get("ticks.frames").is_some(),
        "WebSocket publishing is on"
    );
    assert!(
        security(&gateway["operations"]["open.stream"]).is_empty(),
        "keyless"
    );
    assert_eq!(
        gateway["components"]["securitySchemes"]["jwt"]["bearerFormat"],
        "JWT"
    );
    // The control messages clients see on streams.
    let stream_messages = gateway["channels"]["ticks"]["messages"]
        .as_object()
        .unwrap();
    for control in ["envelope", "gap", "close"] {
        assert!(stream_messages.contains_key(control), "{control}");
    }

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
    assert_eq!(shop["channels"].as_object().unwrap().len(), 2);
    assert_eq!(
        shop["channels"]["orders.websub"]["x-eventgate"]["topicUrl"],
        format!("{}/topics/orders", node.base)
    );
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

/// POSTs a document to the import, answering status and body.
async fn import(node: &common::TestNode, query: &str, body: &[u8]) -> (u16, Value) {
    let r = node
        .client
        .post(format!("{}/admin/apis/import{query}", node.base))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The API as the admin API shows it, without what changes with every write.
async fn api_of(node: &common::TestNode, name: &str) -> (u16, Value) {
    let r = node
        .client
        .get(format!("{}/admin/apis/{name}", node.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut api: Value = r.json().await.unwrap();
    if let Some(map) = api.as_object_mut() {
        map.remove("updated_at_ms");
        map.remove("lifecycle_since_ms");
    }
    (status, api)
}

const LAMPS_KAFKA: &[u8] = include_bytes!("fixtures/import/lamps-kafka-3.0.yaml");
const LAMPS_MQTT: &[u8] = include_bytes!("fixtures/import/lamps-mqtt-2.6.json");

/// A 3.0 YAML document with parameterised addresses, `$ref`s everywhere and broker security:
/// refused naming the parameterised channel until its topics are given; then imported with
/// its messages, schemas and examples, API keys and OAuth2 from the client-facing schemes,
/// the broker's ignored with warnings. Its export validates, and importing the export yields
/// the same API. A 2.6 JSON document (MQTT, channels keyed by address, `oneOf` messages)
/// imports too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_documents_import_and_round_trip() {
    let node = common::start("").await;

    let (status, problem) = import(&node, "", LAMPS_KAFKA).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"],
        "https://eventgate.dev/problems/invalid-document"
    );
    assert_eq!(problem["pointer"], "/channels/brightnessMeasured/address");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("brightnessMeasured"),
        "{problem}"
    );
    // Nothing was written.
    assert_eq!(api_of(&node, "smart-lamps-kafka-api").await.0, 404);

    let query =
        "?topic.brightnessMeasured=lamps.brightness&topic.lampDim=lamps.dim&validate_messages=true";
    let (status, imported) = import(&node, query, LAMPS_KAFKA).await;
    assert_eq!(status, 201, "{imported}");
    let api = &imported["api"];
    assert_eq!(api["name"], "smart-lamps-kafka-api");
    assert_eq!(api["version"], "2.0.1");
    assert_eq!(api["base_path"], "/smart-lamps-kafka-api/2.0.1");
    assert_eq!(api["lifecycle"], "created");
    assert_eq!(
        api["channels"],
        json!({
            "brightness-measured": "lamps.brightness",
            "lamp-dim": "lamps.dim",
            "lamp-status": "city.lamps.status",
        })
    );
    assert_eq!(api["security"], json!(["api_key", "oauth2"]));
    assert_eq!(api["validate_messages"], true);
    assert_eq!(api["tags"], json!(["smart-city", "lighting"]));
    let schema = &api["messages"]["brightness-measured"][0]["schema"];
    assert_eq!(schema["properties"]["lumens"]["minimum"], 0);
    // The $ref inside the referenced schema is resolved too.
    assert_eq!(schema["properties"]["sentAt"]["format"], "date-time");
    let warnings = imported["warnings"].to_string();
    assert!(warnings.contains("scramSha256"), "{warnings}");
    assert!(warnings.contains("X509"), "{warnings}");

    // Exported (the admin API's preview: it is not published yet), it validates and carries
    // the messages; imported again, it is the same API.
    let exported: Value = node
        .get_json("/admin/apis/smart-lamps-kafka-api/asyncapi.json")
        .await;
    assert_valid(&exported);
    let message = &exported["components"]["messages"]["brightness-measured.brightness"];
    assert_eq!(message["contentType"], "application/json");
    assert_eq!(message["examples"][0]["payload"]["lumens"], 340);
    assert_eq!(
        exported["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
            ["tokenUrl"],
        format!("{}/oauth2/token", node.base)
    );
    let (_, before) = api_of(&node, "smart-lamps-kafka-api").await;
    let (status, again) = import(&node, "", exported.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{again}");
    let (_, after) = api_of(&node, "smart-lamps-kafka-api").await;
    assert_eq!(before, after);
    // The YAML export round-trips as well.
    let yaml = node
        .client
        .get(format!(
            "{}/admin/apis/smart-lamps-kafka-api/asyncapi.yaml",
            node.base
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(import(&node, "", &yaml).await.0, 200);
    assert_eq!(api_of(&node, "smart-lamps-kafka-api").await.1, before);

    // 2.6, JSON, MQTT: channel names from operation ids, `/` read as `.`.
    let (status, problem) = import(&node, "", LAMPS_MQTT).await;
    assert_eq!(status, 400);
    assert_eq!(
        problem["pointer"],
        "/channels/city~1lamps~1{lampId}~1brightness"
    );
    let (status, imported) = import(
        &node,
        "?topic.city/lamps/%7BlampId%7D/brightness=lamps.mqtt.brightness",
        LAMPS_MQTT,
    )
    .await;
    assert_eq!(status, 201, "{imported}");
    let api = &imported["api"];
    assert_eq!(
        api["channels"],
        json!({
            "lamp-commands": "city.lamps.commands",
            "receive-brightness": "lamps.mqtt.brightness",
        })
    );
    // `http` bearer is the gateway's own tokens; userPassword is the broker's.
    assert_eq!(api["security"], json!(["oauth2"]));
    let commands: Vec<&str> = api["messages"]["lamp-commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["turnOn", "turnOff"]);
    node.stop().await;
}

/// Bad documents answer 400 with the JSON pointer of the problem, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_name_the_pointer_and_write_nothing() {
    let node = common::start("").await;
    let doc = |channels: Value, components: Value| {
        json!({
            "asyncapi": "3.0.0",
            "info": { "title": "Broken", "version": "1" },
            "channels": channels,
            "components": components,
        })
        .to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not: [yaml".to_owned(), ""),
        (json!({ "info": {} }).to_string(), "/asyncapi"),
        (
            json!({ "asyncapi": "1.2.0", "info": { "title": "x", "version": "1" } }).to_string(),
            "/asyncapi",
        ),
        (
            json!({ "asyncapi": "3.0.0", "info": { "version": "1" }, "channels": { "a": {} } })
                .to_string(),
            "/info/title",
        ),
        (doc(json!({}), json!({})), "/channels"),
        (
            doc(
                json!({ "a": { "address": "a", "messages": { "m": { "$ref": "common.yaml#/messages/m" } } } }),
                json!({}),
            ),
            "/channels/a/messages/m/$ref",
        ),
        (
            doc(
                json!({ "a": { "address": "a", "messages": { "m": { "$ref": "#/components/messages/nope" } } } }),
                json!({}),
            ),
            "/channels/a/messages/m/$ref",
        ),
        (
            doc(
                json!({ "a": { "address": "a", "messages": { "m": { "payload": { "type": "nonsense" } } } } }),
                json!({}),
            ),
            "/channels/a/messages/m/payload",
        ),
        (
            doc(
                json!({ "a": { "address": "a", "messages": { "m": { "payload": { "$ref": "#/components/schemas/tree" } } } } }),
                json!({ "schemas": { "tree": { "type": "object", "properties": { "child": { "$ref": "#/components/schemas/tree" } } } } }),
            ),
            "/components/schemas/tree/properties/child/$ref",
        ),
        (
            doc(json!({ "a": { "address": "has spaces!" } }), json!({})),
            "/channels/a/address",
        ),
    ];
    for (body, pointer) in cases {
        let (status, problem) = import(&node, "", body.as_bytes()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(
            problem["type"], "https://eventgate.dev/problems/invalid-document",
            "{problem}"
        );
        assert_eq!(problem["pointer"], pointer, "{body}: {problem}");
    }
    let apis: Value = node.get_json("/admin/apis").await;
    assert_eq!(apis["apis"], json!([]), "nothing was written");
    node.stop().await;
}
