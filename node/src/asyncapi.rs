//! AsyncAPI 3.0 documents of what a gateway exposes, generated from its configuration:
//! `GET /asyncapi.json` and `/asyncapi.yaml`, `eventgate asyncapi export`.
//!
//! Servers: one per entrypoint (WebSocket `/ws`, Server-Sent Events `/sse`, the WebSub hub
//! `/hub`, the webhook receiver). Channels: one per declared topic (`topics.names`, topics
//! routed to further brokers, `broker.topic_map`), addressed by the topic name under each
//! server's path, plus a parameterised `{topic}` channel when topics are created on first
//! use. Operations: `receive` on every channel (WS, SSE, WebSub) and `send` through the
//! webhook receiver and, when allowed, WebSocket.
//!
//! APIs (`[apis.<name>]` and those made through the admin API) add their channels' topics, list
//! only the servers of the entrypoints they offer, and declare their security: `X-API-Key`
//! (`httpApiKey`), API keys as bearer tokens and JWTs (`http` bearer) as security schemes on
//! their operations. `GET /apis/{name}/asyncapi.json` is one API's own document.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use eventgate_raft_store::governance::{Api, Entrypoint, Security};
use serde_json::{json, Map, Value};

use crate::config::NodeConfig;

/// What documents are generated from: the configuration and, at request time, the APIs of the
/// replicated state.
#[derive(Debug, Clone)]
pub struct Source {
    config: Arc<NodeConfig>,
    public_url: String,
}

impl Source {
    pub fn new(config: &NodeConfig, public_url: &str) -> Self {
        Self {
            config: Arc::new(config.clone()),
            public_url: public_url.to_owned(),
        }
    }

    /// The whole gateway's document with these APIs.
    pub fn gateway(&self, apis: &[Api]) -> Value {
        build(&self.config, &self.public_url, apis, None)
    }

    /// One API's document.
    pub fn api(&self, api: &Api) -> Value {
        build(
            &self.config,
            &self.public_url,
            std::slice::from_ref(api),
            Some(api),
        )
    }
}

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

/// The document for `config` and the APIs it declares, as reached at `public_url` (no trailing
/// slash).
pub fn document(config: &NodeConfig, public_url: &str) -> Value {
    build(config, public_url, &config.declared.apis, None)
}

fn server_of(entrypoint: Entrypoint) -> &'static str {
    match entrypoint {
        Entrypoint::Websocket => "websocket",
        Entrypoint::Sse => "sse",
        Entrypoint::Websub => "websub",
        Entrypoint::Webhook => "webhook",
    }
}

/// Security schemes of an API, as references.
fn security_of(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for s in &api.security {
        match s {
            Security::ApiKey => {
                out.push(json!({ "$ref": "#/components/securitySchemes/apiKeyHeader" }));
                out.push(json!({ "$ref": "#/components/securitySchemes/apiKeyBearer" }));
            }
            Security::Jwt => out.push(json!({ "$ref": "#/components/securitySchemes/jwt" })),
        }
    }
    out
}

