//! The API-management part of the configuration (config as code): `[apis.<name>]`,
//! `[plans.<name>]`, `[applications.<id>]` and `[auth]`. What it declares is applied to the
//! replicated state when the node starts ([`Declared`]), replacing what an earlier
//! configuration declared; entities made through the admin API are left alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use eventgate_raft_store::governance::{
    Access, AccessState, Api, ApiKey, Application, ChannelSpec, Declared, Entrypoint, IngestScheme,
    IngestSignature, Lifecycle, MessageSpec, Origin, OverLimit, Permission, Plan, RateLimit,
    Security,
};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Topics that belong to no API are open to clients without credentials.
    pub anonymous: bool,
    pub jwt: Option<RawJwt>,
    pub oauth2: RawOAuth2,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            anonymous: true,
            jwt: None,
            oauth2: RawOAuth2::default(),
        }
    }
}

/// `[auth.oauth2]`: the access tokens this gateway issues (client credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOAuth2 {
    /// `iss` of the tokens and of the RFC 8414 metadata. Default: `http.public_url` (or the
    /// node's advertised address). Give every node the same.
    pub issuer: Option<String>,
    /// How long an access token lives.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Age at which the cluster's signing key is replaced by a new one (the old one keeps
    /// verifying the tokens it signed until they expire).
    #[serde(with = "humantime_serde")]
    pub key_rotation: Duration,
    /// How long a client secret rotated out keeps working by default.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// Token requests per client id on each node, per window.
    pub token_requests: RawRate,
    /// Token requests per client address on each node in the same window (default ten times
    /// `token_requests.count`; 0: no limit per address, for nodes behind a proxy whose clients
    /// all arrive from its address).
    pub token_requests_per_address: Option<u64>,
}

impl Default for RawOAuth2 {
    fn default() -> Self {
        Self {
            issuer: None,
            token_ttl: Duration::from_secs(900),
            key_rotation: Duration::from_secs(24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            token_requests: RawRate {
                count: 60,
                per: Duration::from_secs(60),
            },
            token_requests_per_address: None,
        }
    }
}

/// `[auth.oauth2]`, validated.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    /// None: the node's public URL.
    pub issuer: Option<String>,
    pub token_ttl: Duration,
    pub key_rotation: Duration,
    pub secret_overlap: Duration,
    pub token_requests: RateLimit,
    /// Per client address in the same window; 0: none.
    pub token_requests_per_address: u64,
}

fn build_oauth2(
    o: &RawOAuth2,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<OAuth2Settings, ConfigError> {
    if let Some(issuer) = &o.issuer {
        let ok = reqwest::Url::parse(issuer).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none()
        });
        if !ok {
            return Err(invalid(
                "auth.oauth2.issuer",
                "must be an http or https URL without query or fragment (RFC 8414)".to_owned(),
            ));
        }
    }
    if o.token_ttl < Duration::from_secs(10) || o.token_ttl > Duration::from_secs(24 * 3600) {
        return Err(invalid(
            "auth.oauth2.token_ttl",
            "must be between 10s and 24h".to_owned(),
        ));
    }
    if o.key_rotation <= o.token_ttl {
        return Err(invalid(
            "auth.oauth2.key_rotation",
            "must be longer than auth.oauth2.token_ttl".to_owned(),
        ));
    }
    let token_requests = rate(o.token_requests.count, o.token_requests.per)
        .map_err(|e| invalid("auth.oauth2.token_requests", e))?;
    Ok(OAuth2Settings {
        issuer: o.issuer.clone().map(|i| i.trim_end_matches('/').to_owned()),
        token_ttl: o.token_ttl,
        key_rotation: o.key_rotation,
        secret_overlap: o.secret_overlap,
        token_requests_per_address: o
            .token_requests_per_address
            .unwrap_or(token_requests.count.saturating_mul(10)),
        token_requests,
    })
}

