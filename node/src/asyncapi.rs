//! AsyncAPI 3.0 documents of what a gateway exposes, generated from its configuration and
//! APIs: `GET /asyncapi.json` and `/asyncapi.yaml`, `GET /apis/{name}/asyncapi.json` (one API,
//! also under its base path), `eventgate asyncapi export`. [`import`] reads such documents
//! (and others') back into APIs.
//!
//! The document describes the gateway: operations say what *the gateway* does, as AsyncAPI 3
//! operations describe the application the document is about. It `send`s messages to stream
//! clients and WebSub callbacks, and `receive`s what publishers post to the webhook receiver
//! (or send as WebSocket frames).
//!
//! Servers: one per entrypoint (WebSocket `…/ws`, Server-Sent Events `…/sse`, the webhook
//! receiver, the WebSub hub `/hub`), with the API's base path in their `pathname`. Each channel
//! (a topic, or an API's channel) appears as up to three AsyncAPI channels, because the
//! entrypoints address it differently: `<id>` at address `/<id>` under the stream servers
//! (`pathname` + address is the URL), `<id>.webhook` (no address: the channel is the `topic`
//! query parameter, in the operation's HTTP binding) and `<id>.websub` (no address: the
//! subscriber names the channel's topic URL as `hub.topic`). Messages carry the channel's
//! payload schemas, content types and examples when the API has them; the stream channels
//! also list the control messages clients see (the JSON envelope, `gap`, `close`). Security
//! schemes: `X-API-Key` and `?access_token=` (`httpApiKey`), bearer API keys, JWTs, and OAuth2
//! client credentials with the gateway's token URL. A deprecated API says so (`info`, a tag and
//! the sunset). An API's own document carries `x-eventgate` (name, base path, entrypoints,
//! security, limits) and each channel its gateway channel and topic, so that importing an
//! exported document yields the same API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use eventgate_raft_store::governance::{Api, Entrypoint, Lifecycle, Security};
use serde_json::{json, Map, Value};

use crate::config::NodeConfig;

pub mod import;

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

/// The server of each entrypoint, in the order channels list them.
const SERVERS: [(Entrypoint, &str); 4] = [
    (Entrypoint::Websocket, "websocket"),
    (Entrypoint::Sse, "sse"),
    (Entrypoint::Webhook, "webhook"),
    (Entrypoint::Websub, "websub"),
];

/// The security scheme of each kind of credential (API keys have three ways to be given).
fn scheme_names(security: Security) -> &'static [&'static str] {
    match security {
        Security::ApiKey => &["apiKeyHeader", "apiKeyBearer", "accessTokenQuery"],
        Security::Jwt => &["jwt", "accessTokenQuery"],
        Security::OAuth2 => &["oauth2", "accessTokenQuery"],
    }
}

fn security_schemes(token_url: &str) -> Value {
    json!({
        "apiKeyHeader": {
            "type": "httpApiKey",
            "name": "X-API-Key",
            "in": "header",
            "description": "An API key of the application (`egk_…`).",
            "x-eventgate-security": "api_key",
        },
        "apiKeyBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key of the application as a bearer token.",
            "x-eventgate-security": "api_key",
        },
        "accessTokenQuery": {
            "type": "httpApiKey",
            "name": "access_token",
            "in": "query",
            "description": "Any of the credentials as the `access_token` query parameter, for clients (browsers) that cannot set headers.",
        },
        "jwt": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT of the configured issuer whose application claim names the application.",
            "x-eventgate-security": "jwt",
        },
        "oauth2": {
            "type": "oauth2",
            "description": "An access token of this gateway: POST grant_type=client_credentials with the application's id and client secret to the token URL; send it as `Authorization: Bearer` or `?access_token=`.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": token_url,
                    "availableScopes": {},
                },
            },
            "x-eventgate-security": "oauth2",
        },
    })
}

