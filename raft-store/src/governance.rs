//! API management in the replicated state: APIs, plans, applications, their API keys and
//! access to APIs, and the quota they consume.
//!
//! Everything here is replicated so that every node admits the same clients: a revoked key is
//! refused by every node as soon as it has applied the revocation. Rate-limit quota is
//! *reserved* through the log before a node spends it ([`Command::ReserveQuota`]), so a node
//! that dies takes nothing with it: what it reserved stays consumed for the rest of the window,
//! on every node.
//!
//! [`Command::ReserveQuota`]: crate::Command::ReserveQuota

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::NodeId;

/// Where an entity was declared. Entities of the configuration file are replaced as a whole
/// whenever a node starts with that file; the admin API's are left alone by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Config,
    Admin,
}

/// A way into the gateway that an API may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entrypoint {
    /// WebSub subscriptions at `/hub`.
    Websub,
    /// `GET /ws/{topic}`.
    Websocket,
    /// `GET /sse/{topic}`.
    Sse,
    /// `POST /webhook-receiver?topic=`.
    Webhook,
}

impl Entrypoint {
    pub const ALL: [Entrypoint; 4] = [
        Entrypoint::Websub,
        Entrypoint::Websocket,
        Entrypoint::Sse,
        Entrypoint::Webhook,
    ];

    /// The name used in configuration and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Entrypoint::Websub => "websub",
            Entrypoint::Websocket => "websocket",
            Entrypoint::Sse => "sse",
            Entrypoint::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == text)
    }
}

/// How a client proves who it is to an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Security {
    ApiKey,
    /// A JWT from the issuer `[auth.jwt]` names.
    Jwt,
    /// An access token this gateway issued at `/oauth2/token` (client credentials).
    OAuth2,
}

impl Security {
    pub const ALL: [Security; 3] = [Security::ApiKey, Security::Jwt, Security::OAuth2];

    pub fn name(self) -> &'static str {
        match self {
            Security::ApiKey => "api_key",
            Security::Jwt => "jwt",
            Security::OAuth2 => "oauth2",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// What an API's documentation says about one of its channels (from an AsyncAPI import or the
/// admin API's `schemas`): kept with the API, exported again in its AsyncAPI document, and the
/// payload schemas checked on publish when the API validates messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// The channel's address in the document it came from (may hold `{parameters}`).
    pub address: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    /// The messages the channel carries; a publish is valid when it matches one of them.
    pub messages: Vec<MessageSpec>,
}

/// One kind of message of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSpec {
    /// Identifier within the channel.
    pub name: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub content_type: Option<String>,
    /// The payload's JSON Schema (AsyncAPI schema object, draft 7 by default), as JSON text
    /// with every `$ref` resolved. JSON text rather than a value: the log's encoding is not
    /// self-describing.
    pub payload: Option<String>,
    /// Examples of the payload, as JSON text.
    pub examples: Vec<String>,
}

/// A set of broker topics exposed as one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Api {
    /// Identifier: lowercase letters, digits, `-` and `_`.
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// Words the catalog shows and searches (AsyncAPI `info.tags`).
    pub tags: Vec<String>,
    /// Where the API's own routes live (`/shop` → `/shop/ws/{channel}`, `/shop/sse/{channel}`,
    /// `/shop/webhook-receiver?topic={channel}`, WebSub topic URLs `/shop/topics/{channel}`),
    /// addressed by channel name. None: only the gateway's routes, by topic name.
    pub base_path: Option<String>,
    /// Channel name → gateway topic.
    pub channels: BTreeMap<String, String>,
    pub entrypoints: Vec<Entrypoint>,
    /// Accepted credentials; empty: the API is open to anonymous clients (keyless).
    pub security: Vec<Security>,
    /// Largest message published through this API, in bytes.
    pub max_message_bytes: Option<u64>,
    pub origin: Origin,
    pub updated_at_ms: u64,
    /// Where the API stands in its life: only published and deprecated APIs admit clients.
    pub lifecycle: Lifecycle,
    /// When it entered its current state (unix ms): the `Deprecation` date of a deprecated API.
    pub lifecycle_since_ms: u64,
    /// When a deprecated API is to be retired (unix ms), announced in `Sunset` headers.
    pub sunset_ms: Option<u64>,
    /// Channel name → what its documentation says (schemas, examples, content types).
    pub channel_specs: BTreeMap<String, ChannelSpec>,
    /// Whether messages published through this API are checked against their channel's
    /// payload schemas (invalid: refused, nothing stored).
    pub validate_messages: bool,
    /// The signature the provider must put on what it sends to the webhook receiver.
    pub verify_ingest: Option<IngestSignature>,
}

/// How a provider signs its publishes to an API's webhook receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestScheme {
    /// GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Github,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (v1).
    StandardWebhooks,
    /// A header of the API's choosing holding the HMAC-SHA256 of the body, hex or base64
    /// (optionally after `sha256=`).
    Hmac,
}

impl IngestScheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Hmac => "hmac",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "github" => Some(Self::Github),
            "standard-webhooks" => Some(Self::StandardWebhooks),
            "hmac" => Some(Self::Hmac),
            _ => None,
        }
    }
}

/// An API's inbound signature requirement. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestSignature {
    pub scheme: IngestScheme,
    /// The secret shared with the provider (`whsec_…` for Standard Webhooks).
    pub secret: String,
    /// The header carrying the signature (the `hmac` scheme; lowercase).
    pub header: String,
    /// How far a signed timestamp may be from now (Standard Webhooks).
    pub tolerance_ms: u64,
}

impl std::fmt::Debug for IngestSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSignature")
            .field("scheme", &self.scheme)
            .field("secret", &"<redacted>")
            .field("header", &self.header)
            .field("tolerance_ms", &self.tolerance_ms)
            .finish()
    }
}

/// The states of an API, in the order an API goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Being prepared: in no catalog, admits nobody.
    Created,
    /// Offered: in the catalogs, admits clients.
    Published,
    /// Still offered, with a notice (AsyncAPI, `Deprecation`/`Sunset` headers).
    Deprecated,
    /// Withdrawn for good: its streams are closed, its WebSub subscriptions ended.
    Retired,
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 4] = [
        Lifecycle::Created,
        Lifecycle::Published,
        Lifecycle::Deprecated,
        Lifecycle::Retired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Created => "created",
            Lifecycle::Published => "published",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Retired => "retired",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether the API admits clients and appears in catalogs.
    pub fn admits(self) -> bool {
        matches!(self, Lifecycle::Published | Lifecycle::Deprecated)
    }

    /// Whether an API may go from `self` to `to` (staying is always allowed). Back from
    /// published to created is checked for subscribers by the caller.
    pub fn may_become(self, to: Lifecycle) -> bool {
        use Lifecycle::*;
        self == to
            || matches!(
                (self, to),
                (Created, Published)
                    | (Published, Created | Deprecated | Retired)
                    | (Deprecated, Published | Retired)
            )
    }
}

/// A budget: at most `count` per fixed window of `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub count: u64,
    pub window_ms: u64,
}

/// What a stream does when its deliveries budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverLimit {
    /// Hold deliveries until the next window (the client falls behind; the ring may drop).
    Pause,
    /// Skip messages until the next window; the client sees a gap marker with the count.
    Drop,
}