fn build(config: &NodeConfig, public_url: &str, apis: &[Api], scope: Option<&Api>) -> Value {
    let (host, secure) = host_of(public_url);
    let http = if secure { "https" } else { "http" };
    let ws = if secure { "wss" } else { "ws" };
    let base_path = public_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(String::new(), |(_, path)| {
            format!("/{}", path.trim_end_matches('/'))
        });
    // One API's document with a base path: its own routes, channels by channel name.
    let api_base = scope.and_then(|a| a.base_path.clone());
    let prefix = api_base.clone().unwrap_or_default();
    let server = |protocol: &str, path: &str, title: &str, description: &str| {
        json!({
            "host": host,
            "protocol": protocol,
            "pathname": format!("{base_path}{path}"),
            "title": title,
            "description": description,
        })
    };
    let websub_description = match &api_base {
        Some(b) => format!("W3C WebSub: POST hub.mode=subscribe, hub.topic={public_url}{b}/topics/<channel>, hub.callback=<url> (form-encoded); signed, ordered, at-least-once deliveries to the callback."),
        None => "W3C WebSub: POST hub.mode=subscribe, hub.topic=<topic>, hub.callback=<url> (form-encoded); signed, ordered, at-least-once deliveries to the callback.".to_owned(),
    };
    let webhook_description = if api_base.is_some() {
        format!("POST {prefix}/webhook-receiver?topic=<channel>: the body is published byte for byte with its content type; 202 once the broker holds it.")
    } else {
        "POST /webhook-receiver?topic=<topic>: the body is published byte for byte with its content type; 202 once the broker holds it.".to_owned()
    };
    let servers = json!({
        "websocket": server(ws, &format!("{prefix}/ws"), "WebSocket", "One frame per message (text for text content types, else binary); `?envelope=json` wraps each in a JSON envelope with its resume token; `?from=` / `lastEventId` resume."),
        "sse": server(http, &format!("{prefix}/sse"), "Server-Sent Events", "One event per message; `id:` is the resume token (`Last-Event-ID`); control events `gap` and `close`."),
        "websub": server(http, "/hub", "WebSub hub", &websub_description),
        "webhook": server(http, &format!("{prefix}/webhook-receiver"), "Webhook receiver", &webhook_description),
    });

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    // Topic → the APIs exposing it.
    let mut exposed: BTreeMap<&str, Vec<&Api>> = BTreeMap::new();
    for api in apis {
        for topic in api.channels.values() {
            exposed.entry(topic.as_str()).or_default().push(api);
        }
    }
    let mut add = |id: &str,
                   address: &str,
                   topic: &str,
                   title: String,
                   parameters: Option<Value>| {
        let of = exposed.get(topic).cloned().unwrap_or_default();
        let entrypoints: BTreeSet<Entrypoint> = if of.is_empty() {
            Entrypoint::ALL.into_iter().collect()
        } else {
            of.iter()
                .flat_map(|a| a.entrypoints.iter().copied())
                .collect()
        };
        // Open when any API of the topic is keyless (or none has it).
        let security: Vec<Value> = if of.iter().any(|a| a.security.is_empty()) {
            Vec::new()
        } else {
            let mut all: Vec<Value> = Vec::new();
            for value in of.iter().flat_map(|a| security_of(a)) {
                if !all.contains(&value) {
                    all.push(value);
                }
            }
            all
        };
        let servers: Vec<Value> = [
            Entrypoint::Websocket,
            Entrypoint::Sse,
            Entrypoint::Websub,
            Entrypoint::Webhook,
        ]
        .into_iter()
        .filter(|e| entrypoints.contains(e))
        .map(|e| json!({ "$ref": format!("#/servers/{}", server_of(e)) }))
        .collect();
        let receivable = entrypoints.iter().any(|e| {
            matches!(
                e,
                Entrypoint::Websocket | Entrypoint::Sse | Entrypoint::Websub
            )
        });
        let sendable = entrypoints.contains(&Entrypoint::Webhook)
            || (config.streams_allow_publish && entrypoints.contains(&Entrypoint::Websocket));
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
            "servers": servers,
            "messages": { "message": { "$ref": format!("#/components/messages/{message_id}") } },
        });
        if let Some(p) = parameters {
            channel["parameters"] = p;
        }
        channels.insert(id.to_owned(), channel);
        let message = json!([{ "$ref": format!("#/channels/{id}/messages/message") }]);
        if receivable {
            let mut receive = json!({
                "action": "receive",
                "channel": { "$ref": format!("#/channels/{id}") },
                "title": format!("Receive {title}"),
                "summary": "Stream it over WebSocket or SSE, or subscribe a callback at the WebSub hub.",
                "messages": message,
            });
            if !security.is_empty() {
                receive["security"] = json!(security);
            }
            operations.insert(format!("{id}.receive"), receive);
        }
        if sendable {
            let mut send = json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{id}") },
                "title": format!("Publish to {title}"),
                "summary": "POST to the webhook receiver.",
                "messages": message,
            });
            if config.streams_allow_publish && entrypoints.contains(&Entrypoint::Websocket) {
                send["summary"] =
                    json!("POST to the webhook receiver, or send frames on a WebSocket.");
            }
            if !security.is_empty() {
                send["security"] = json!(security);
            }
            operations.insert(format!("{id}.send"), send);
        }
    };
    let topics: BTreeSet<String> = match scope {
        Some(api) if api.base_path.is_some() => {
            for (channel, topic) in &api.channels {
                add(
                    channel,
                    &format!("/{channel}"),
                    topic,
                    format!("channel `{channel}` (topic `{topic}`)"),
                    None,
                );
            }
            BTreeSet::new()
        }
        Some(api) => api.channels.values().cloned().collect(),
        None => {
            let mut all = declared_topics(config);
            all.extend(apis.iter().flat_map(|a| a.channels.values().cloned()));
            all
        }
    };
    for topic in topics {
        add(
            &topic,
            &format!("/{topic}"),
            &topic,
            format!("topic `{topic}`"),
            None,
        );
    }
    if config.topics_auto_create && scope.is_none() {
        add(
            ANY_TOPIC,
            "/{topic}",
            "",
            "any topic (created on first use)".to_owned(),
            Some(json!({
                "topic": { "description": "Topic name: 1 to 249 characters of A-Z a-z 0-9 . _ -" }
            })),
        );
    }
    let info = match scope {
        Some(api) => {
            let mut description = api
                .description
                .clone()
                .unwrap_or_else(|| format!("API `{}` of this eventgate gateway.", api.name));
            if api.lifecycle == eventgate_raft_store::governance::Lifecycle::Deprecated {
                let sunset = api.sunset_ms.map_or(String::new(), |ms| {
                    format!(
                        " It will be retired at {}.",
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
                        )
                    )
                });
                description = format!("**Deprecated.**{sunset} {description}");
            }
            let mut info = json!({
                "title": api.name,
                "version": api.version,
                "description": description,
                "x-eventgate-lifecycle": api.lifecycle.name(),
            });
            if api.lifecycle == eventgate_raft_store::governance::Lifecycle::Deprecated {
                info["tags"] = json!([{ "name": "deprecated" }]);
                if let Some(ms) = api.sunset_ms {
                    info["x-eventgate-sunset"] = json!(humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
                    )
                    .to_string());
                }
            }
            info
        }
        None => json!({
            "title": "eventgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Topics of this eventgate gateway as WebSocket, Server-Sent Events and WebSub APIs, and its webhook receiver.",
        }),
    };
    let mut components = json!({ "messages": messages });
    if apis.iter().any(|a| !a.security.is_empty()) {
        components["securitySchemes"] = json!({
            "apiKeyHeader": {
                "type": "httpApiKey",
                "name": "X-API-Key",
                "in": "header",
                "description": "An API key of the application (`egk_…`). Browsers may pass it as `?access_token=` instead.",
            },
            "apiKeyBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key of the application as a bearer token.",
            },
            "jwt": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A JWT whose application claim names the application; `?access_token=` for browsers.",
            },
        });
    }
    // Only the servers some channel uses.
    let mut servers = servers;
    if scope.is_some() {
        let used: BTreeSet<String> = channels
            .values()
            .flat_map(|c| c["servers"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| {
                r["$ref"]
                    .as_str()
                    .map(|s| s.trim_start_matches("#/servers/").to_owned())
            })
            .collect();
        if let Some(map) = servers.as_object_mut() {
            map.retain(|k, _| used.contains(k));
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/octet-stream",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
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
