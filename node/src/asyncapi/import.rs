//! AsyncAPI documents imported as APIs: `POST /admin/apis/import`, `eventgate apis import`.
//!
//! Reads AsyncAPI 3.0 and 3.1, and 2.0 to 2.6, as JSON or YAML. Every `$ref` within the
//! document is resolved (external ones, and circular ones, are refused: import a bundled
//! document). What becomes of the document:
//!
//! - **name, version, description** from `info` (the name is the title made an identifier:
//!   `Streetlights Kafka API` → `streetlights-kafka-api`), unless `x-eventgate.name` or the
//!   import's `name` option says otherwise; the **base path** is `/<name>/<version>` unless
//!   `x-eventgate.basePath` or the `base_path` option gives one.
//! - **channels**: each AsyncAPI channel is a gateway channel named after its id (`lightMeasured`
//!   → `light-measured`), on the topic its address names (`/` read as `.`, so
//!   `smartylighting/streetlights` → `smartylighting.streetlights`). An address with parameters
//!   (`…event.{streetlightId}.lighting.measured`) names many topics, which one gateway topic
//!   cannot stand for: such a channel needs its topic from `x-eventgate.topic` on the channel or
//!   the `topics` option, and is refused otherwise, naming the channel. In 2.x documents the
//!   channel's key is its address and its name comes from the operation id.
//! - **messages**: each message of a channel is kept with its content type, payload schema
//!   (AsyncAPI/JSON Schema; other schema formats are kept out, with a warning) and examples.
//! - **security**: the schemes servers and operations require, mapped to what the gateway checks:
//!   `apiKey`/`httpApiKey` → API keys, `oauth2` and `http` bearer → the gateway's OAuth2 access
//!   tokens, `openIdConnect` → JWTs of the configured issuer (when one is). Schemes of broker
//!   access (SASL, X509, userPassword…) describe the broker, not the API's clients: ignored, with
//!   a warning. None left: API keys and OAuth2 tokens (`x-eventgate.security: []` makes a keyless
//!   API).
//!
//! A document exported by the gateway carries `x-eventgate` (root and channels), so that
//! importing it yields the same API. Every error names the JSON pointer of the problem.

use std::collections::BTreeMap;

use eventgate_raft_store::governance::{
    Api, ChannelSpec, Entrypoint, Lifecycle, MessageSpec, Origin, Security,
};
use serde_json::{Map, Value};

use crate::config::governance as rules;

/// Most values a document may hold once its `$ref`s are resolved.
const MAX_NODES: usize = 200_000;

/// Why a document cannot be imported, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// JSON pointer into the document (empty: the whole document or an import option).
    pub pointer: String,
    pub detail: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}", self.pointer, self.detail)
        }
    }
}

fn err(pointer: impl Into<String>, detail: impl Into<String>) -> ImportError {
    ImportError {
        pointer: pointer.into(),
        detail: detail.into(),
    }
}

/// A key as a JSON pointer segment.
fn esc(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// What the importer may override.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub name: Option<String>,
    pub base_path: Option<String>,
    /// Channel id (2.x: address) → topic.
    pub topics: BTreeMap<String, String>,
    pub validate_messages: Option<bool>,
    /// Whether `[auth.jwt]` is configured (so `openIdConnect` can map to JWTs).
    pub jwt_configured: bool,
}

/// An API made from a document.
#[derive(Debug, Clone)]
pub struct Imported {
    pub api: Api,
    /// What was left out or assumed.
    pub warnings: Vec<String>,
}

/// Reads `bytes` as JSON, or else as YAML.
pub fn parse(bytes: &[u8]) -> Result<Value, ImportError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| err("", format!("the document is not UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| {
            err(
                "",
                format!(
                    "not a JSON document: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        });
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| err("", format!("not a JSON or YAML document: {e}")))?;
    let Some(doc) = docs.into_iter().next() else {
        return Err(err("", "the document is empty"));
    };
    yaml_to_json(&doc, "")
}

fn yaml_to_json(yaml: &yaml_rust2::Yaml, at: &str) -> Result<Value, ImportError> {
    use yaml_rust2::Yaml;
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => {
            let f: f64 = text
                .parse()
                .map_err(|_| err(at, format!("`{text}` is not a number")))?;
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{at}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Real(r) => r.clone(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => return Err(err(at, "a mapping key that is not a string")),
                };
                let value = yaml_to_json(v, &format!("{at}/{}", esc(&key)))?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err(err(at, "YAML aliases are not supported")),
        Yaml::BadValue => return Err(err(at, "a value YAML cannot read")),
    })
}

/// Resolves every `$ref` of a document within it.
struct Resolver<'a> {
    root: &'a Value,
    budget: usize,
}

