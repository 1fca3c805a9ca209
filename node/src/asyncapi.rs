//! AsyncAPI 3.0 documents of what a gateway exposes, generated from its configuration:
//! `GET /asyncapi.json` and `/asyncapi.yaml`, `eventgate asyncapi export`.
//!
//! Servers: one per entrypoint (WebSocket `/ws`, Server-Sent Events `/sse`, the WebSub hub
//! `/hub`, the webhook receiver). Channels: one per declared topic (`topics.names`, topics
//! routed to further brokers, `broker.topic_map`), addressed by the topic name under each
//! server's path, plus a parameterised `{topic}` channel when topics are created on first
//! use. Operations: `receive` on every channel (WS, SSE, WebSub) and `send` through the
//! webhook receiver and, when allowed, WebSocket. Until policies exist every entrypoint is
//! open, so no security schemes are declared.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::config::NodeConfig;

/// The channel id of the parameterised channel (topics created on first use).
const ANY_TOPIC: &str = "any-topic";

/// The topics a configuration declares, sorted.
fn declared_topics(config: &NodeConfig) -> BTreeSet<String> {
    let mut topics: BTreeSet<String> = config.topics.iter().cloned().collect();
    topics.extend(config.broker.mapping.renames.keys().cloned());
    for (_, broker) in &config.brokers {
        topics.extend(broker.topics.iter().cloned());
        topics.extend(broker.mapping.renames.keys().cloned());
    }
    topics
}

/// `host[:port]` and whether the public URL is https.
fn host_of(public_url: &str) -> (String, bool) {
    let secure = public_url.starts_with("https://");
    let rest = public_url
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    (host, secure)
}

/// The document for `config`, as reached at `public_url` (no trailing slash).
pub fn document(config: &NodeConfig, public_url: &str) -> Value {
    let (host, secure) = host_of(public_url);
    let http = if secure { "https" } else { "http" };
    let ws = if secure { "wss" } else { "ws" };
    let base_path = public_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(String::new(), |(_, path)| {
            format!("/{}", path.trim_end_matches('/'))
        });
    let server = |protocol: &str, path: &str, title: &str, description: &str| {
        json!({
            "host": host,
            "protocol": protocol,
            "pathname": format!("{base_path}{path}"),
            "title": title,
            "description": description,
        })
    };
    let servers = json!({
        "websocket": server(ws, "/ws", "WebSocket", "One frame per message (text for text content types, else binary); `?envelope=json` wraps each in a JSON envelope with its resume token; `?from=` / `lastEventId` resume."),
        "sse": server(http, "/sse", "Server-Sent Events", "One event per message; `id:` is the resume token (`Last-Event-ID`); control events `gap` and `close`."),
        "websub": server(http, "/hub", "WebSub hub", "W3C WebSub: POST hub.mode=subscribe, hub.topic=<topic>, hub.callback=<url> (form-encoded); signed, ordered, at-least-once deliveries to the callback."),
        "webhook": server(http, "/webhook-receiver", "Webhook receiver", "POST /webhook-receiver?topic=<topic>: the body is published byte for byte with its content type; 202 once the broker holds it."),
    });

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut add = |id: &str, address: &str, title: String, parameters: Option<Value>| {
        let message_id = format!("{id}.message");
        messages.insert(
            message_id.clone(),
            json!({
                "name": message_id,
                "title": format!("A message of {title}"),
                "summary": "The payload exactly as published, with its content type.",
                "payload": {},
            }),
        );
        let mut channel = json!({
            "address": address,
            "title": title,
            "servers": [
                { "$ref": "#/servers/websocket" },
                { "$ref": "#/servers/sse" },
                { "$ref": "#/servers/websub" },
                { "$ref": "#/servers/webhook" },
            ],
            "messages": { "message": { "$ref": format!("#/components/messages/{message_id}") } },
        });
        if let Some(p) = parameters {
            channel["parameters"] = p;
        }
        channels.insert(id.to_owned(), channel);
        let message = json!([{ "$ref": format!("#/channels/{id}/messages/message") }]);
        operations.insert(
            format!("{id}.receive"),
            json!({
                "action": "receive",
                "channel": { "$ref": format!("#/channels/{id}") },
                "title": format!("Receive {title}"),
                "summary": "Stream it over WebSocket or SSE, or subscribe a callback at the WebSub hub.",
                "messages": message,
            }),
        );
        let mut send = json!({
            "action": "send",
            "channel": { "$ref": format!("#/channels/{id}") },
            "title": format!("Publish to {title}"),
            "summary": "POST to the webhook receiver.",
            "messages": message,
        });
        if config.streams_allow_publish {
            send["summary"] = json!("POST to the webhook receiver, or send frames on a WebSocket.");
        }
        operations.insert(format!("{id}.send"), send);
    };
    for topic in declared_topics(config) {
        add(
            &topic,
            &format!("/{topic}"),
            format!("topic `{topic}`"),
            None,
        );
    }
    if config.topics_auto_create {
        add(
            ANY_TOPIC,
            "/{topic}",
            "any topic (created on first use)".to_owned(),
            Some(json!({
                "topic": { "description": "Topic name: 1 to 249 characters of A-Z a-z 0-9 . _ -" }
            })),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "eventgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Topics of this eventgate gateway as WebSocket, Server-Sent Events and WebSub APIs, and its webhook receiver.",
        },
        "defaultContentType": "application/octet-stream",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

/// `value` as YAML.
pub fn to_yaml(value: &Value) -> String {
    fn convert(value: &Value) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match value {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(items) => Yaml::Array(items.iter().map(convert).collect()),
            Value::Object(map) => {
                let mut hash = yaml_rust2::yaml::Hash::new();
                for (k, v) in map {
                    hash.insert(Yaml::String(k.clone()), convert(v));
                }
                Yaml::Hash(hash)
            }
        }
    }
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    // Writing to a String cannot fail.
    let _ = emitter.dump(&convert(value));
    out.push('\n');
    out
}