/// `[auth.jwt]`: how bearer JWTs are verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwt {
    /// Accepted `iss` values; required.
    pub issuer: Vec<String>,
    /// Accepted `aud` values; required.
    pub audience: Vec<String>,
    /// Accepted algorithms: HS256, RS256, ES256.
    pub algorithms: Vec<String>,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key (RS256 or ES256).
    pub public_key_file: Option<PathBuf>,
    /// JSON Web Key Set, from a file or a URL.
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub leeway: Option<Duration>,
    /// The claim naming the application (default `sub`).
    pub application_claim: Option<String>,
}

/// `[apis.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub version: String,
    pub description: Option<String>,
    /// Words the portal's catalog shows and searches.
    pub tags: Vec<String>,
    /// `/shop`: the API's own routes, addressed by channel name: `{base_path}/ws/{channel}`,
    /// `/sse/{channel}`, `/topics/{channel}` (WebSub topic URLs),
    /// `/webhook-receiver?topic={channel}`, `/asyncapi.json`.
    #[schema(pattern = "^(/[A-Za-z0-9._~-]+){1,8}$")]
    pub base_path: Option<String>,
    /// Channel → gateway topic.
    pub channels: BTreeMap<String, String>,
    /// `websub`, `websocket`, `sse`, `webhook`; all four when absent.
    pub entrypoints: Option<Vec<String>>,
    /// `api_key`, `jwt`, `oauth2`; empty: keyless; all three when absent.
    pub security: Option<Vec<String>>,
    pub max_message_bytes: Option<u64>,
    /// `created`, `published`, `deprecated` or `retired`. Default: `published` for an API of
    /// the configuration, `created` for one made through the admin API (an existing one keeps
    /// its state).
    pub lifecycle: Option<String>,
    /// When a deprecated API will be retired (RFC 3339), announced in `Sunset` headers.
    pub sunset: Option<String>,
    /// Channel → the JSON Schema of its messages' payloads (draft 7 unless `$schema` says).
    #[schema(value_type = BTreeMap<String, Object>)]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Whether messages published through this API must match their channel's schema.
    pub validate_messages: bool,
    /// The signature the provider must put on its publishes to the webhook receiver.
    pub verify_ingest: Option<RawIngestSignature>,
}

/// `[apis.<name>.verify_ingest]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngestSignature {
    /// `github`, `standard-webhooks` or `hmac`.
    pub scheme: String,
    pub secret: String,
    /// The `hmac` scheme's header (default `X-Signature`).
    pub header: Option<String>,
    /// Standard Webhooks' timestamp tolerance (default 5 minutes).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "5m")]
    pub tolerance: Option<Duration>,
}

/// An API's tags: at most 20, each 1 to 50 characters, no duplicates (kept in the given order).
pub fn check_tags(tags: &[String]) -> Result<Vec<String>, String> {
    if tags.len() > 20 {
        return Err("at most 20 tags".to_owned());
    }
    let mut seen = Vec::new();
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty() || tag.chars().count() > 50 {
            return Err(format!("`{tag}`: a tag has 1 to 50 characters"));
        }
        if !seen.iter().any(|t: &String| t.eq_ignore_ascii_case(tag)) {
            seen.push(tag.to_owned());
        }
    }
    Ok(seen)
}