impl Resolver<'_> {
    fn resolve(
        &mut self,
        value: &Value,
        at: &str,
        stack: &mut Vec<String>,
    ) -> Result<Value, ImportError> {
        if self.budget == 0 {
            return Err(err(
                at,
                format!(
                    "the document holds more than {MAX_NODES} values once its $refs are resolved"
                ),
            ));
        }
        self.budget -= 1;
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    let here = format!("{at}/$ref");
                    let Value::String(reference) = reference else {
                        return Err(err(here, "a $ref is a string"));
                    };
                    let Some(fragment) = reference.strip_prefix('#') else {
                        return Err(err(
                            here,
                            format!("`{reference}` points outside the document: external references are refused; import one self-contained (bundled) document"),
                        ));
                    };
                    let pointer = percent_encoding::percent_decode_str(fragment)
                        .decode_utf8()
                        .map_err(|_| err(&here, "the $ref is not UTF-8 once decoded"))?
                        .into_owned();
                    if stack.contains(&pointer) {
                        return Err(err(
                            here,
                            format!("`{reference}` refers to itself (a circular reference): the gateway keeps schemas without cycles"),
                        ));
                    }
                    let target = self.root.pointer(&pointer).ok_or_else(|| {
                        err(
                            &here,
                            format!("`{reference}` points at nothing in the document"),
                        )
                    })?;
                    stack.push(pointer.clone());
                    let resolved = self.resolve(target, &pointer, stack);
                    stack.pop();
                    return resolved;
                }
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(
                        k.clone(),
                        self.resolve(v, &format!("{at}/{}", esc(k)), stack)?,
                    );
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.resolve(v, &format!("{at}/{i}"), stack))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
}

/// `document` with every `$ref` replaced by what it points at.
pub fn resolve_refs(document: &Value) -> Result<Value, ImportError> {
    Resolver {
        root: document,
        budget: MAX_NODES,
    }
    .resolve(document, "", &mut Vec::new())
}

/// `Streetlights Kafka API` → `streetlights-kafka-api`, `lightMeasured` → `light-measured`.
pub fn identifier(text: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('-');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if c == '_' {
                out.push('_');
            } else {
                out.push('-');
            }
            previous_lower = false;
        }
    }
    let mut collapsed = String::new();
    for c in out.chars() {
        if (c == '-' || c == '_') && (collapsed.is_empty() || collapsed.ends_with(['-', '_'])) {
            continue;
        }
        collapsed.push(c);
    }
    let mut name: String = collapsed.trim_end_matches(['-', '_']).to_owned();
    if name.len() > 64 {
        name.truncate(64);
        name = name.trim_end_matches(['-', '_']).to_owned();
    }
    name
}

enum Spec {
    V2,
    V3,
}

fn string_at<'a>(value: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>, ImportError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{at}/{}", esc(key)), "must be a string")),
    }
}

fn strings_at(value: &Value, key: &str, at: &str) -> Result<Option<Vec<String>>, ImportError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("{at}/{}/{i}", esc(key)), "must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(err(
            format!("{at}/{}", esc(key)),
            "must be an array of strings",
        )),
    }
}