/// The control messages of the stream channels, shared by all.
fn control_messages() -> Value {
    json!({
        "envelope": {
            "name": "envelope",
            "title": "A message in the JSON envelope",
            "summary": "With `?envelope=json` (WebSocket): each message as a JSON text frame with its resume token and metadata.",
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "required": ["type", "id", "topic", "partition", "offset", "timestamp"],
                "properties": {
                    "type": { "const": "message" },
                    "id": { "type": "string", "description": "Resume token: give it as `from` or `lastEventId` to continue after this message." },
                    "topic": { "type": "string" },
                    "partition": { "type": "integer" },
                    "offset": { "type": "integer" },
                    "timestamp": { "type": "integer", "description": "Unix milliseconds." },
                    "key": { "type": "string" },
                    "key_base64": { "type": "string" },
                    "headers": { "type": "object" },
                    "content_type": { "type": "string" },
                    "payload": { "type": "string", "description": "The payload as text." },
                    "payload_base64": { "type": "string", "description": "A payload that is not text, base64-encoded." },
                },
            },
            "x-eventgate-control": true,
        },
        "gap": {
            "name": "gap",
            "title": "Messages were skipped",
            "summary": "The client fell behind (slow consumer, plan's delivery limit in drop mode): so many messages were not delivered. SSE `event: gap`; WebSocket with envelopes `{\"type\":\"gap\"}`.",
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "required": ["missed"],
                "properties": {
                    "type": { "const": "gap" },
                    "missed": { "type": "integer", "minimum": 0 },
                },
            },
            "x-eventgate-control": true,
        },
        "close": {
            "name": "close",
            "title": "The stream ends",
            "summary": "SSE `event: close` before the server ends the stream; on WebSocket the same code and reason are the close frame's (1001 going-away, 1007 invalid-message, 1008 policy-violation, 4001 credential-expired, 4003 credential-revoked, 4008 slow-consumer, 4010 api-retired, 4029 rate-limited, …). Reconnect with `lastEventId` where the code allows.",
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "required": ["code", "reason"],
                "properties": {
                    "code": { "type": "integer" },
                    "reason": { "type": "string" },
                    "id": { "type": "string", "description": "Resume token of the last message sent." },
                },
            },
            "x-eventgate-control": true,
        },
    })
}

/// The stream query parameters (WebSocket channel binding).
fn stream_query() -> Value {
    json!({
        "type": "object",
        "properties": {
            "from": { "type": "string", "description": "`earliest`, `latest` (default) or a resume token: where the stream starts." },
            "lastEventId": { "type": "string", "description": "Resume after this token (as the SSE `Last-Event-ID` header)." },
            "envelope": { "type": "string", "enum": ["json"], "description": "WebSocket: wrap each message in the JSON envelope (and acknowledge published frames)." },
            "access_token": { "type": "string", "description": "The credential, for clients that cannot set `Authorization`." },
            "channel": { "type": "string", "description": "At an API's base path: the channel to stream (needed when the API has several)." },
        },
    })
}