/// An API's inbound signature requirement from its description; errors name the field.
pub fn ingest_from_raw(raw: &RawIngestSignature) -> Result<IngestSignature, (String, String)> {
    let field = |name: &str| format!("verify_ingest.{name}");
    let scheme = IngestScheme::parse(&raw.scheme).ok_or_else(|| {
        (
            field("scheme"),
            format!("`{}` is not github, standard-webhooks or hmac", raw.scheme),
        )
    })?;
    if raw.secret.is_empty() || raw.secret.len() > 512 {
        return Err((field("secret"), "1 to 512 bytes".to_owned()));
    }
    if scheme == IngestScheme::StandardWebhooks {
        eventgate_actors::standard_webhooks::key_of(&raw.secret)
            .map_err(|e| (field("secret"), e))?;
    }
    let header = raw
        .header
        .clone()
        .unwrap_or_else(|| "x-signature".to_owned())
        .to_ascii_lowercase();
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err((field("header"), format!("`{header}` is not a header name")));
    }
    if raw.header.is_some() && scheme != IngestScheme::Hmac {
        return Err((
            field("header"),
            "only the hmac scheme takes a header; github and standard-webhooks have theirs"
                .to_owned(),
        ));
    }
    let tolerance = raw.tolerance.unwrap_or(Duration::from_secs(300));
    if tolerance.is_zero() || tolerance > Duration::from_secs(3600) {
        return Err((field("tolerance"), "more than 0 and at most 1h".to_owned()));
    }
    Ok(IngestSignature {
        scheme,
        secret: raw.secret.clone(),
        header,
        tolerance_ms: tolerance.as_millis() as u64,
    })
}

/// `lifecycle` and `sunset` of an API description; errors name the field.
pub fn lifecycle_from_raw(
    lifecycle: Option<&str>,
    sunset: Option<&str>,
    default: Lifecycle,
) -> Result<(Lifecycle, Option<u64>), (String, String)> {
    let state = match lifecycle {
        None => default,
        Some(name) => Lifecycle::parse(name).ok_or_else(|| {
            (
                "lifecycle".to_owned(),
                format!("`{name}` is not created, published, deprecated or retired"),
            )
        })?,
    };
    let sunset_ms = match sunset {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
                (
                    "sunset".to_owned(),
                    format!("`{text}` is not an RFC 3339 date and time: {e}"),
                )
            })?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| ("sunset".to_owned(), "before 1970".to_owned()))?
                .as_millis() as u64;
            Some(ms)
        }
    };
    if sunset_ms.is_some() && state != Lifecycle::Deprecated {
        return Err((
            "sunset".to_owned(),
            format!(
                "only a deprecated API has a sunset (this one is {})",
                state.name()
            ),
        ));
    }
    Ok((state, sunset_ms))
}

/// `{ count = 100, per = "1m" }`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub count: u64,
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "1m")]
    pub per: Duration,
}

/// `[plans.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPlan {
    pub description: Option<String>,
    pub publish: Option<RawRate>,
    pub deliveries: Option<RawRate>,
    pub max_connections: Option<u32>,
    pub max_subscriptions: Option<u32>,
    /// `pause` (default) or `drop`.
    pub on_delivery_limit: Option<String>,
    pub approval_required: bool,
}

/// One permission: `{ topics = "orders.*", publish = true, subscribe = true }`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPermission {
    pub topics: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// `[applications.<id>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApplication {
    pub description: Option<String>,
    pub permissions: Vec<RawPermission>,
    /// SHA-256 (hex) of each API key (`eventgate keys generate` prints a key and its hash).
    pub api_key_hashes: Vec<String>,
    /// API → plan: the application's approved access to each API. `subscriptions` is an older
    /// name of this key, still read.
    #[serde(alias = "subscriptions")]
    pub access: BTreeMap<String, String>,
    pub disabled: bool,
}

/// How JWTs are verified, validated.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: Vec<String>,
    pub audience: Vec<String>,
    pub algorithms: Vec<String>,
    pub secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    pub leeway: Duration,
    pub application_claim: String,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub anonymous: bool,
    pub jwt: Option<JwtSettings>,
    pub oauth2: OAuth2Settings,
}

/// Whether `name` is an identifier of APIs, plans and applications.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".to_owned());
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name: lowercase letters, digits, `-` and `_`, starting with a letter or digit"
        ))
    }
}

/// Checks a topic pattern: a topic name in which `*` stands for any run of characters.
pub fn valid_pattern(pattern: &str) -> Result<(), String> {
    let probe = pattern.replace('*', "x");
    if pattern.is_empty() {
        return Err("must not be empty".to_owned());
    }
    eventgate_actors::broker::validate_topic_name(&probe).map_err(|e| e.to_string())
}