/// Limits an application subscribes under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    /// Messages published (webhook, WebSocket).
    pub publish: Option<RateLimit>,
    /// Messages delivered to streams.
    pub deliveries: Option<RateLimit>,
    /// Concurrent WebSocket and SSE connections, across the cluster.
    pub max_connections: Option<u32>,
    /// Live WebSub subscriptions.
    pub max_subscriptions: Option<u32>,
    pub on_delivery_limit: OverLimit,
    /// Subscriptions to APIs under this plan wait for an administrator's approval.
    pub approval_required: bool,
    pub origin: Origin,
    pub updated_at_ms: u64,
}

/// Publish and subscribe rights on topics whose names match `pattern` (`*` matches any run of
/// characters, so `orders.*` covers `orders.eu`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub pattern: String,
    pub publish: bool,
    pub subscribe: bool,
}

/// A client of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Identifier; also what a JWT's application claim names.
    pub id: String,
    /// What people call it (the portal's "rename"): the id stays, as keys, client secrets,
    /// tokens and subscriptions name the application by it.
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Vec<Permission>,
    pub disabled: bool,
    pub origin: Origin,
    pub updated_at_ms: u64,
    /// The portal account that owns it (none: made by an administrator or the configuration).
    pub owner: Option<String>,
}

/// An API key, stored as the SHA-256 of the key; the key itself is shown once at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The first 16 hex digits of `sha256`: what operators and logs name.
    pub id: String,
    pub app: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub origin: Origin,
}

/// An application's OAuth2 client secret (the client id is the application's id), stored as
/// the SHA-256 of the secret; the secret itself is shown once. A rotated-out secret keeps
/// working until `expires_at_ms` (the overlap window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecret {
    /// The first 16 hex digits of `sha256`.
    pub id: String,
    pub app: String,
    /// Lowercase hex SHA-256 of the whole secret.
    pub sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl ClientSecret {
    /// Whether it authenticates a client at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|t| t > now_ms)
    }
}

/// A key the cluster signs its OAuth2 access tokens with (ES256, P-256). The private key is
/// kept sealed (AES-256-GCM under the cluster's secret key, when one is configured); the
/// public key is published at `/.well-known/jwks.json` as long as tokens it signed may live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// `kid` of the JWK and of every token header it signs.
    pub kid: String,
    /// The PKCS#8 document of the private key, sealed (or base64 when no cluster key is set).
    pub private_pkcs8: String,
    /// The public point's coordinates, base64url without padding (JWK `x`, `y`).
    pub x: String,
    pub y: String,
    pub created_at_ms: u64,
    /// When a newer key took over signing; it still verifies until `verify_until_ms`.
    pub retired_at_ms: Option<u64>,
    pub verify_until_ms: Option<u64>,
}

/// What a portal account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountRole {
    /// Owns applications, subscribes them to APIs.
    Developer,
    /// Also approves requests and accounts, changes APIs' lifecycle.
    Admin,
}

/// Where a portal account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountState {
    /// Signed up, waiting for an administrator's approval: cannot sign in.
    Pending,
    Active,
    /// Cannot sign in; its sessions are ended.
    Disabled,
}

/// A developer's account on the portal. The password is kept as an argon2 hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// Lowercase; unique among accounts.
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: AccountRole,
    pub state: AccountState,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// An invitation to open a portal account: a one-time link for `email`, stored as the SHA-256
/// of its token (the id is its first 16 hex digits). Accepting it opens an active account with
/// `role`, even where sign-up is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub sha256: String,
    /// Lowercase.
    pub email: String,
    pub role: AccountRole,
    /// Who invited: an account id, or none for the admin API.
    pub invited_by: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A signed-in portal session, valid on every node. Stored as the SHA-256 of its cookie value
/// (the id is its first 16 hex digits), with the session's CSRF token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSession {
    pub id: String,
    pub sha256: String,
    pub account: String,
    /// Every state-changing form of the session carries it.
    pub csrf: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// State of an application's subscription to an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessState {
    Pending,
    Approved,
    Rejected,
}

/// An application's subscription to an API, under a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub app: String,
    pub api: String,
    pub plan: String,
    pub state: AccessState,
    pub origin: Origin,
    pub updated_at_ms: u64,
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKind {
    Publish,
    Deliveries,
}

/// Quota consumed (reserved) in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub window_start_ms: u64,
    pub used: u64,
}

/// (application, API, kind).
pub type UsageKey = (String, String, QuotaKind);

/// Everything the configuration file declares, applied as one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    pub apis: Vec<Api>,
    pub plans: Vec<Plan>,
    pub applications: Vec<Application>,
    pub keys: Vec<ApiKey>,
    pub access: Vec<Access>,
}

/// The API-management part of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    pub apis: BTreeMap<String, Api>,
    pub plans: BTreeMap<String, Plan>,
    pub applications: BTreeMap<String, Application>,
    /// Key id → key.
    pub keys: BTreeMap<String, ApiKey>,
    /// (application, API) → subscription.
    pub access: BTreeMap<(String, String), Access>,
    pub usage: BTreeMap<UsageKey, Usage>,
    /// (application, API) → node → live stream connections it reported.
    pub connections: BTreeMap<(String, String), BTreeMap<NodeId, u32>>,
    /// WebSub subscription id → (application, API) it was made by; the API is empty when it
    /// was made outside any API's plan.
    pub websub_applications: BTreeMap<String, (String, String)>,
    /// WebSub subscription id → the API key it was made with (none for a JWT): the
    /// subscription lives no longer than the key.
    pub websub_keys: BTreeMap<String, String>,
    /// WebSub subscription id → a slot of its (application, API)'s `max_subscriptions` held
    /// while its verification of intent runs.
    pub websub_reservations: BTreeMap<String, WebsubReservation>,
    /// Client secret id → secret (OAuth2 client credentials).
    pub client_secrets: BTreeMap<String, ClientSecret>,
    /// `kid` → the cluster's token signing keys: the current one (not retired) and those
    /// still verifying tokens they signed.
    pub signing_keys: BTreeMap<String, SigningKey>,
    /// Account id → portal account.
    pub accounts: BTreeMap<String, Account>,
    /// Session id → signed-in portal session.
    pub sessions: BTreeMap<String, PortalSession>,
    /// Invitation id → an invitation to open a portal account.
    pub invitations: BTreeMap<String, Invitation>,
    /// Idempotency id → a keyed publish to the webhook receiver, in progress or answered.
    pub idempotency: BTreeMap<String, IdempotentPublish>,
    /// Bumped by every change of who may do what (not by quota or connection counts), so that
    /// readers can notice cheaply. Not persisted: it only orders changes within one process.
    #[serde(skip)]
    pub version: u64,
}

/// An entity of [`Governance`] touched by a command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GovTouched {
    Api(String),
    Plan(String),
    Application(String),
    Key(String),
    Access(String, String),
    Usage(UsageKey),
    Connections(String, String),
    WebsubApplication(String),
    WebsubKey(String),
    WebsubReservation(String),
    ClientSecret(String),
    SigningKey(String),
    Account(String),
    Session(String),
    Invitation(String),
    Idempotency(String),
}