/// Makes an API of `document`.
pub fn import(document: &Value, options: &Options, now_ms: u64) -> Result<Imported, ImportError> {
    if !document.is_object() {
        return Err(err("", "an AsyncAPI document is a JSON (or YAML) object"));
    }
    let version = string_at(document, "asyncapi", "")?.ok_or_else(|| {
        err(
            "/asyncapi",
            "not an AsyncAPI document: `asyncapi` (the specification's version) is missing",
        )
    })?;
    let spec = match version.split('.').collect::<Vec<_>>().as_slice() {
        ["3", "0" | "1", ..] => Spec::V3,
        ["2", minor, ..] if minor.parse::<u32>().is_ok_and(|m| m <= 6) => Spec::V2,
        _ => {
            return Err(err(
                "/asyncapi",
                format!("AsyncAPI {version} is not supported: 3.0, 3.1 and 2.0 to 2.6 are"),
            ))
        }
    };
    let d = resolve_refs(document)?;
    let mut warnings = Vec::new();
    let ext = d.get("x-eventgate").cloned().unwrap_or(Value::Null);
    if !(ext.is_null() || ext.is_object()) {
        return Err(err("/x-eventgate", "must be an object"));
    }
    let info = d.get("info").filter(|i| i.is_object()).ok_or_else(|| {
        err(
            "/info",
            "`info` (an object with title and version) is required",
        )
    })?;
    let title = string_at(info, "title", "/info")?
        .ok_or_else(|| err("/info/title", "`info.title` is required"))?;
    let api_version = string_at(info, "version", "/info")?
        .ok_or_else(|| err("/info/version", "`info.version` is required"))?;

    // Name.
    let (name, name_at) = match (&options.name, string_at(&ext, "name", "/x-eventgate")?) {
        (Some(n), _) => (n.clone(), String::new()),
        (None, Some(n)) => (n.to_owned(), "/x-eventgate/name".to_owned()),
        (None, None) => (identifier(title), "/info/title".to_owned()),
    };
    rules::valid_name(&name).map_err(|e| {
        err(
            &name_at,
            format!("`{name}` is not an API name ({e}); give one with x-eventgate.name or the name option"),
        )
    })?;
    let description = match string_at(&ext, "description", "/x-eventgate")? {
        Some(d) => Some(d.to_owned()),
        None => string_at(info, "description", "/info")?.map(str::to_owned),
    };
    // `info.tags`: their names (`deprecated` is the lifecycle's, not a tag of the API's).
    let mut tag_names = Vec::new();
    if let Some(tags) = info.get("tags").filter(|t| !t.is_null()) {
        let items = tags
            .as_array()
            .ok_or_else(|| err("/info/tags", "must be a list of tag objects"))?;
        for (i, tag) in items.iter().enumerate() {
            let name = tag
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("/info/tags/{i}/name"), "a tag needs a name"))?;
            if name != "deprecated" {
                tag_names.push(name.to_owned());
            }
        }
    }
    let tags =
        crate::config::governance::check_tags(&tag_names).map_err(|e| err("/info/tags", e))?;

    // Base path.
    let (base_path, base_at) = match (
        &options.base_path,
        string_at(&ext, "basePath", "/x-eventgate")?,
    ) {
        (Some(b), _) => (b.clone(), String::new()),
        (None, Some(b)) => (b.to_owned(), "/x-eventgate/basePath".to_owned()),
        (None, None) => {
            let versioned = format!("/{name}/{api_version}");
            if rules::valid_base_path(&versioned).is_ok() {
                (versioned, "/info/version".to_owned())
            } else {
                warnings.push(format!(
                    "info.version `{api_version}` cannot be a path segment; the base path is /{name}"
                ));
                (format!("/{name}"), "/info/title".to_owned())
            }
        }
    };
    rules::valid_base_path(&base_path)
        .map_err(|e| err(&base_at, format!("base path `{base_path}`: {e}")))?;

    // Entrypoints.
    let entrypoints = match strings_at(&ext, "entrypoints", "/x-eventgate")? {
        None => Entrypoint::ALL.to_vec(),
        Some(given) => {
            rules::parse_entrypoints(&given).map_err(|e| err("/x-eventgate/entrypoints", e))?
        }
    };
    let max_message_bytes = match ext.get("maxMessageBytes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            err(
                "/x-eventgate/maxMessageBytes",
                "must be an integer of 1 or more",
            )
        })?),
    };
    let validate_messages = match (options.validate_messages, ext.get("validateMessages")) {
        (Some(v), _) => v,
        (None, None | Some(Value::Null)) => false,
        (None, Some(Value::Bool(b))) => *b,
        (None, Some(_)) => {
            return Err(err(
                "/x-eventgate/validateMessages",
                "must be true or false",
            ))
        }
    };

    let default_content_type = string_at(&d, "defaultContentType", "")?.map(str::to_owned);
    let mut channels: BTreeMap<String, (String, String)> = BTreeMap::new(); // name → (topic, from)
    let mut specs: BTreeMap<String, ChannelSpec> = BTreeMap::new();
    let raw_channels = match d.get("channels") {
        Some(Value::Object(map)) if !map.is_empty() => map,
        Some(Value::Object(_)) | None => {
            return Err(err(
                "/channels",
                "the document has no channels: an API has at least one",
            ))
        }
        Some(_) => return Err(err("/channels", "must be an object")),
    };
    // Every channel that names many topics and has none given, named at once.
    let unmapped: Vec<&str> = raw_channels
        .iter()
        .filter(|(key, channel)| {
            let address = match spec {
                Spec::V3 => channel.get("address").and_then(Value::as_str),
                Spec::V2 => Some(key.as_str()),
            };
            address.is_some_and(|a| a.contains('{'))
                && !options.topics.contains_key(*key)
                && channel
                    .get("x-eventgate")
                    .and_then(|e| e.get("topic"))
                    .is_none()
        })
        .map(|(key, _)| key.as_str())
        .collect();
    let also = match unmapped.as_slice() {
        [] | [_] => String::new(),
        [_, rest @ ..] => format!(
            " (so do {})",
            rest.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for (key, channel) in raw_channels {
        let at = format!("/channels/{}", esc(key));
        if !channel.is_object() {
            return Err(err(at, "a channel is an object"));
        }
        let cext = channel.get("x-eventgate").cloned().unwrap_or(Value::Null);
        let cext_at = format!("{at}/x-eventgate");
        let (address, address_at, name_hint) = match spec {
            Spec::V3 => (
                string_at(channel, "address", &at)?.map(str::to_owned),
                format!("{at}/address"),
                identifier(key),
            ),
            Spec::V2 => {
                let operation_id = ["subscribe", "publish"].iter().find_map(|op| {
                    channel
                        .get(op)
                        .and_then(|o| o.get("operationId"))
                        .and_then(Value::as_str)
                });
                (
                    Some(key.clone()),
                    at.clone(),
                    identifier(operation_id.unwrap_or(key)),
                )
            }
        };
        let channel_name = match string_at(&cext, "channel", &cext_at)? {
            Some(c) => c.to_owned(),
            None => name_hint,
        };
        rules::valid_name(&channel_name).map_err(|e| {
            err(
                &at,
                format!("channel `{key}` does not make a channel name (`{channel_name}`: {e}); give one with x-eventgate.channel"),
            )
        })?;
        let topic = if let Some(t) = options.topics.get(key) {
            t.clone()
        } else if let Some(t) = string_at(&cext, "topic", &cext_at)? {
            t.to_owned()
        } else {
            match &address {
                Some(a) if a.contains('{') => {
                    return Err(err(
                        address_at,
                        format!("channel `{key}` has parameters in its address `{a}`{also}: it names many topics, and one gateway topic cannot stand for them. Map each to a topic with `x-eventgate: {{topic: …}}` on the channel or the import's topic option (`topic.{key}=…`)"),
                    ));
                }
                Some(a) => {
                    let topic = a.trim_matches('/').replace('/', ".");
                    if topic != *a {
                        warnings.push(format!(
                            "channel `{key}`: address `{a}` is topic `{topic}` (`/` read as `.`)"
                        ));
                    }
                    topic
                }
                None => channel_name.clone(),
            }
        };
        eventgate_actors::broker::validate_topic_name(&topic).map_err(|e| {
            err(
                &address_at,
                format!("channel `{key}`: topic `{topic}`: {e}"),
            )
        })?;
        match channels.get(&channel_name) {
            Some((existing, from)) if *existing != topic => {
                return Err(err(
                    at,
                    format!("channels `{from}` and `{key}` are both gateway channel `{channel_name}`, on different topics (`{existing}`, `{topic}`)"),
                ));
            }
            Some(_) => {}
            None => {
                channels.insert(channel_name.clone(), (topic, key.clone()));
            }
        }
        // Its messages.
        let mut found: Vec<(String, String, &Value)> = Vec::new();
        match spec {
            Spec::V3 => {
                if let Some(messages) = channel.get("messages") {
                    let Value::Object(messages) = messages else {
                        return Err(err(format!("{at}/messages"), "must be an object"));
                    };
                    for (id, m) in messages {
                        found.push((id.clone(), format!("{at}/messages/{}", esc(id)), m));
                    }
                }
            }
            Spec::V2 => {
                for op in ["subscribe", "publish"] {
                    let Some(message) = channel.get(op).and_then(|o| o.get("message")) else {
                        continue;
                    };
                    let m_at = format!("{at}/{op}/message");
                    let list: Vec<(String, &Value)> = match message.get("oneOf") {
                        Some(Value::Array(items)) => items
                            .iter()
                            .enumerate()
                            .map(|(i, m)| (format!("{m_at}/oneOf/{i}"), m))
                            .collect(),
                        Some(_) => return Err(err(format!("{m_at}/oneOf"), "must be an array")),
                        None => vec![(m_at.clone(), message)],
                    };
                    for (i, (m_at, m)) in list.into_iter().enumerate() {
                        let id = ["messageId", "name"]
                            .iter()
                            .find_map(|k| m.get(*k).and_then(Value::as_str))
                            .map_or_else(|| format!("{op}-{i}"), str::to_owned);
                        found.push((id, m_at, m));
                    }
                }
            }
        }
        let entry = specs.entry(channel_name.clone()).or_default();
        if entry.address.is_none() {
            entry.address = string_at(&cext, "address", &cext_at)?
                .map(str::to_owned)
                .or(address.clone());
        }
        if entry.title.is_none() {
            entry.title = string_at(channel, "title", &at)?.map(str::to_owned);
        }
        if entry.description.is_none() {
            entry.description = string_at(channel, "description", &at)?.map(str::to_owned);
        }
        for (id, m_at, m) in found {
            if !m.is_object() {
                return Err(err(m_at, "a message is an object"));
            }
            if m.get("x-eventgate-control").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let message = message_spec(
                &id,
                m,
                &m_at,
                default_content_type.as_deref(),
                &mut warnings,
            )?;
            if !entry.messages.iter().any(|e| e.name == message.name) {
                entry.messages.push(message);
            }
        }
    }
    specs.retain(|_, s| {
        !(s.messages.is_empty()
            && s.title.is_none()
            && s.description.is_none()
            && s.address.is_none())
    });

    // Security.
    let security = match strings_at(&ext, "security", "/x-eventgate")? {
        Some(given) => {
            rules::parse_security(&given).map_err(|e| err("/x-eventgate/security", e))?
        }
        None => {
            let mut found = document_security(&d, &spec, options.jwt_configured, &mut warnings)?;
            if found.is_empty() {
                warnings.push("the document requires no credential the gateway checks: the API takes API keys and OAuth2 access tokens (x-eventgate.security: [] makes it keyless)".to_owned());
                found = vec![Security::ApiKey, Security::OAuth2];
            }
            found.sort();
            found
        }
    };
    if validate_messages
        && !specs
            .values()
            .any(|s| s.messages.iter().any(|m| m.payload.is_some()))
    {
        warnings
            .push("messages are to be validated, but no channel has a payload schema".to_owned());
    }
    let api = Api {
        name,
        version: api_version.to_owned(),
        description,
        base_path: Some(base_path),
        channels: channels.into_iter().map(|(c, (t, _))| (c, t)).collect(),
        entrypoints,
        security,
        max_message_bytes,
        origin: Origin::Admin,
        updated_at_ms: now_ms,
        lifecycle: Lifecycle::Created,
        lifecycle_since_ms: now_ms,
        sunset_ms: None,
        channel_specs: specs,
        validate_messages,
        // Not described by AsyncAPI: a re-import keeps what the API had (the admin API's).
        verify_ingest: None,
        tags,
    };
    Ok(Imported { api, warnings })
}

/// One message of a channel.
fn message_spec(
    id: &str,
    m: &Value,
    at: &str,
    default_content_type: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<MessageSpec, ImportError> {
    let content_type = string_at(m, "contentType", at)?
        .or(default_content_type)
        .map(str::to_owned);
    let mut format = string_at(m, "schemaFormat", at)?.map(str::to_owned);
    let mut payload = m.get("payload").filter(|p| !p.is_null());
    let mut payload_at = format!("{at}/payload");
    // AsyncAPI 3: a Multi Format Schema Object.
    if let Some(p) = payload {
        if p.get("schemaFormat").is_some() && p.get("schema").is_some() {
            format = string_at(p, "schemaFormat", &payload_at)?.map(str::to_owned);
            payload = p.get("schema");
            payload_at = format!("{payload_at}/schema");
        }
    }
    let json_schema = format.as_deref().is_none_or(|f| {
        f.starts_with("application/vnd.aai.asyncapi") || f.starts_with("application/schema+")
    });
    let schema = match payload {
        Some(_) if !json_schema => {
            warnings.push(format!(
                "{payload_at}: schema format `{}` is not JSON Schema; the message is kept without its schema and not validated",
                format.as_deref().unwrap_or_default()
            ));
            None
        }
        Some(schema) => {
            rules::check_schema(schema).map_err(|e| err(&payload_at, e))?;
            Some(schema.to_string())
        }
        None => None,
    };
    let mut examples = Vec::new();
    if let Some(list) = m.get("examples") {
        let Value::Array(list) = list else {
            return Err(err(format!("{at}/examples"), "must be an array"));
        };
        for example in list {
            if let Some(p) = example.get("payload") {
                examples.push(p.to_string());
            }
        }
    }
    Ok(MessageSpec {
        name: id.to_owned(),
        title: string_at(m, "title", at)?.map(str::to_owned),
        summary: string_at(m, "summary", at)?.map(str::to_owned),
        content_type,
        payload: schema,
        examples,
    })
}

/// What the gateway checks for the security schemes the document requires.
fn document_security(
    d: &Value,
    spec: &Spec,
    jwt_configured: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Security>, ImportError> {
    // (pointer, scheme object, its name when known).
    let mut schemes: Vec<(String, Value)> = Vec::new();
    let components = d
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut collect = |list: Option<&Value>, at: &str| -> Result<(), ImportError> {
        let Some(list) = list else { return Ok(()) };
        let Value::Array(items) = list else {
            return Err(err(at, "`security` is an array"));
        };
        for (i, item) in items.iter().enumerate() {
            let item_at = format!("{at}/{i}");
            match spec {
                Spec::V3 => schemes.push((item_at, item.clone())),
                Spec::V2 => {
                    let Value::Object(requirement) = item else {
                        return Err(err(item_at, "a security requirement is an object"));
                    };
                    for name in requirement.keys() {
                        let scheme = components.get(name).cloned().ok_or_else(|| {
                            err(
                                &item_at,
                                format!(
                                    "security scheme `{name}` is not in components.securitySchemes"
                                ),
                            )
                        })?;
                        schemes
                            .push((format!("/components/securitySchemes/{}", esc(name)), scheme));
                    }
                }
            }
        }
        Ok(())
    };
    if let Some(Value::Object(servers)) = d.get("servers") {
        for (id, server) in servers {
            let at = format!("/servers/{}/security", esc(id));
            collect(server.get("security"), &at)?;
        }
    }
    match spec {
        Spec::V3 => {
            if let Some(Value::Object(operations)) = d.get("operations") {
                for (id, op) in operations {
                    let at = format!("/operations/{}/security", esc(id));
                    collect(op.get("security"), &at)?;
                }
            }
        }
        Spec::V2 => {
            if let Some(Value::Object(channels)) = d.get("channels") {
                for (key, channel) in channels {
                    for op in ["subscribe", "publish"] {
                        let at = format!("/channels/{}/{op}/security", esc(key));
                        collect(channel.get(op).and_then(|o| o.get("security")), &at)?;
                    }
                }
            }
        }
    }
    let mut out: Vec<Security> = Vec::new();
    let mut add = |s: Security| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for (at, scheme) in schemes {
        if let Some(name) = scheme.get("x-eventgate-security").and_then(Value::as_str) {
            let s = Security::parse(name).ok_or_else(|| {
                err(
                    format!("{at}/x-eventgate-security"),
                    format!("`{name}` is not one of api_key, jwt, oauth2"),
                )
            })?;
            add(s);
            continue;
        }
        let kind = string_at(&scheme, "type", &at)?
            .ok_or_else(|| err(&at, "a security scheme has a `type`"))?;
        match kind {
            "apiKey" | "httpApiKey" => add(Security::ApiKey),
            "http" => match string_at(&scheme, "scheme", &at)?
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("bearer") => add(Security::OAuth2),
                other => warnings.push(format!(
                    "{at}: http scheme `{}` is not a credential the gateway checks; ignored",
                    other.unwrap_or_default()
                )),
            },
            "oauth2" => {
                if scheme
                    .get("flows")
                    .and_then(|f| f.get("clientCredentials"))
                    .is_none()
                {
                    warnings.push(format!(
                        "{at}: the gateway issues OAuth2 tokens by client credentials only"
                    ));
                }
                add(Security::OAuth2);
            }
            "openIdConnect" if jwt_configured => add(Security::Jwt),
            "openIdConnect" => warnings.push(format!(
                "{at}: openIdConnect needs [auth.jwt] on the nodes; ignored"
            )),
            other => warnings.push(format!(
                "{at}: `{other}` describes access to the broker, not the API's clients; ignored"
            )),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_from_titles_and_ids() {
        assert_eq!(
            identifier("Streetlights Kafka API"),
            "streetlights-kafka-api"
        );
        assert_eq!(identifier("lightMeasured"), "light-measured");
        assert_eq!(identifier("SweetProdApp"), "sweet-prod-app");
        assert_eq!(identifier("user_signed-up"), "user_signed-up");
        assert_eq!(identifier("  --x--  "), "x");
    }

    #[test]
    fn refs_resolve_inside_and_are_refused_outside_or_in_circles() {
        let doc = serde_json::json!({
            "a": { "$ref": "#/components/x" },
            "components": { "x": { "type": "string" }, "loop": { "$ref": "#/components/loop" } },
        });
        let d = Resolver {
            root: &doc,
            budget: 100,
        }
        .resolve(&doc["a"], "/a", &mut Vec::new())
        .unwrap();
        assert_eq!(d, serde_json::json!({ "type": "string" }));
        let e = resolve_refs(&serde_json::json!({ "p": { "$ref": "other.yaml#/x" } })).unwrap_err();
        assert_eq!(e.pointer, "/p/$ref");
        let e = resolve_refs(&doc).unwrap_err();
        assert_eq!(e.pointer, "/components/loop/$ref");
        let e = resolve_refs(&serde_json::json!({ "p": { "$ref": "#/nowhere" } })).unwrap_err();
        assert_eq!(e.pointer, "/p/$ref");
    }

    #[test]
    fn a_3_1_document_imports() {
        let doc = serde_json::json!({
            "asyncapi": "3.1.0",
            "info": { "title": "Orders", "version": "3" },
            "channels": { "orderPlaced": { "address": "orders/placed" } },
        });
        let imported = import(&doc, &Options::default(), 1).unwrap();
        assert_eq!(imported.api.name, "orders");
        assert_eq!(imported.api.base_path.as_deref(), Some("/orders/3"));
        assert_eq!(
            imported
                .api
                .channels
                .get("order-placed")
                .map(String::as_str),
            Some("orders.placed")
        );
    }

    /// JSON trees made of the words AsyncAPI documents use.
    fn documents() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let keys = prop::sample::select(vec![
            "asyncapi",
            "info",
            "title",
            "version",
            "channels",
            "address",
            "messages",
            "payload",
            "$ref",
            "operations",
            "security",
            "servers",
            "components",
            "type",
            "x-eventgate",
            "topic",
            "schemaFormat",
            "schema",
            "oneOf",
            "subscribe",
            "publish",
            "message",
            "examples",
            "contentType",
            "securitySchemes",
            "flows",
            "a",
            "b",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "3.0.0",
                "2.6.0",
                "3.1.0",
                "#/components/a",
                "#/",
                "#",
                "x.{y}",
                "a/b",
                "http",
                "bearer",
                "oauth2",
                "apiKey",
                "object",
                "",
                "other.yaml#/a",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a document holds, the import answers an API or an error; never a panic.
        #[test]
        fn arbitrary_documents_never_panic(mut doc in documents(), version in proptest::sample::select(vec!["3.0.0", "2.6.0"])) {
            if let Value::Object(map) = &mut doc {
                map.insert("asyncapi".to_owned(), Value::String(version.to_owned()));
            }
            let _ = import(&doc, &Options::default(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(doc) = parse(&bytes) {
                let _ = import(&doc, &Options::default(), 0);
            }
        }
    }

    #[test]
    fn yaml_and_json_read_alike() {
        let yaml = parse(b"asyncapi: 3.0.0\ninfo:\n  title: T\n  version: '1'\nn: 1.5\n").unwrap();
        let json =
            parse(br#"{"asyncapi":"3.0.0","info":{"title":"T","version":"1"},"n":1.5}"#).unwrap();
        assert_eq!(yaml, json);
        assert!(parse(b"a: [").is_err());
    }
}