pub fn parse_entrypoints(given: &[String]) -> Result<Vec<Entrypoint>, String> {
    let mut out = Vec::new();
    for name in given {
        let e = Entrypoint::parse(name)
            .ok_or_else(|| format!("`{name}` is not one of websub, websocket, sse, webhook"))?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

pub fn parse_security(given: &[String]) -> Result<Vec<Security>, String> {
    let mut out = Vec::new();
    for name in given {
        let s = Security::parse(name)
            .ok_or_else(|| format!("`{name}` is not one of api_key, jwt, oauth2"))?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

pub fn parse_over_limit(given: Option<&str>) -> Result<OverLimit, String> {
    match given {
        None | Some("pause") => Ok(OverLimit::Pause),
        Some("drop") => Ok(OverLimit::Drop),
        Some(other) => Err(format!("`{other}` is not one of pause, drop")),
    }
}

/// A rate as stored; `per` at least 100 ms and at most a day.
pub fn rate(count: u64, per: Duration) -> Result<RateLimit, String> {
    if per < Duration::from_millis(100) || per > Duration::from_secs(86_400) {
        return Err("`per` must be between 100ms and 24h".to_owned());
    }
    if count == 0 {
        return Err("`count` must be 1 or more".to_owned());
    }
    Ok(RateLimit {
        count,
        window_ms: per.as_millis() as u64,
    })
}

/// Checks an API's channels: names are identifiers, topics gateway topic names.
pub fn check_channels(channels: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    if channels.is_empty() {
        return Err((
            "channels".to_owned(),
            "an API has at least one channel".to_owned(),
        ));
    }
    for (channel, topic) in channels {
        valid_name(channel).map_err(|e| (format!("channels.{channel}"), e))?;
        eventgate_actors::broker::validate_topic_name(topic)
            .map_err(|e| (format!("channels.{channel}"), e.to_string()))?;
    }
    Ok(())
}

/// Checks a hex SHA-256.
pub fn valid_sha256(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err("a SHA-256 is 64 hex digits (`eventgate keys generate` prints one)".to_owned())
    }
}

/// First path segments the gateway's own routes use; no API's base path may start with one.
const RESERVED_SEGMENTS: &[&str] = &[
    ".well-known",
    "admin",
    "apis",
    "asyncapi.json",
    "asyncapi.yaml",
    "healthz",
    "hub",
    "metrics",
    "oauth2",
    "portal",
    "readyz",
    "sse",
    "topics",
    "webhook-receiver",
    "ws",
];

/// Checks the portal's path: like a base path, and not one of the gateway's own routes
/// other than `portal`.
pub fn valid_portal_path(path: &str) -> Result<(), String> {
    match path.strip_prefix("/portal") {
        Some("") => Ok(()),
        Some(rest) if rest.starts_with('/') => valid_base_path(rest),
        _ => valid_base_path(path),
    }
}

/// Checks an API's base path: `/` and one to eight segments of letters, digits, `-`, `_`,
/// `.` and `~`, without a trailing `/`, not starting with a segment the gateway routes itself.
pub fn valid_base_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("a base path starts with `/` (`/shop`)".to_owned());
    };
    if path.len() > 200 {
        return Err("longer than 200 characters".to_owned());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > 8 {
        return Err("at most 8 segments".to_owned());
    }
    for segment in &segments {
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err(
                "empty, `.` and `..` segments (and a trailing `/`) are not allowed".to_owned(),
            );
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(format!(
                "segment `{segment}`: only letters, digits, `-`, `_`, `.` and `~`"
            ));
        }
    }
    if RESERVED_SEGMENTS.contains(&segments[0]) {
        return Err(format!(
            "`/{}` is one of the gateway's own routes",
            segments[0]
        ));
    }
    Ok(())
}

/// Refuses a base path another API already has (`apis`: name and base path of the others).
pub fn base_path_free<'a>(
    name: &str,
    path: Option<&str>,
    apis: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), (String, String)> {
    let Some(path) = path else { return Ok(()) };
    for (other, theirs) in apis {
        if other != name && theirs == Some(path) {
            return Err((
                "base_path".to_owned(),
                format!("`{path}` is API `{other}`'s base path"),
            ));
        }
    }
    Ok(())
}