/// One channel of the document: a topic of the gateway or a channel of an API.
struct Unit<'a> {
    /// Channel id in the document and the name clients use in routes.
    id: String,
    topic: String,
    title: String,
    /// The API whose channel it is (its own document), for specs and `x-eventgate`.
    spec: Option<(&'a Api, &'a str)>,
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
    let issuer = config.auth.oauth2.issuer.as_deref().unwrap_or(public_url);
    let token_url = format!("{issuer}/oauth2/token");
    let server = |protocol: &str, path: &str, title: &str, description: &str| {
        json!({
            "host": host,
            "protocol": protocol,
            "pathname": format!("{base_path}{path}"),
            "title": title,
            "description": description,
        })
    };
    let all_servers = json!({
        "websocket": server(ws, &format!("{prefix}/ws"), "WebSocket", "GET {pathname}/{channel} with a WebSocket upgrade (an API with one channel also at its base path). One frame per message: text for text content types, else binary; `?envelope=json` wraps each in a JSON envelope with its resume token; `?from=` / `lastEventId` resume."),
        "sse": server(http, &format!("{prefix}/sse"), "Server-Sent Events", "GET {pathname}/{channel}: one event per message; `id:` is the resume token (`Last-Event-ID`); control events `gap` and `close`."),
        "webhook": server(http, &format!("{prefix}/webhook-receiver"), "Webhook receiver", "POST {pathname}?topic={channel}: the body is published byte for byte with its content type; 202 once the broker holds it."),
        "websub": server(http, "/hub", "WebSub hub", "W3C WebSub: POST hub.mode=subscribe, hub.topic=<the channel's topic URL>, hub.callback=<url> (form-encoded); signed, ordered, at-least-once deliveries to the callback."),
    });

    // Topic → the APIs exposing it.
    let mut exposed: BTreeMap<&str, Vec<&Api>> = BTreeMap::new();
    for api in apis {
        for topic in api.channels.values() {
            exposed.entry(topic.as_str()).or_default().push(api);
        }
    }
    let mut units: Vec<Unit<'_>> = Vec::new();
    match scope {
        Some(api) if api.base_path.is_some() => {
            for (channel, topic) in &api.channels {
                units.push(Unit {
                    id: channel.clone(),
                    topic: topic.clone(),
                    title: format!("channel `{channel}` (topic `{topic}`)"),
                    spec: Some((api, channel.as_str())),
                });
            }
        }
        Some(api) => {
            for (channel, topic) in &api.channels {
                units.push(Unit {
                    id: topic.clone(),
                    topic: topic.clone(),
                    title: format!("topic `{topic}`"),
                    spec: Some((api, channel.as_str())),
                });
            }
        }
        None => {
            let mut all = declared_topics(config);
            all.extend(apis.iter().flat_map(|a| a.channels.values().cloned()));
            for topic in all {
                // The first API offering the topic documents its messages.
                let spec = exposed.get(topic.as_str()).and_then(|of| {
                    of.iter().find_map(|a| {
                        a.channels
                            .iter()
                            .find(|(_, t)| **t == topic)
                            .map(|(c, _)| (*a, c.as_str()))
                    })
                });
                units.push(Unit {
                    id: topic.clone(),
                    title: format!("topic `{topic}`"),
                    topic,
                    spec,
                });
            }
        }
    }

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut used_servers: BTreeSet<&str> = BTreeSet::new();
    let mut any_security = false;
    let mut controls_used = false;
    for unit in &units {
        let of = exposed
            .get(unit.topic.as_str())
            .cloned()
            .unwrap_or_default();
        let entrypoints: BTreeSet<Entrypoint> = if of.is_empty() {
            Entrypoint::ALL.into_iter().collect()
        } else {
            of.iter()
                .flat_map(|a| a.entrypoints.iter().copied())
                .collect()
        };
        // Open when any API of the topic is keyless (or none has it).
        let security: Vec<Value> = if of.is_empty() || of.iter().any(|a| a.security.is_empty()) {
            Vec::new()
        } else {
            let mut names: Vec<&str> = Vec::new();
            for s in of.iter().flat_map(|a| a.security.iter()) {
                for name in scheme_names(*s) {
                    if !names.contains(name) {
                        names.push(name);
                    }
                }
            }
            names
                .into_iter()
                .map(|n| json!({ "$ref": format!("#/components/securitySchemes/{n}") }))
                .collect()
        };
        any_security |= !security.is_empty();
        let with_security = |mut op: Value| {
            if !security.is_empty() {
                op["security"] = json!(security);
            }
            op
        };
        let id = &unit.id;
        // The channel's messages: its documented ones, or one of any payload.
        let documented = unit
            .spec
            .and_then(|(api, channel)| api.channel_specs.get(channel))
            .filter(|s| !s.messages.is_empty());
        let mut payload_refs = Map::new();
        match documented {
            Some(spec) => {
                for m in &spec.messages {
                    let mut message = json!({ "name": m.name });
                    if let Some(t) = &m.title {
                        message["title"] = json!(t);
                    }
                    if let Some(t) = &m.summary {
                        message["summary"] = json!(t);
                    }
                    if let Some(t) = &m.content_type {
                        message["contentType"] = json!(t);
                    }
                    message["payload"] = m
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_str(p).ok())
                        .unwrap_or_else(|| json!({}));
                    let examples: Vec<Value> = m
                        .examples
                        .iter()
                        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                        .map(|payload| json!({ "payload": payload }))
                        .collect();
                    if !examples.is_empty() {
                        message["examples"] = json!(examples);
                    }
                    let key = format!("{id}.{}", m.name);
                    messages.insert(key.clone(), message);
                    payload_refs.insert(
                        m.name.clone(),
                        json!({ "$ref": format!("#/components/messages/{key}") }),
                    );
                }
            }
            None => {
                let key = format!("{id}.message");
                messages.insert(
                    key.clone(),
                    json!({
                        "name": "message",
                        "title": format!("A message of {}", unit.title),
                        "summary": "The payload exactly as published, with its content type.",
                        "payload": {},
                    }),
                );
                payload_refs.insert(
                    "message".to_owned(),
                    json!({ "$ref": format!("#/components/messages/{key}") }),
                );
            }
        }
        let message_refs = |channel: &str| -> Vec<Value> {
            payload_refs
                .keys()
                .map(|m| json!({ "$ref": format!("#/channels/{channel}/messages/{m}") }))
                .collect()
        };
        let mut extension = json!({ "topic": unit.topic });
        if let Some((api, channel)) = unit.spec {
            extension["channel"] = json!(channel);
            if let Some(address) = api
                .channel_specs
                .get(channel)
                .and_then(|s| s.address.as_ref())
            {
                extension["address"] = json!(address);
            }
        }
        let spec_text = |mut channel: Value| {
            if let Some(spec) = documented {
                if let Some(d) = &spec.description {
                    channel["description"] = json!(d);
                }
            }
            channel
        };
        let streams: Vec<&str> = SERVERS
            .iter()
            .filter(|(e, _)| {
                matches!(e, Entrypoint::Websocket | Entrypoint::Sse) && entrypoints.contains(e)
            })
            .map(|(_, name)| *name)
            .collect();
        let frames = config.streams_allow_publish && entrypoints.contains(&Entrypoint::Websocket);
        if !streams.is_empty() {
            controls_used = true;
            used_servers.extend(streams.iter().copied());
            let mut channel_messages = payload_refs.clone();
            for control in ["envelope", "gap", "close"] {
                channel_messages.insert(
                    control.to_owned(),
                    json!({ "$ref": format!("#/components/messages/{control}") }),
                );
            }
            let mut channel = json!({
                "address": format!("/{id}"),
                "title": unit.title,
                "servers": streams.iter().map(|s| json!({ "$ref": format!("#/servers/{s}") })).collect::<Vec<_>>(),
                "messages": channel_messages,
                "x-eventgate": extension,
            });
            if entrypoints.contains(&Entrypoint::Websocket) {
                channel["bindings"] = json!({
                    "ws": { "method": "GET", "query": stream_query(), "bindingVersion": "0.1.0" }
                });
            }
            channels.insert(id.clone(), spec_text(channel));
            let mut sent = message_refs(id);
            for control in ["envelope", "gap", "close"] {
                sent.push(json!({ "$ref": format!("#/channels/{id}/messages/{control}") }));
            }
            operations.insert(
                format!("{id}.stream"),
                with_security(json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{id}") },
                    "title": format!("Stream {}", unit.title),
                    "summary": "The gateway sends each message to every WebSocket and SSE client of the channel, in order, from where the client asked to start.",
                    "messages": sent,
                })),
            );
            if frames {
                operations.insert(
                    format!("{id}.frames"),
                    with_security(json!({
                        "action": "receive",
                        "channel": { "$ref": format!("#/channels/{id}") },
                        "title": format!("Publish to {} as WebSocket frames", unit.title),
                        "summary": "The gateway publishes each frame a WebSocket client sends (text or binary) to the channel's topic; with envelopes it acknowledges each (`ack`/`nack`).",
                        "messages": message_refs(id),
                    })),
                );
            }
        }
        if entrypoints.contains(&Entrypoint::Webhook) {
            used_servers.insert("webhook");
            let channel_id = format!("{id}.webhook");
            channels.insert(
                channel_id.clone(),
                spec_text(json!({
                    "address": null,
                    "title": format!("{} (webhook receiver)", unit.title),
                    "description": format!("POST to the webhook receiver with `?topic={id}`."),
                    "servers": [{ "$ref": "#/servers/webhook" }],
                    "messages": payload_refs,
                    "x-eventgate": extension,
                })),
            );
            operations.insert(
                format!("{id}.publish"),
                with_security(json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{channel_id}") },
                    "title": format!("Publish to {}", unit.title),
                    "summary": "The gateway receives a message POSTed to the webhook receiver and publishes it to the channel's topic (202 once the broker holds it).",
                    "messages": message_refs(&channel_id),
                    "bindings": {
                        "http": {
                            "method": "POST",
                            "query": {
                                "type": "object",
                                "required": ["topic"],
                                "properties": { "topic": { "type": "string", "const": id } },
                            },
                            "bindingVersion": "0.3.0",
                        }
                    },
                })),
            );
        }
        if entrypoints.contains(&Entrypoint::Websub) {
            used_servers.insert("websub");
            let channel_id = format!("{id}.websub");
            let topic_url = match &api_base {
                Some(b) => format!("{public_url}{b}/topics/{id}"),
                None => format!("{public_url}/topics/{}", unit.topic),
            };
            let mut ext = extension.clone();
            ext["topicUrl"] = json!(topic_url);
            channels.insert(
                channel_id.clone(),
                spec_text(json!({
                    "address": null,
                    "title": format!("{} (WebSub)", unit.title),
                    "description": format!("Subscribe at the hub with `hub.topic={topic_url}`; deliveries are POSTed to the callback, signed with the subscriber's secret."),
                    "servers": [{ "$ref": "#/servers/websub" }],
                    "messages": payload_refs,
                    "x-eventgate": ext,
                })),
            );
            operations.insert(
                format!("{id}.deliver"),
                with_security(json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{channel_id}") },
                    "title": format!("Deliver {} to WebSub subscribers", unit.title),
                    "summary": "The gateway POSTs each message to every verified subscriber's callback, in order, retrying until the callback answers 2xx.",
                    "messages": message_refs(&channel_id),
                    "bindings": { "http": { "method": "POST", "bindingVersion": "0.3.0" } },
                })),
            );
        }
    }
    if config.topics_auto_create && scope.is_none() {
        used_servers.extend(["websocket", "sse"]);
        messages.insert(
            "any-topic.message".to_owned(),
            json!({ "name": "message", "summary": "The payload exactly as published, with its content type.", "payload": {} }),
        );
        channels.insert(
            ANY_TOPIC.to_owned(),
            json!({
                "address": "/{topic}",
                "title": "any topic (created on first use)",
                "servers": [{ "$ref": "#/servers/websocket" }, { "$ref": "#/servers/sse" }],
                "parameters": {
                    "topic": { "description": "Topic name: 1 to 249 characters of A-Z a-z 0-9 . _ -" }
                },
                "messages": { "message": { "$ref": "#/components/messages/any-topic.message" } },
            }),
        );
        operations.insert(
            format!("{ANY_TOPIC}.stream"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{ANY_TOPIC}") },
                "title": "Stream any topic",
                "messages": [{ "$ref": format!("#/channels/{ANY_TOPIC}/messages/message") }],
            }),
        );
    }
    if controls_used {
        if let Value::Object(controls) = control_messages() {
            messages.extend(controls);
        }
    }
    let info = match scope {
        Some(api) => api_info(api),
        None => json!({
            "title": "eventgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Topics of this eventgate gateway as WebSocket, Server-Sent Events and WebSub APIs, and its webhook receiver.",
        }),
    };
    let mut components = json!({ "messages": messages });
    if any_security {
        components["securitySchemes"] = security_schemes(&token_url);
    }
    let mut servers = all_servers;
    if let Some(map) = servers.as_object_mut() {
        map.retain(|k, _| used_servers.contains(k.as_str()));
    }
    let mut document = json!({
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/octet-stream",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
    });
    if let Some(api) = scope {
        document["x-eventgate"] = api_extension(api);
    }
    document
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn api_info(api: &Api) -> Value {
    let mut description = api
        .description
        .clone()
        .unwrap_or_else(|| format!("API `{}` of this eventgate gateway.", api.name));
    if api.lifecycle == Lifecycle::Deprecated {
        let sunset = api.sunset_ms.map_or(String::new(), |ms| {
            format!(" It will be retired at {}.", rfc3339(ms))
        });
        description = format!("**Deprecated.**{sunset} {description}");
    }
    let mut info = json!({
        "title": api.name,
        "version": api.version,
        "description": description,
        "x-eventgate-lifecycle": api.lifecycle.name(),
    });
    let mut tags: Vec<Value> = api.tags.iter().map(|t| json!({ "name": t })).collect();
    if api.lifecycle == Lifecycle::Deprecated {
        tags.push(json!({ "name": "deprecated" }));
    }
    if !tags.is_empty() {
        info["tags"] = Value::Array(tags);
    }
    if api.lifecycle == Lifecycle::Deprecated {
        if let Some(ms) = api.sunset_ms {
            info["x-eventgate-sunset"] = json!(rfc3339(ms));
        }
    }
    info
}

/// What an import needs, beyond the AsyncAPI, to make the same API again.
fn api_extension(api: &Api) -> Value {
    let mut ext = json!({
        "name": api.name,
        "entrypoints": api.entrypoints.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "security": api.security.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "validateMessages": api.validate_messages,
        "lifecycle": api.lifecycle.name(),
    });
    if let Some(d) = &api.description {
        ext["description"] = json!(d);
    }
    if let Some(b) = &api.base_path {
        ext["basePath"] = json!(b);
    }
    if let Some(m) = api.max_message_bytes {
        ext["maxMessageBytes"] = json!(m);
    }
    ext
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