/// A publish made with an `Idempotency-Key`: reserved by the node taking it until it is
/// answered; then its answer, given again to a retry with the same key until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentPublish {
    /// SHA-256 (hex) of the topic, the publishing application and the key.
    pub id: String,
    /// SHA-256 (hex) of the body: the same key with another body is refused, not replayed.
    pub fingerprint: String,
    pub node: NodeId,
    pub state: IdempotencyState,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotencyState {
    /// Being published by `node`; another node may take the key over after `until_ms` (the
    /// node died before answering).
    Pending { until_ms: u64 },
    /// Answered: the status and JSON body given again to every retry.
    Done { status: u16, body: String },
}

/// A slot of a plan's `max_subscriptions`, taken when `/hub` accepts a subscribe and held
/// until the subscription is activated, its verification fails, or `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebsubReservation {
    pub app: String,
    pub api: String,
    pub until_ms: u64,
}

fn refused(reason: impl Into<String>) -> Response {
    Response::Refused {
        reason: reason.into(),
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl Governance {
    /// The APIs that expose `topic`, with the channel name.
    pub fn apis_of_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = (&'a Api, &'a str)> + 'a {
        self.apis.values().filter_map(move |api| {
            api.channels
                .iter()
                .find(|(_, t)| t.as_str() == topic)
                .map(|(channel, _)| (api, channel.as_str()))
        })
    }

    /// The API whose base path is the longest leading part of `path` (whole segments), with
    /// the rest of the path (`/ws/orders`, empty when `path` is the base path itself).
    pub fn api_of_path<'a>(&'a self, path: &'a str) -> Option<(&'a Api, &'a str)> {
        self.apis
            .values()
            .filter_map(|api| {
                let base = api.base_path.as_deref()?;
                let rest = path.strip_prefix(base)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((api, rest, base.len()))
            })
            .max_by_key(|(_, _, len)| *len)
            .map(|(api, rest, _)| (api, rest))
    }

    /// The key whose SHA-256 (lowercase hex) is `sha256`, if any (revoked or not).
    pub fn key_by_hash(&self, sha256: &str) -> Option<&ApiKey> {
        let key = self.keys.get(sha256.get(..16)?)?;
        (key.sha256 == sha256).then_some(key)
    }

    /// Live connections of `(app, api)` reported by every node but `except`, counting only
    /// nodes for which `alive` holds.
    pub fn connections_elsewhere(
        &self,
        app: &str,
        api: &str,
        except: NodeId,
        alive: impl Fn(NodeId) -> bool,
    ) -> u64 {
        self.connections
            .get(&(app.to_owned(), api.to_owned()))
            .map_or(0, |per_node| {
                per_node
                    .iter()
                    .filter(|(n, _)| **n != except && alive(**n))
                    .map(|(_, c)| u64::from(*c))
                    .sum()
            })
    }

    /// Live WebSub subscriptions made by `(app, api)`.
    /// Takes a slot of `(app, api)`'s `max` WebSub subscriptions for `subscription`, counting
    /// the active ones and the reservations still running at `now_ms`; a subscription that
    /// already counts there (a renewal) needs none. Expired reservations of the pair are
    /// dropped on the way.
    pub(crate) fn reserve_websub(
        &mut self,
        subscription: &str,
        (app, api): (&str, &str),
        max: u32,
        now_ms: u64,
        until_ms: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let same = |a: &str, p: &str| a == app && p == api;
        if self
            .websub_applications
            .get(subscription)
            .is_some_and(|(a, p)| same(a, p))
        {
            return Response::Applied;
        }
        let expired: Vec<String> = self
            .websub_reservations
            .iter()
            .filter(|(_, r)| same(&r.app, &r.api) && r.until_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.websub_reservations.remove(&id);
            t.push(GovTouched::WebsubReservation(id));
        }
        let held = self.websub_count(app, api)
            + self
                .websub_reservations
                .iter()
                .filter(|(id, r)| id.as_str() != subscription && same(&r.app, &r.api))
                .count();
        if held >= max as usize {
            return refused(format!(
                "application `{app}` holds its plan's {max} WebSub subscriptions on API `{api}`"
            ));
        }
        self.websub_reservations.insert(
            subscription.to_owned(),
            WebsubReservation {
                app: app.to_owned(),
                api: api.to_owned(),
                until_ms,
            },
        );
        t.push(GovTouched::WebsubReservation(subscription.to_owned()));
        Response::Applied
    }

    /// Gives back the slot `subscription` held, if any.
    pub(crate) fn release_websub(&mut self, subscription: &str, t: &mut Vec<GovTouched>) {
        if self.websub_reservations.remove(subscription).is_some() {
            t.push(GovTouched::WebsubReservation(subscription.to_owned()));
        }
    }

    pub fn websub_count(&self, app: &str, api: &str) -> usize {
        self.websub_applications
            .values()
            .filter(|(a, p)| a == app && p == api)
            .count()
    }

    pub(crate) fn put_api(&mut self, api: &Api, t: &mut Vec<GovTouched>) -> Response {
        t.push(GovTouched::Api(api.name.clone()));
        self.apis.insert(api.name.clone(), api.clone());
        self.version += 1;
        Response::Applied
    }

    /// Moves API `name` to `to` (see [`Lifecycle::may_become`]); back to created only while no
    /// application has access to it and no WebSub subscription was made through it.
    /// `subscribed_paths`: the paths of the topic URLs WebSub subscribers named.
    pub(crate) fn set_lifecycle<'a>(
        &mut self,
        name: &str,
        to: Lifecycle,
        sunset_ms: Option<u64>,
        at_ms: u64,
        subscribed_paths: impl IntoIterator<Item = &'a str>,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let under_base = self
            .apis
            .get(name)
            .and_then(|a| a.base_path.clone())
            .map(|base| format!("{base}/topics/"));
        let in_use = self.access.keys().any(|(_, api)| api == name)
            || self
                .websub_applications
                .values()
                .any(|(_, api)| api == name)
            || under_base
                .is_some_and(|prefix| subscribed_paths.into_iter().any(|p| p.starts_with(&prefix)));
        let Some(api) = self.apis.get_mut(name) else {
            return Response::NotFound;
        };
        let from = api.lifecycle;
        if !from.may_become(to) {
            return Response::Refused {
                reason: format!(
                    "API `{name}` is {}; it cannot become {}",
                    from.name(),
                    to.name()
                ),
            };
        }
        if from == Lifecycle::Published && to == Lifecycle::Created && in_use {
            return Response::Refused {
                reason: format!(
                    "API `{name}` has subscribers (applications' access or WebSub subscriptions); deprecate or retire it instead"
                ),
            };
        }
        if from != to {
            api.lifecycle_since_ms = at_ms;
        }
        api.lifecycle = to;
        api.sunset_ms = sunset_ms;
        api.updated_at_ms = at_ms;
        t.push(GovTouched::Api(name.to_owned()));
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn delete_api(&mut self, name: &str, t: &mut Vec<GovTouched>) -> Response {
        if self.apis.remove(name).is_none() {
            return Response::NotFound;
        }
        t.push(GovTouched::Api(name.to_owned()));
        self.access.retain(|(app, api), _| {
            let keep = api != name;
            if !keep {
                t.push(GovTouched::Access(app.clone(), api.clone()));
            }
            keep
        });
        self.usage.retain(|key, _| {
            let keep = key.1 != name;
            if !keep {
                t.push(GovTouched::Usage(key.clone()));
            }
            keep
        });
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn put_plan(&mut self, plan: &Plan, t: &mut Vec<GovTouched>) -> Response {
        t.push(GovTouched::Plan(plan.name.clone()));
        self.plans.insert(plan.name.clone(), plan.clone());
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn delete_plan(&mut self, name: &str, t: &mut Vec<GovTouched>) -> Response {
        if !self.plans.contains_key(name) {
            return Response::NotFound;
        }
        if let Some(a) = self.access.values().find(|a| a.plan == name) {
            return refused(format!(
                "plan `{name}` is in use by application `{}` on API `{}`",
                a.app, a.api
            ));
        }
        self.plans.remove(name);
        t.push(GovTouched::Plan(name.to_owned()));
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn put_application(
        &mut self,
        app: &Application,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        t.push(GovTouched::Application(app.id.clone()));
        self.applications.insert(app.id.clone(), app.clone());
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn delete_application(&mut self, id: &str, t: &mut Vec<GovTouched>) -> Response {
        if self.applications.remove(id).is_none() {
            return Response::NotFound;
        }
        t.push(GovTouched::Application(id.to_owned()));
        self.keys.retain(|kid, key| {
            let keep = key.app != id;
            if !keep {
                t.push(GovTouched::Key(kid.clone()));
            }
            keep
        });
        self.access.retain(|(app, api), _| {
            let keep = app != id;
            if !keep {
                t.push(GovTouched::Access(app.clone(), api.clone()));
            }
            keep
        });
        self.usage.retain(|key, _| {
            let keep = key.0 != id;
            if !keep {
                t.push(GovTouched::Usage(key.clone()));
            }
            keep
        });
        self.client_secrets.retain(|sid, secret| {
            let keep = secret.app != id;
            if !keep {
                t.push(GovTouched::ClientSecret(sid.clone()));
            }
            keep
        });
        self.version += 1;
        Response::Applied
    }

    /// The client secret whose SHA-256 (lowercase hex) is `sha256`, if any.
    pub fn client_secret_by_hash(&self, sha256: &str) -> Option<&ClientSecret> {
        let secret = self.client_secrets.get(sha256.get(..16)?)?;
        (secret.sha256 == sha256).then_some(secret)
    }

    /// Adds an application's client secret; the application's other usable secrets stop
    /// working at `others_expire_at_ms` (the rotation's overlap), or keep working when `None`.
    pub(crate) fn add_client_secret(
        &mut self,
        secret: &ClientSecret,
        others_expire_at_ms: Option<u64>,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        if !self.applications.contains_key(&secret.app) {
            return Response::NotFound;
        }
        if secret.sha256.len() != 64 || secret.id != secret.sha256[..16] {
            return refused("a secret's id is the first 16 hex digits of its 64-digit SHA-256");
        }
        if self.client_secrets.contains_key(&secret.id) {
            return refused(format!("client secret `{}` exists", secret.id));
        }
        if let Some(at) = others_expire_at_ms {
            for (id, other) in self.client_secrets.iter_mut() {
                if other.app == secret.app && other.revoked_at_ms.is_none() {
                    let until = other.expires_at_ms.map_or(at, |e| e.min(at));
                    if other.expires_at_ms != Some(until) {
                        other.expires_at_ms = Some(until);
                        t.push(GovTouched::ClientSecret(id.clone()));
                    }
                }
            }
        }
        t.push(GovTouched::ClientSecret(secret.id.clone()));
        self.client_secrets
            .insert(secret.id.clone(), secret.clone());
        self.version += 1;
        Response::Applied
    }

    /// Revokes a client secret: it authenticates nobody any more, and the access tokens issued
    /// on it are refused on every node.
    pub(crate) fn revoke_client_secret(
        &mut self,
        id: &str,
        at_ms: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        match self.client_secrets.get_mut(id) {
            None => Response::NotFound,
            Some(secret) => {
                if secret.revoked_at_ms.is_none() {
                    secret.revoked_at_ms = Some(at_ms);
                    t.push(GovTouched::ClientSecret(id.to_owned()));
                    self.version += 1;
                }
                Response::Applied
            }
        }
    }

    /// The account whose email is `email` (lowercase), if any.
    pub fn account_by_email(&self, email: &str) -> Option<&Account> {
        self.accounts.values().find(|a| a.email == email)
    }

    /// The session whose SHA-256 (lowercase hex) is `sha256`, if any (expired or not).
    pub fn session_by_hash(&self, sha256: &str) -> Option<&PortalSession> {
        let session = self.sessions.get(sha256.get(..16)?)?;
        (session.sha256 == sha256).then_some(session)
    }

    /// Creates or replaces an account (its email unique); an account that is not active loses
    /// its sessions.
    pub(crate) fn put_account(&mut self, account: &Account, t: &mut Vec<GovTouched>) -> Response {
        if self
            .accounts
            .values()
            .any(|a| a.email == account.email && a.id != account.id)
        {
            return refused(format!("an account with email `{}` exists", account.email));
        }
        if account.state != AccountState::Active {
            self.sessions.retain(|id, s| {
                let keep = s.account != account.id;
                if !keep {
                    t.push(GovTouched::Session(id.clone()));
                }
                keep
            });
        }
        t.push(GovTouched::Account(account.id.clone()));
        self.accounts.insert(account.id.clone(), account.clone());
        self.version += 1;
        Response::Applied
    }

    /// Opens a session of an active account; sessions expired at `session.created_at_ms` are
    /// dropped on the way.
    pub(crate) fn open_session(
        &mut self,
        session: &PortalSession,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        match self.accounts.get(&session.account) {
            Some(a) if a.state == AccountState::Active => {}
            Some(_) => return refused("the account is not active"),
            None => return Response::NotFound,
        }
        if session.sha256.len() != 64 || session.id != session.sha256[..16] {
            return refused("a session's id is the first 16 hex digits of its 64-digit SHA-256");
        }
        let now = session.created_at_ms;
        self.sessions.retain(|id, s| {
            let keep = s.expires_at_ms > now;
            if !keep {
                t.push(GovTouched::Session(id.clone()));
            }
            keep
        });
        t.push(GovTouched::Session(session.id.clone()));
        self.sessions.insert(session.id.clone(), session.clone());
        Response::Applied
    }

    /// Ends a session (signing out).
    pub(crate) fn close_session(&mut self, id: &str, t: &mut Vec<GovTouched>) -> Response {
        if self.sessions.remove(id).is_some() {
            t.push(GovTouched::Session(id.to_owned()));
        }
        Response::Applied
    }

    /// The invitation whose token's SHA-256 (lowercase hex) is `sha256`, if any.
    pub fn invitation_by_hash(&self, sha256: &str) -> Option<&Invitation> {
        let invitation = self.invitations.get(sha256.get(..16)?)?;
        (invitation.sha256 == sha256).then_some(invitation)
    }

    fn drop_expired_invitations(&mut self, now_ms: u64, t: &mut Vec<GovTouched>) {
        self.invitations.retain(|id, i| {
            let keep = i.expires_at_ms > now_ms;
            if !keep {
                t.push(GovTouched::Invitation(id.clone()));
            }
            keep
        });
    }

    pub(crate) fn put_invitation(
        &mut self,
        invitation: &Invitation,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        if invitation.sha256.len() != 64 || invitation.id != invitation.sha256[..16] {
            return refused(
                "an invitation's id is the first 16 hex digits of its 64-digit SHA-256",
            );
        }
        if self.account_by_email(&invitation.email).is_some() {
            return refused(format!(
                "an account with email `{}` exists",
                invitation.email
            ));
        }
        self.drop_expired_invitations(invitation.created_at_ms, t);
        t.push(GovTouched::Invitation(invitation.id.clone()));
        self.invitations
            .insert(invitation.id.clone(), invitation.clone());
        Response::Applied
    }

    pub(crate) fn delete_invitation(&mut self, id: &str, t: &mut Vec<GovTouched>) -> Response {
        match self.invitations.remove(id) {
            Some(_) => {
                t.push(GovTouched::Invitation(id.to_owned()));
                Response::Applied
            }
            None => Response::NotFound,
        }
    }

    pub(crate) fn accept_invitation(
        &mut self,
        id: &str,
        sha256: &str,
        account: &Account,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let now = account.created_at_ms;
        match self.invitations.get(id) {
            Some(i) if i.sha256 == sha256 && i.expires_at_ms > now => {
                if i.email != account.email || i.role != account.role {
                    return refused("the account is not the one the invitation was for");
                }
            }
            Some(i) if i.sha256 == sha256 => return refused("the invitation has expired"),
            _ => return refused("no such invitation (used, withdrawn or never made)"),
        }
        if account.state != AccountState::Active {
            return refused("an invited account opens active");
        }
        let opened = self.put_account(account, t);
        if opened != Response::Applied {
            return opened;
        }
        self.invitations.remove(id);
        t.push(GovTouched::Invitation(id.to_owned()));
        Response::Applied
    }

    /// Reserves idempotency id `id` for `node` at `at_ms`: refused (`in-progress` or
    /// `answered`) while another publish holds it or its answer is kept. Beyond `max_keys`
    /// records the expired ones are dropped first, and a new key is refused while still beyond.
    pub(crate) fn reserve_idempotency(
        &mut self,
        record: &IdempotentPublish,
        at_ms: u64,
        max_keys: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        match self.idempotency.get(&record.id) {
            Some(existing) if existing.expires_at_ms > at_ms => match existing.state {
                IdempotencyState::Done { .. } => return refused("answered"),
                IdempotencyState::Pending { until_ms } if until_ms > at_ms => {
                    return refused("in-progress")
                }
                // The node that took it did not answer in time: taken over.
                IdempotencyState::Pending { .. } => {}
            },
            _ => {}
        }
        if self.idempotency.len() as u64 >= max_keys {
            self.idempotency.retain(|id, r| {
                let keep = r.expires_at_ms > at_ms;
                if !keep {
                    t.push(GovTouched::Idempotency(id.clone()));
                }
                keep
            });
            if self.idempotency.len() as u64 >= max_keys {
                return refused("full");
            }
        }
        t.push(GovTouched::Idempotency(record.id.clone()));
        self.idempotency.insert(record.id.clone(), record.clone());
        Response::Applied
    }

    /// Records the answer of the publish `node` reserved (nothing when the key is no longer
    /// its own).
    pub(crate) fn complete_idempotency(
        &mut self,
        id: &str,
        node: NodeId,
        state: &IdempotencyState,
        expires_at_ms: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        match self.idempotency.get_mut(id) {
            Some(r) if r.node == node => {
                r.state = state.clone();
                r.expires_at_ms = expires_at_ms;
                t.push(GovTouched::Idempotency(id.to_owned()));
                Response::Applied
            }
            _ => refused("the key is not this node's"),
        }
    }

    /// Gives up a reservation (the publish failed: a retry may try again at once).
    pub(crate) fn release_idempotency(
        &mut self,
        id: &str,
        node: NodeId,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let pending_here = self
            .idempotency
            .get(id)
            .is_some_and(|r| r.node == node && matches!(r.state, IdempotencyState::Pending { .. }));
        if pending_here {
            self.idempotency.remove(id);
            t.push(GovTouched::Idempotency(id.to_owned()));
        }
        Response::Applied
    }

    /// The key tokens are signed with now, if any.
    pub fn current_signing_key(&self) -> Option<&SigningKey> {
        self.signing_keys
            .values()
            .filter(|k| k.retired_at_ms.is_none())
            .max_by_key(|k| k.created_at_ms)
    }

    /// Makes `key` the signing key, if the current one is still `expected` (so two nodes
    /// rotating at once make one new key, not two): the previous one keeps verifying until
    /// `at_ms + keep_verifying_ms`; keys past their verification time are dropped.
    pub(crate) fn rotate_signing_key(
        &mut self,
        key: &SigningKey,
        expected: Option<&str>,
        at_ms: u64,
        keep_verifying_ms: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let current = self.current_signing_key().map(|k| k.kid.clone());
        if current.as_deref() != expected {
            return refused(format!(
                "the signing key is `{}` now, not `{}`",
                current.as_deref().unwrap_or("(none)"),
                expected.unwrap_or("(none)")
            ));
        }
        if self.signing_keys.contains_key(&key.kid) {
            return refused(format!("signing key `{}` exists", key.kid));
        }
        for (kid, old) in self.signing_keys.iter_mut() {
            if old.retired_at_ms.is_none() {
                old.retired_at_ms = Some(at_ms);
                old.verify_until_ms = Some(at_ms.saturating_add(keep_verifying_ms));
                t.push(GovTouched::SigningKey(kid.clone()));
            }
        }
        self.signing_keys.retain(|kid, old| {
            let keep = old.verify_until_ms.is_none_or(|until| until > at_ms);
            if !keep {
                t.push(GovTouched::SigningKey(kid.clone()));
            }
            keep
        });
        t.push(GovTouched::SigningKey(key.kid.clone()));
        self.signing_keys.insert(key.kid.clone(), key.clone());
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn add_key(&mut self, key: &ApiKey, t: &mut Vec<GovTouched>) -> Response {
        if !self.applications.contains_key(&key.app) {
            return Response::NotFound;
        }
        if key.sha256.len() != 64 || key.id != key.sha256[..16] {
            return refused("a key's id is the first 16 hex digits of its 64-digit SHA-256");
        }
        if let Some(existing) = self.keys.get(&key.id) {
            if existing.app != key.app {
                return refused(format!("key `{}` belongs to another application", key.id));
            }
        }
        t.push(GovTouched::Key(key.id.clone()));
        self.keys.insert(key.id.clone(), key.clone());
        self.version += 1;
        Response::Applied
    }

    /// [`Self::add_key`], and the application's other keys that are neither revoked nor
    /// expiring sooner expire at `others_expire_at_ms`.
    pub(crate) fn rotate_key(
        &mut self,
        key: &ApiKey,
        others_expire_at_ms: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let added = self.add_key(key, t);
        if added != Response::Applied {
            return added;
        }
        for other in self.keys.values_mut() {
            if other.app == key.app
                && other.id != key.id
                && other.revoked_at_ms.is_none()
                && other
                    .expires_at_ms
                    .is_none_or(|at| at > others_expire_at_ms)
            {
                other.expires_at_ms = Some(others_expire_at_ms);
                t.push(GovTouched::Key(other.id.clone()));
            }
        }
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn revoke_key(&mut self, id: &str, at_ms: u64, t: &mut Vec<GovTouched>) -> Response {
        match self.keys.get_mut(id) {
            None => Response::NotFound,
            Some(key) => {
                if key.revoked_at_ms.is_none() {
                    key.revoked_at_ms = Some(at_ms);
                    t.push(GovTouched::Key(id.to_owned()));
                    self.version += 1;
                }
                Response::Applied
            }
        }
    }

    pub(crate) fn put_access(&mut self, access: &Access, t: &mut Vec<GovTouched>) -> Response {
        if !self.applications.contains_key(&access.app) {
            return refused(format!("no application `{}`", access.app));
        }
        if !self.apis.contains_key(&access.api) {
            return refused(format!("no API `{}`", access.api));
        }
        if !self.plans.contains_key(&access.plan) {
            return refused(format!("no plan `{}`", access.plan));
        }
        let key = (access.app.clone(), access.api.clone());
        t.push(GovTouched::Access(key.0.clone(), key.1.clone()));
        self.access.insert(key, access.clone());
        self.version += 1;
        Response::Applied
    }

    pub(crate) fn delete_access(
        &mut self,
        app: &str,
        api: &str,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        if self
            .access
            .remove(&(app.to_owned(), api.to_owned()))
            .is_none()
        {
            return Response::NotFound;
        }
        t.push(GovTouched::Access(app.to_owned(), api.to_owned()));
        self.version += 1;
        Response::Applied
    }

    /// Replaces every entity of configuration origin by `declared`. Admin-made entities are
    /// kept unless `declared` names the same one, which then becomes the configuration's.
    pub(crate) fn declare(&mut self, declared: &Declared, t: &mut Vec<GovTouched>) -> Response {
        // Remove what an earlier configuration declared and this one no longer does.
        let apis: Vec<String> = self
            .apis
            .values()
            .filter(|a| {
                a.origin == Origin::Config && !declared.apis.iter().any(|d| d.name == a.name)
            })
            .map(|a| a.name.clone())
            .collect();
        for name in apis {
            self.delete_api(&name, t);
        }
        let apps: Vec<String> = self
            .applications
            .values()
            .filter(|a| {
                a.origin == Origin::Config && !declared.applications.iter().any(|d| d.id == a.id)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in apps {
            self.delete_application(&id, t);
        }
        let keys: Vec<String> = self
            .keys
            .values()
            .filter(|k| k.origin == Origin::Config && !declared.keys.iter().any(|d| d.id == k.id))
            .map(|k| k.id.clone())
            .collect();
        for id in keys {
            self.keys.remove(&id);
            t.push(GovTouched::Key(id));
        }
        let access: Vec<(String, String)> = self
            .access
            .values()
            .filter(|a| {
                a.origin == Origin::Config
                    && !declared
                        .access
                        .iter()
                        .any(|d| d.app == a.app && d.api == a.api)
            })
            .map(|a| (a.app.clone(), a.api.clone()))
            .collect();
        for (app, api) in access {
            self.delete_access(&app, &api, t);
        }
        for api in &declared.apis {
            self.put_api(api, t);
        }
        for plan in &declared.plans {
            self.put_plan(plan, t);
        }
        for app in &declared.applications {
            self.put_application(app, t);
        }
        let mut problems = Vec::new();
        for key in &declared.keys {
            // A key revoked at runtime stays revoked when the file is applied again.
            let mut key = key.clone();
            if let Some(existing) = self.keys.get(&key.id) {
                key.revoked_at_ms = key.revoked_at_ms.or(existing.revoked_at_ms);
            }
            if let Response::Refused { reason } = self.add_key(&key, t) {
                problems.push(reason);
            }
        }
        for access in &declared.access {
            if let Response::Refused { reason } = self.put_access(access, t) {
                problems.push(reason);
            }
        }
        // Plans no longer declared go last, once nothing of the configuration uses them.
        let plans: Vec<String> = self
            .plans
            .values()
            .filter(|p| {
                p.origin == Origin::Config && !declared.plans.iter().any(|d| d.name == p.name)
            })
            .map(|p| p.name.clone())
            .collect();
        for name in plans {
            if let Response::Refused { reason } = self.delete_plan(&name, t) {
                problems.push(reason);
            }
        }
        if problems.is_empty() {
            Response::Applied
        } else {
            refused(problems.join("; "))
        }
    }

    /// Grants up to `want` of the quota of `key` in the window starting at `window_start_ms`,
    /// within `limit`; a newer window starts from zero, an older one gets nothing.
    pub(crate) fn reserve(
        &mut self,
        key: &UsageKey,
        window_start_ms: u64,
        limit: u64,
        want: u64,
        t: &mut Vec<GovTouched>,
    ) -> Response {
        let usage = self.usage.entry(key.clone()).or_insert(Usage {
            window_start_ms,
            used: 0,
        });
        if window_start_ms < usage.window_start_ms {
            return Response::Count(0);
        }
        if window_start_ms > usage.window_start_ms {
            *usage = Usage {
                window_start_ms,
                used: 0,
            };
        }
        let granted = want.min(limit.saturating_sub(usage.used));
        usage.used += granted;
        t.push(GovTouched::Usage(key.clone()));
        Response::Count(granted)
    }

    /// Replaces what `node` reported of its live connections.
    pub(crate) fn report_connections(
        &mut self,
        node: NodeId,
        counts: &[((String, String), u32)],
        t: &mut Vec<GovTouched>,
    ) -> Response {
        for (key, per_node) in self.connections.iter_mut() {
            if per_node.remove(&node).is_some() {
                t.push(GovTouched::Connections(key.0.clone(), key.1.clone()));
            }
        }
        for (key, count) in counts {
            if *count > 0 {
                self.connections
                    .entry(key.clone())
                    .or_default()
                    .insert(node, *count);
                t.push(GovTouched::Connections(key.0.clone(), key.1.clone()));
            }
        }
        self.connections.retain(|_, per_node| !per_node.is_empty());
        Response::Applied
    }

    /// A node left: its connections are gone.
    pub(crate) fn forget_node(&mut self, node: NodeId, t: &mut Vec<GovTouched>) {
        self.report_connections(node, &[], t);
    }

    pub(crate) fn set_websub_application(
        &mut self,
        subscription: &str,
        application: Option<(String, String)>,
        t: &mut Vec<GovTouched>,
    ) {
        let changed = match application {
            Some(application) => {
                self.websub_applications
                    .insert(subscription.to_owned(), application.clone())
                    != Some(application)
            }
            None => self.websub_applications.remove(subscription).is_some(),
        };
        if changed {
            t.push(GovTouched::WebsubApplication(subscription.to_owned()));
        }
    }

    /// Records the API key a WebSub subscription was made with (`None`: none, or forget it).
    pub(crate) fn set_websub_key(
        &mut self,
        subscription: &str,
        key: Option<String>,
        t: &mut Vec<GovTouched>,
    ) {
        let changed = match key {
            Some(key) => {
                self.websub_keys
                    .insert(subscription.to_owned(), key.clone())
                    != Some(key)
            }
            None => self.websub_keys.remove(subscription).is_some(),
        };
        if changed {
            t.push(GovTouched::WebsubKey(subscription.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str) -> Plan {
        Plan {
            name: name.to_owned(),
            description: None,
            publish: Some(RateLimit {
                count: 10,
                window_ms: 1000,
            }),
            deliveries: None,
            max_connections: None,
            max_subscriptions: None,
            on_delivery_limit: OverLimit::Pause,
            approval_required: false,
            origin: Origin::Config,
            updated_at_ms: 0,
        }
    }

    fn api(name: &str) -> Api {
        Api {
            name: name.to_owned(),
            version: "1".to_owned(),
            description: None,
            base_path: None,
            channels: [("orders".to_owned(), "orders".to_owned())].into(),
            entrypoints: Entrypoint::ALL.to_vec(),
            security: vec![Security::ApiKey],
            max_message_bytes: None,
            origin: Origin::Config,
            updated_at_ms: 0,
            lifecycle: Lifecycle::Published,
            lifecycle_since_ms: 0,
            sunset_ms: None,
            channel_specs: BTreeMap::new(),
            validate_messages: false,
            verify_ingest: None,
            tags: Vec::new(),
        }
    }

    fn app(id: &str) -> Application {
        Application {
            id: id.to_owned(),
            name: None,
            description: None,
            permissions: vec![],
            disabled: false,
            origin: Origin::Config,
            updated_at_ms: 0,
            owner: None,
        }
    }

    #[test]
    fn base_paths_match_whole_segments_longest_first() {
        let mut g = Governance::default();
        for (name, base) in [
            ("shop", Some("/shop")),
            ("shop2", Some("/shop/v2")),
            ("bare", None),
        ] {
            let mut a = api(name);
            a.base_path = base.map(str::to_owned);
            g.apis.insert(name.to_owned(), a);
        }
        let found = |path: &str| {
            g.api_of_path(path)
                .map(|(a, rest)| (a.name.clone(), rest.to_owned()))
        };
        assert_eq!(
            found("/shop/ws/orders"),
            Some(("shop".into(), "/ws/orders".into()))
        );
        assert_eq!(
            found("/shop/v2/sse/orders"),
            Some(("shop2".into(), "/sse/orders".into()))
        );
        assert_eq!(found("/shop"), Some(("shop".into(), String::new())));
        assert_eq!(found("/shopping/ws/orders"), None);
        assert_eq!(found("/ws/orders"), None);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "orders"));
        assert!(pattern_matches("orders.*", "orders.eu"));
        assert!(!pattern_matches("orders.*", "order"));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxc"));
        assert!(pattern_matches("orders", "orders"));
        assert!(!pattern_matches("orders", "orders2"));
        assert!(pattern_matches("*.eu", "orders.eu"));
    }

    #[test]
    fn quota_is_granted_within_the_window_and_resets_with_the_next() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let key = ("app".to_owned(), "api".to_owned(), QuotaKind::Publish);
        assert_eq!(g.reserve(&key, 1000, 10, 4, &mut t), Response::Count(4));
        assert_eq!(g.reserve(&key, 1000, 10, 4, &mut t), Response::Count(4));
        assert_eq!(g.reserve(&key, 1000, 10, 4, &mut t), Response::Count(2));
        assert_eq!(g.reserve(&key, 1000, 10, 4, &mut t), Response::Count(0));
        assert_eq!(
            g.reserve(&key, 0, 10, 4, &mut t),
            Response::Count(0),
            "an older window"
        );
        assert_eq!(g.reserve(&key, 2000, 10, 4, &mut t), Response::Count(4));
    }

    #[test]
    fn declaring_replaces_config_entities_and_keeps_admin_ones_and_revocations() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let key = ApiKey {
            id: "0123456789abcdef".to_owned(),
            app: "a".to_owned(),
            sha256: format!("0123456789abcdef{}", "0".repeat(48)),
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            origin: Origin::Config,
        };
        let declared = Declared {
            apis: vec![api("orders")],
            plans: vec![plan("gold")],
            applications: vec![app("a")],
            keys: vec![key.clone()],
            access: vec![Access {
                app: "a".to_owned(),
                api: "orders".to_owned(),
                plan: "gold".to_owned(),
                state: AccessState::Approved,
                origin: Origin::Config,
                updated_at_ms: 0,
            }],
        };
        assert_eq!(g.declare(&declared, &mut t), Response::Applied);
        let mut admin_app = app("b");
        admin_app.origin = Origin::Admin;
        g.put_application(&admin_app, &mut t);
        g.revoke_key(&key.id, 5, &mut t);
        assert_eq!(g.declare(&declared, &mut t), Response::Applied);
        assert_eq!(g.keys[&key.id].revoked_at_ms, Some(5));
        assert!(g.applications.contains_key("b"));

        // A configuration without them removes the declared ones, and what hangs on them.
        assert_eq!(g.declare(&Declared::default(), &mut t), Response::Applied);
        assert!(g.apis.is_empty() && g.plans.is_empty() && g.keys.is_empty());
        assert!(g.access.is_empty());
        assert_eq!(g.applications.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_plan_in_use_is_not_deleted() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        g.put_api(&api("orders"), &mut t);
        g.put_plan(&plan("gold"), &mut t);
        g.put_application(&app("a"), &mut t);
        let access = Access {
            app: "a".to_owned(),
            api: "orders".to_owned(),
            plan: "gold".to_owned(),
            state: AccessState::Pending,
            origin: Origin::Admin,
            updated_at_ms: 0,
        };
        assert_eq!(g.put_access(&access, &mut t), Response::Applied);
        assert!(matches!(
            g.delete_plan("gold", &mut t),
            Response::Refused { .. }
        ));
        g.delete_application("a", &mut t);
        assert!(g.access.is_empty());
        assert_eq!(g.delete_plan("gold", &mut t), Response::Applied);
    }

    #[test]
    fn connections_reports_replace_a_nodes_counts() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let key = ("a".to_owned(), "orders".to_owned());
        g.report_connections(1, &[(key.clone(), 3)], &mut t);
        g.report_connections(2, &[(key.clone(), 2)], &mut t);
        assert_eq!(g.connections_elsewhere("a", "orders", 1, |_| true), 2);
        assert_eq!(g.connections_elsewhere("a", "orders", 3, |_| true), 5);
        assert_eq!(g.connections_elsewhere("a", "orders", 3, |n| n != 2), 3);
        g.report_connections(1, &[], &mut t);
        assert_eq!(g.connections_elsewhere("a", "orders", 3, |_| true), 2);
        g.forget_node(2, &mut t);
        assert!(g.connections.is_empty());
    }

    #[test]
    fn websub_slots_are_reserved_up_to_the_limit_and_given_back() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let reserve = |g: &mut Governance, id: &str, now: u64| {
            g.reserve_websub(id, ("app", "api"), 2, now, now + 100, &mut Vec::new())
        };
        assert_eq!(reserve(&mut g, "s1", 0), Response::Applied);
        assert_eq!(reserve(&mut g, "s2", 0), Response::Applied);
        assert!(matches!(reserve(&mut g, "s3", 0), Response::Refused { .. }));
        // The same subscription asking again keeps its slot; another application is apart.
        assert_eq!(reserve(&mut g, "s2", 0), Response::Applied);
        assert_eq!(
            g.reserve_websub("x1", ("other", "api"), 2, 0, 100, &mut t),
            Response::Applied
        );
        // Activated: the slot is the subscription's; a renewal takes none.
        g.release_websub("s1", &mut t);
        g.set_websub_application("s1", Some(("app".to_owned(), "api".to_owned())), &mut t);
        assert!(matches!(reserve(&mut g, "s3", 0), Response::Refused { .. }));
        assert_eq!(reserve(&mut g, "s1", 0), Response::Applied);
        // A failed verification gives its slot back; an unfinished one expires.
        g.release_websub("s2", &mut t);
        assert_eq!(reserve(&mut g, "s3", 0), Response::Applied);
        assert!(matches!(
            reserve(&mut g, "s4", 99),
            Response::Refused { .. }
        ));
        assert_eq!(reserve(&mut g, "s4", 100), Response::Applied);
        assert!(
            !g.websub_reservations.contains_key("s3"),
            "expired and dropped"
        );
    }

    #[test]
    fn an_invitation_opens_one_account_once_before_it_expires() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let sha = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let invitation = |c: char, email: &str, expires_at_ms: u64| Invitation {
            id: sha(c)[..16].to_owned(),
            sha256: sha(c),
            email: email.to_owned(),
            role: AccountRole::Developer,
            invited_by: None,
            created_at_ms: 0,
            expires_at_ms,
        };
        let account = |id: &str, email: &str, at: u64| Account {
            id: id.to_owned(),
            email: email.to_owned(),
            name: "Ada".to_owned(),
            password_hash: "h".to_owned(),
            role: AccountRole::Developer,
            state: AccountState::Active,
            created_at_ms: at,
            updated_at_ms: at,
        };
        let ada = invitation('a', "ada@example.com", 100);
        assert_eq!(g.put_invitation(&ada, &mut t), Response::Applied);
        assert_eq!(g.invitation_by_hash(&sha('a')), Some(&ada));
        assert_eq!(g.invitation_by_hash(&sha('b')), None);
        // The token must match, the email and role must be the invited ones.
        let refused = |r: Response| matches!(r, Response::Refused { .. });
        assert!(refused(g.accept_invitation(
            &ada.id,
            &sha('b'),
            &account("u1", "ada@example.com", 1),
            &mut t
        )));
        assert!(refused(g.accept_invitation(
            &ada.id,
            &ada.sha256,
            &account("u1", "eve@example.com", 1),
            &mut t
        )));
        // Expired: refused; in time: the account opens and the invitation is used up.
        assert!(refused(g.accept_invitation(
            &ada.id,
            &ada.sha256,
            &account("u1", "ada@example.com", 100),
            &mut t
        )));
        assert_eq!(
            g.accept_invitation(
                &ada.id,
                &ada.sha256,
                &account("u1", "ada@example.com", 99),
                &mut t
            ),
            Response::Applied
        );
        assert!(g.accounts.contains_key("u1"));
        assert!(g.invitations.is_empty());
        assert!(refused(g.accept_invitation(
            &ada.id,
            &ada.sha256,
            &account("u2", "ada@example.com", 99),
            &mut t
        )));
        // No invitation for an email that has an account; expired ones go on the next write.
        assert!(refused(g.put_invitation(
            &invitation('c', "ada@example.com", 100),
            &mut t
        )));
        assert_eq!(
            g.put_invitation(&invitation('d', "bob@example.com", 5), &mut t),
            Response::Applied
        );
        let mut later = invitation('e', "cy@example.com", 500);
        later.created_at_ms = 10;
        assert_eq!(g.put_invitation(&later, &mut t), Response::Applied);
        assert_eq!(g.invitations.len(), 1, "bob's expired one dropped");
        assert_eq!(g.delete_invitation(&later.id, &mut t), Response::Applied);
        assert_eq!(g.delete_invitation(&later.id, &mut t), Response::NotFound);
    }

    #[test]
    fn an_idempotency_key_is_held_answered_taken_over_and_bounded() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        let record =
            |id: &str, node: NodeId, until_ms: u64, expires_at_ms: u64| IdempotentPublish {
                id: id.to_owned(),
                fingerprint: "f".to_owned(),
                node,
                state: IdempotencyState::Pending { until_ms },
                expires_at_ms,
            };
        let refused_with =
            |r: Response, why: &str| matches!(r, Response::Refused { reason } if reason == why);
        assert_eq!(
            g.reserve_idempotency(&record("a", 1, 30, 1000), 0, 10, &mut t),
            Response::Applied
        );
        assert!(refused_with(
            g.reserve_idempotency(&record("a", 2, 40, 1000), 10, 10, &mut t),
            "in-progress"
        ));
        // Only the reserving node completes it.
        assert!(matches!(
            g.complete_idempotency(
                "a",
                2,
                &IdempotencyState::Done {
                    status: 202,
                    body: "{}".into()
                },
                1000,
                &mut t
            ),
            Response::Refused { .. }
        ));
        let done = IdempotencyState::Done {
            status: 202,
            body: "{}".into(),
        };
        assert_eq!(
            g.complete_idempotency("a", 1, &done, 1000, &mut t),
            Response::Applied
        );
        assert!(refused_with(
            g.reserve_idempotency(&record("a", 2, 40, 1000), 20, 10, &mut t),
            "answered"
        ));
        // A reservation whose node never answered is taken over once it lapses.
        g.reserve_idempotency(&record("b", 1, 30, 1000), 0, 10, &mut t);
        assert_eq!(
            g.reserve_idempotency(&record("b", 2, 60, 1000), 31, 10, &mut t),
            Response::Applied
        );
        assert_eq!(g.idempotency["b"].node, 2);
        // A failed publish releases its own reservation only.
        g.release_idempotency("b", 1, &mut t);
        assert!(g.idempotency.contains_key("b"));
        g.release_idempotency("b", 2, &mut t);
        assert!(!g.idempotency.contains_key("b"));
        // Full: expired records go first; refused while still full.
        let mut small = Governance::default();
        small.reserve_idempotency(&record("x", 1, 30, 50), 0, 2, &mut t);
        small.reserve_idempotency(&record("y", 1, 30, 500), 0, 2, &mut t);
        assert!(refused_with(
            small.reserve_idempotency(&record("z", 1, 30, 500), 10, 2, &mut t),
            "full"
        ));
        assert_eq!(
            small.reserve_idempotency(&record("z", 1, 90, 500), 60, 2, &mut t),
            Response::Applied,
            "x expired at 50 and made room"
        );
        assert!(!small.idempotency.contains_key("x"));
    }

    #[test]
    fn rotating_a_key_ends_the_others_after_the_overlap() {
        let mut g = Governance::default();
        let mut t = Vec::new();
        g.applications.insert("a".to_owned(), app("a"));
        g.applications.insert("b".to_owned(), app("b"));
        let key = |c: char, app: &str, expires_at_ms: Option<u64>| {
            let sha256: String = std::iter::repeat_n(c, 64).collect();
            ApiKey {
                id: sha256[..16].to_owned(),
                app: app.to_owned(),
                sha256,
                created_at_ms: 0,
                expires_at_ms,
                revoked_at_ms: None,
                origin: Origin::Admin,
            }
        };
        g.add_key(&key('1', "a", None), &mut t);
        g.add_key(&key('2', "a", Some(50)), &mut t);
        g.add_key(&key('3', "b", None), &mut t);
        assert_eq!(
            g.rotate_key(&key('4', "a", None), 100, &mut t),
            Response::Applied
        );
        let expiry =
            |c: char| g.keys[&std::iter::repeat_n(c, 16).collect::<String>()].expires_at_ms;
        assert_eq!(expiry('1'), Some(100));
        assert_eq!(expiry('2'), Some(50), "one expiring sooner keeps its time");
        assert_eq!(
            expiry('3'),
            None,
            "another application's keys are untouched"
        );
        assert_eq!(expiry('4'), None, "the new key");
    }
}