/// An API from its description (the name already checked). Errors name the field within the
/// description; the configuration and the admin API both build APIs here.
pub fn api_from_raw(
    name: &str,
    raw: &RawApi,
    origin: Origin,
    updated_at_ms: u64,
) -> Result<Api, (String, String)> {
    check_channels(&raw.channels)?;
    if let Some(path) = &raw.base_path {
        valid_base_path(path).map_err(|e| ("base_path".to_owned(), e))?;
    }
    let entrypoints = match &raw.entrypoints {
        None => Entrypoint::ALL.to_vec(),
        Some(given) => parse_entrypoints(given).map_err(|e| ("entrypoints".to_owned(), e))?,
    };
    let security = match &raw.security {
        None => Security::ALL.to_vec(),
        Some(given) => parse_security(given).map_err(|e| ("security".to_owned(), e))?,
    };
    if raw.max_message_bytes == Some(0) {
        return Err((
            "max_message_bytes".to_owned(),
            "must be 1 or more".to_owned(),
        ));
    }
    let default = match origin {
        Origin::Config => Lifecycle::Published,
        Origin::Admin => Lifecycle::Created,
    };
    let (lifecycle, sunset_ms) =
        lifecycle_from_raw(raw.lifecycle.as_deref(), raw.sunset.as_deref(), default)?;
    let channel_specs = schemas_from_raw(&raw.channels, &raw.schemas)?;
    Ok(Api {
        name: name.to_owned(),
        version: if raw.version.is_empty() {
            "1.0.0".to_owned()
        } else {
            raw.version.clone()
        },
        description: raw.description.clone(),
        base_path: raw.base_path.clone(),
        channels: raw.channels.clone(),
        entrypoints,
        security,
        max_message_bytes: raw.max_message_bytes,
        origin,
        updated_at_ms,
        lifecycle,
        lifecycle_since_ms: updated_at_ms,
        sunset_ms,
        channel_specs,
        validate_messages: raw.validate_messages,
        verify_ingest: raw
            .verify_ingest
            .as_ref()
            .map(ingest_from_raw)
            .transpose()?,
        tags: check_tags(&raw.tags).map_err(|e| ("tags".to_owned(), e))?,
    })
}

/// Checks a payload schema: a JSON Schema (object or boolean) that compiles, with no `$ref`
/// outside itself. Errors name what is wrong.
pub fn check_schema(schema: &serde_json::Value) -> Result<(), String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err("a schema is a JSON object (or true/false)".to_owned());
    }
    if let Some(pointer) = external_ref(schema, "") {
        return Err(format!(
            "`$ref` at {pointer} points outside the schema; only references within it (`#/…`) are kept"
        ));
    }
    crate::schema::compile(schema).map(|_| ())
}

/// The pointer of the first `$ref` that does not start with `#`, if any.
fn external_ref(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                if !r.starts_with('#') {
                    return Some(format!("{at}/$ref"));
                }
            }
            map.iter().find_map(|(k, v)| {
                external_ref(
                    v,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| external_ref(v, &format!("{at}/{i}"))),
        _ => None,
    }
}

/// The channels' specifications from `schemas` (channel → payload schema).
pub fn schemas_from_raw(
    channels: &BTreeMap<String, String>,
    schemas: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, ChannelSpec>, (String, String)> {
    let mut specs = BTreeMap::new();
    for (channel, schema) in schemas {
        let field = format!("schemas.{channel}");
        if !channels.contains_key(channel) {
            return Err((field, format!("`{channel}` is not a channel of the API")));
        }
        check_schema(schema).map_err(|e| (field.clone(), e))?;
        specs.insert(
            channel.clone(),
            ChannelSpec {
                messages: vec![MessageSpec {
                    name: channel.clone(),
                    content_type: Some("application/json".to_owned()),
                    payload: Some(schema.to_string()),
                    ..MessageSpec::default()
                }],
                ..ChannelSpec::default()
            },
        );
    }
    Ok(specs)
}

/// A plan from its description (the name already checked); errors name the field.
pub fn plan_from_raw(
    name: &str,
    raw: &RawPlan,
    origin: Origin,
    updated_at_ms: u64,
) -> Result<Plan, (String, String)> {
    let to_rate = |field: &str, r: &Option<RawRate>| {
        r.as_ref()
            .map(|r| rate(r.count, r.per))
            .transpose()
            .map_err(|e| (field.to_owned(), e))
    };
    Ok(Plan {
        name: name.to_owned(),
        description: raw.description.clone(),
        publish: to_rate("publish", &raw.publish)?,
        deliveries: to_rate("deliveries", &raw.deliveries)?,
        max_connections: raw.max_connections,
        max_subscriptions: raw.max_subscriptions,
        on_delivery_limit: parse_over_limit(raw.on_delivery_limit.as_deref())
            .map_err(|e| ("on_delivery_limit".to_owned(), e))?,
        approval_required: raw.approval_required,
        origin,
        updated_at_ms,
    })
}

/// An application's permissions; errors name the entry (`permissions[i].topics`).
pub fn permissions_from_raw(raw: &[RawPermission]) -> Result<Vec<Permission>, (String, String)> {
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            valid_pattern(&p.topics).map_err(|e| (format!("permissions[{i}].topics"), e))?;
            Ok(Permission {
                pattern: p.topics.clone(),
                publish: p.publish,
                subscribe: p.subscribe,
            })
        })
        .collect()
}

/// Validates the API-management tables and builds what they declare.
pub fn build(
    apis: &BTreeMap<String, RawApi>,
    plans: &BTreeMap<String, RawPlan>,
    applications: &BTreeMap<String, RawApplication>,
    auth: &RawAuth,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(Declared, AuthSettings), ConfigError> {
    let mut declared = Declared::default();
    for (name, raw) in apis {
        let key = format!("apis.{name}");
        valid_name(name).map_err(|e| invalid(&key, e))?;
        let api = api_from_raw(name, raw, Origin::Config, 0)
            .map_err(|(field, e)| invalid(&format!("{key}.{field}"), e))?;
        if api.security.contains(&Security::Jwt) && auth.jwt.is_none() && raw.security.is_some() {
            return Err(invalid(
                &format!("{key}.security"),
                "`jwt` needs an [auth.jwt] table".to_owned(),
            ));
        }
        base_path_free(
            name,
            api.base_path.as_deref(),
            declared
                .apis
                .iter()
                .map(|a| (a.name.as_str(), a.base_path.as_deref())),
        )
        .map_err(|(field, e)| invalid(&format!("{key}.{field}"), e))?;
        declared.apis.push(api);
    }
    for (name, raw) in plans {
        let key = format!("plans.{name}");
        valid_name(name).map_err(|e| invalid(&key, e))?;
        let plan = plan_from_raw(name, raw, Origin::Config, 0)
            .map_err(|(field, e)| invalid(&format!("{key}.{field}"), e))?;
        declared.plans.push(plan);
    }
    for (id, raw) in applications {
        let key = format!("applications.{id}");
        valid_name(id).map_err(|e| invalid(&key, e))?;
        let permissions = permissions_from_raw(&raw.permissions)
            .map_err(|(field, e)| invalid(&format!("{key}.{field}"), e))?;
        for (i, hash) in raw.api_key_hashes.iter().enumerate() {
            let sha256 = valid_sha256(hash)
                .map_err(|e| invalid(&format!("{key}.api_key_hashes[{i}]"), e))?;
            declared.keys.push(ApiKey {
                id: sha256[..16].to_owned(),
                app: id.clone(),
                sha256,
                created_at_ms: 0,
                expires_at_ms: None,
                revoked_at_ms: None,
                origin: Origin::Config,
            });
        }
        for (api, plan) in &raw.access {
            let field = format!("{key}.access.{api}");
            if !apis.contains_key(api) {
                return Err(invalid(&field, format!("no API `{api}` is declared")));
            }
            if !plans.contains_key(plan) {
                return Err(invalid(&field, format!("no plan `{plan}` is declared")));
            }
            declared.access.push(Access {
                app: id.clone(),
                api: api.clone(),
                plan: plan.clone(),
                state: AccessState::Approved,
                origin: Origin::Config,
                updated_at_ms: 0,
            });
        }
        declared.applications.push(Application {
            id: id.clone(),
            name: None,
            description: raw.description.clone(),
            permissions,
            disabled: raw.disabled,
            origin: Origin::Config,
            updated_at_ms: 0,
            owner: None,
        });
    }
    let jwt = auth
        .jwt
        .as_ref()
        .map(|j| build_jwt(j, invalid))
        .transpose()?;
    Ok((
        declared,
        AuthSettings {
            anonymous: auth.anonymous,
            jwt,
            oauth2: build_oauth2(&auth.oauth2, invalid)?,
        },
    ))
}

fn build_jwt(
    j: &RawJwt,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<JwtSettings, ConfigError> {
    if j.issuer.is_empty() {
        return Err(invalid(
            "auth.jwt.issuer",
            "name at least one issuer".to_owned(),
        ));
    }
    if j.audience.is_empty() {
        return Err(invalid(
            "auth.jwt.audience",
            "name at least one audience".to_owned(),
        ));
    }
    let algorithms = if j.algorithms.is_empty() {
        vec!["RS256".to_owned(), "ES256".to_owned()]
    } else {
        j.algorithms.clone()
    };
    for a in &algorithms {
        if !matches!(a.as_str(), "HS256" | "RS256" | "ES256") {
            return Err(invalid(
                "auth.jwt.algorithms",
                format!("`{a}` is not one of HS256, RS256, ES256"),
            ));
        }
    }
    let sources = [
        j.secret.is_some(),
        j.public_key_file.is_some(),
        j.jwks_file.is_some(),
        j.jwks_url.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err(invalid(
            "auth.jwt",
            "give exactly one of secret, public_key_file, jwks_file, jwks_url".to_owned(),
        ));
    }
    if j.secret.is_some() && algorithms.iter().any(|a| a != "HS256") {
        return Err(invalid(
            "auth.jwt.algorithms",
            "a shared `secret` verifies HS256 only: set algorithms = [\"HS256\"]".to_owned(),
        ));
    }
    if j.secret.is_none() && algorithms.iter().any(|a| a == "HS256") {
        return Err(invalid(
            "auth.jwt.algorithms",
            "HS256 needs a shared `secret`".to_owned(),
        ));
    }
    if let Some(secret) = &j.secret {
        if secret.len() < 32 {
            return Err(invalid(
                "auth.jwt.secret",
                "an HS256 secret has at least 32 bytes".to_owned(),
            ));
        }
    }
    if let Some(url) = &j.jwks_url {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(invalid(
                "auth.jwt.jwks_url",
                "must be an http or https URL".to_owned(),
            ));
        }
    }
    let jwks_refresh = j.jwks_refresh.unwrap_or(Duration::from_secs(300));
    if jwks_refresh < Duration::from_secs(1) {
        return Err(invalid(
            "auth.jwt.jwks_refresh",
            "must be at least 1s".to_owned(),
        ));
    }
    Ok(JwtSettings {
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        algorithms,
        secret: j.secret.clone(),
        public_key_file: j.public_key_file.clone(),
        jwks_file: j.jwks_file.clone(),
        jwks_url: j.jwks_url.clone(),
        jwks_refresh,
        leeway: j.leeway.unwrap_or(Duration::from_secs(30)),
        application_claim: j
            .application_claim
            .clone()
            .unwrap_or_else(|| "sub".to_owned()),
    })
}
