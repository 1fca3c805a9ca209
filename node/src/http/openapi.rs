//! `GET /admin/openapi.json`: the OpenAPI 3.1 document of the admin API.
//!
//! The schemas come from the Rust types: request bodies from the very types the handlers
//! deserialize (`utoipa::ToSchema` on them), status documents from the types they serialize,
//! and the answers the handlers build as JSON from the view types below, which a test holds to
//! the real answers (every `GET` of a running node is validated against its schema). The
//! routes come from one table (method, path, operation id, summary, body, answer) that the
//! same test calls route by route, so neither can drift from the router without failing.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use utoipa::{OpenApi, ToSchema};

/// One documented admin route.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: &'static str,
    /// Under `/admin`, with `{parameters}`.
    pub path: &'static str,
    /// The operation id: a verb and a noun, camelCase.
    pub id: &'static str,
    pub summary: &'static str,
    /// Schema name in `components.schemas` of the JSON body, if any.
    pub body: Option<&'static str>,
    pub ok: u16,
    /// Schema name of the success answer (`[Name]`: an array of them), if it has a body.
    pub response: Option<&'static str>,
}

/// Every route of the admin API.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/cluster/status",
        id: "getClusterStatus",
        summary: "Leader, term and every member's state",
        body: None,
        ok: 200,
        response: Some("ClusterStatus"),
    },
    Route {
        method: "get",
        path: "/cluster/node",
        id: "getNodeStatus",
        summary: "This node's own Raft view",
        body: None,
        ok: 200,
        response: Some("NodeStatus"),
    },
    Route {
        method: "post",
        path: "/cluster/leave",
        id: "leaveCluster",
        summary: "Remove a member (this node when the body is empty)",
        body: Some("LeaveRequest"),
        ok: 200,
        response: Some("Left"),
    },
    Route {
        method: "get",
        path: "/subscriptions",
        id: "listSubscriptions",
        summary: "Every WebSub subscription",
        body: None,
        ok: 200,
        response: Some("[SubscriptionView]"),
    },
    Route {
        method: "get",
        path: "/subscriptions/{id}",
        id: "getSubscription",
        summary: "One WebSub subscription with cursor and retries",
        body: None,
        ok: 200,
        response: Some("SubscriptionView"),
    },
    Route {
        method: "put",
        path: "/subscriptions/{id}",
        id: "putSubscription",
        summary: "Create (201) or replace (200) a WebSub subscription record",
        body: Some("PutSubscription"),
        ok: 201,
        response: Some("SubscriptionView"),
    },
    Route {
        method: "delete",
        path: "/subscriptions/{id}",
        id: "deleteSubscription",
        summary: "Remove a WebSub subscription",
        body: None,
        ok: 204,
        response: None,
    },
    Route {
        method: "post",
        path: "/subscriptions/{id}/secret",
        id: "rotateSubscriptionSecret",
        summary: "Rotate a subscription's secret (the old one signs too for the overlap); answers the new secret once",
        body: Some("RotateSecret"),
        ok: 200,
        response: Some("RotatedSecret"),
    },
    Route {
        method: "post",
        path: "/subscriptions/{id}/replay",
        id: "replaySubscription",
        summary: "Deliver again, in order, a range of offsets or of times of one partition",
        body: None,
        ok: 200,
        response: Some("Replayed"),
    },
    Route {
        method: "get",
        path: "/subscriptions/{id}/attempts",
        id: "listDeliveryAttempts",
        summary: "The delivery ledger of a subscription (filters: outcome, status, message_id, since, until, limit)",
        body: None,
        ok: 200,
        response: Some("AttemptList"),
    },
    Route {
        method: "post",
        path: "/subscriptions/{id}/enable",
        id: "enableSubscription",
        summary: "Re-enable a subscription disabled after its endpoint's long outage",
        body: None,
        ok: 200,
        response: Some("SubscriptionView"),
    },
    Route {
        method: "get",
        path: "/endpoints",
        id: "listEndpoints",
        summary: "Callback endpoints paused by the circuit breaker, and disabled subscriptions",
        body: None,
        ok: 200,
        response: Some("EndpointList"),
    },
    Route {
        method: "post",
        path: "/endpoints/resume",
        id: "resumeEndpoint",
        summary: "Close a paused endpoint's breaker now",
        body: None,
        ok: 204,
        response: None,
    },
    Route {
        method: "get",
        path: "/dead-letters",
        id: "listDeadLetters",
        summary: "Messages that exhausted their attempts",
        body: None,
        ok: 200,
        response: Some("[DeadLetterView]"),
    },
    Route {
        method: "delete",
        path: "/dead-letters/{id}/{partition}/{offset}",
        id: "discardDeadLetter",
        summary: "Discard a dead letter",
        body: None,
        ok: 204,
        response: None,
    },
    Route {
        method: "post",
        path: "/dead-letters/{id}/{partition}/{offset}/redrive",
        id: "redriveDeadLetter",
        summary: "Deliver a dead letter once more",
        body: None,
        ok: 200,
        response: None,
    },
    Route {
        method: "get",
        path: "/apis",
        id: "listApis",
        summary: "Every API",
        body: None,
        ok: 200,
        response: Some("ApiList"),
    },
    Route {
        method: "get",
        path: "/apis/{name}",
        id: "getApi",
        summary: "One API",
        body: None,
        ok: 200,
        response: Some("ApiView"),
    },
    Route {
        method: "put",
        path: "/apis/{name}",
        id: "putApi",
        summary: "Create (201) or replace (200) an API",
        body: Some("RawApi"),
        ok: 201,
        response: Some("ApiView"),
    },
    Route {
        method: "put",
        path: "/apis/{name}/lifecycle",
        id: "setApiLifecycle",
        summary: "Move an API through its lifecycle (409 when the move is not allowed)",
        body: Some("LifecycleBody"),
        ok: 200,
        response: Some("ApiView"),
    },
    Route {
        method: "post",
        path: "/apis/import",
        id: "importApi",
        summary: "Create or replace an API from an AsyncAPI document (3.0, 3.1, 2.0-2.6; JSON or YAML body); query: name, base_path, validate_messages, topic.<channel id>; 400 invalid-document names the JSON pointer",
        body: None,
        ok: 201,
        response: Some("ApiView"),
    },
    Route {
        method: "get",
        path: "/apis/{name}/asyncapi.json",
        id: "getApiAsyncapiJson",
        summary: "An API's AsyncAPI document in any lifecycle state (preview, export)",
        body: None,
        ok: 200,
        response: None,
    },
    Route {
        method: "get",
        path: "/apis/{name}/asyncapi.yaml",
        id: "getApiAsyncapiYaml",
        summary: "The same as YAML",
        body: None,
        ok: 200,
        response: None,
    },
    Route {
        method: "delete",
        path: "/apis/{name}",
        id: "deleteApi",
        summary: "Delete an API and the applications' access to it",
        body: None,
        ok: 200,
        response: Some("Deleted"),
    },
    Route {
        method: "get",
        path: "/plans",
        id: "listPlans",
        summary: "Every plan",
        body: None,
        ok: 200,
        response: Some("PlanList"),
    },
    Route {
        method: "get",
        path: "/plans/{name}",
        id: "getPlan",
        summary: "One plan",
        body: None,
        ok: 200,
        response: Some("PlanView"),
    },
    Route {
        method: "put",
        path: "/plans/{name}",
        id: "putPlan",
        summary: "Create (201) or replace (200) a plan",
        body: Some("RawPlan"),
        ok: 201,
        response: Some("PlanView"),
    },
    Route {
        method: "delete",
        path: "/plans/{name}",
        id: "deletePlan",
        summary: "Delete a plan no subscription uses",
        body: None,
        ok: 200,
        response: Some("Deleted"),
    },
    Route {
        method: "get",
        path: "/applications",
        id: "listApplications",
        summary: "Every application",
        body: None,
        ok: 200,
        response: Some("AppList"),
    },
    Route {
        method: "get",
        path: "/applications/{id}",
        id: "getApplication",
        summary: "One application with its keys and access to APIs",
        body: None,
        ok: 200,
        response: Some("AppDetail"),
    },
    Route {
        method: "put",
        path: "/applications/{id}",
        id: "putApplication",
        summary: "Create (201) or replace (200) an application",
        body: Some("AppBody"),
        ok: 201,
        response: Some("AppView"),
    },
    Route {
        method: "delete",
        path: "/applications/{id}",
        id: "deleteApplication",
        summary: "Delete an application with its keys and access to APIs",
        body: None,
        ok: 200,
        response: Some("Deleted"),
    },
    Route {
        method: "get",
        path: "/applications/{id}/keys",
        id: "listApiKeys",
        summary: "An application's keys (never the secret)",
        body: None,
        ok: 200,
        response: Some("KeyList"),
    },
    Route {
        method: "post",
        path: "/applications/{id}/keys",
        id: "createApiKey",
        summary: "Issue a key: shown once in the answer",
        body: Some("KeyBody"),
        ok: 201,
        response: Some("NewKeyView"),
    },
    Route {
        method: "delete",
        path: "/applications/{id}/keys/{key}",
        id: "revokeApiKey",
        summary: "Revoke a key on every node",
        body: None,
        ok: 200,
        response: Some("Revoked"),
    },
    Route {
        method: "get",
        path: "/applications/{id}/client-secrets",
        id: "listClientSecrets",
        summary: "An application's OAuth2 client secrets (never the secret)",
        body: None,
        ok: 200,
        response: Some("SecretList"),
    },
    Route {
        method: "post",
        path: "/applications/{id}/client-secrets",
        id: "createClientSecret",
        summary: "Issue a client secret (shown once); the others keep working for the overlap",
        body: Some("SecretBody"),
        ok: 201,
        response: Some("NewSecretView"),
    },
    Route {
        method: "delete",
        path: "/applications/{id}/client-secrets/{secret}",
        id: "revokeClientSecret",
        summary: "Revoke a client secret and the access tokens issued on it",
        body: None,
        ok: 200,
        response: Some("Revoked"),
    },
    Route {
        method: "get",
        path: "/accounts",
        id: "listAccounts",
        summary: "The developer portal's accounts (never their passwords)",
        body: None,
        ok: 200,
        response: Some("AccountList"),
    },
    Route {
        method: "put",
        path: "/accounts/{id}",
        id: "updateAccount",
        summary: "Approve or disable a portal account (its sessions end), or change its role",
        body: Some("AccountUpdate"),
        ok: 200,
        response: Some("AccountView"),
    },
    Route {
        method: "get",
        path: "/accounts/invitations",
        id: "listInvitations",
        summary: "Open invitations to the portal (never their links)",
        body: None,
        ok: 200,
        response: Some("InvitationList"),
    },
    Route {
        method: "post",
        path: "/accounts/invitations",
        id: "createInvitation",
        summary: "Invite an email address to the portal: answers a one-time link, shown once",
        body: Some("InvitationBody"),
        ok: 201,
        response: Some("NewInvitationView"),
    },
    Route {
        method: "delete",
        path: "/accounts/invitations/{id}",
        id: "withdrawInvitation",
        summary: "Withdraw an invitation",
        body: None,
        ok: 200,
        response: None,
    },
    Route {
        method: "get",
        path: "/oauth2/keys",
        id: "listSigningKeys",
        summary: "The cluster's token signing keys (public information only)",
        body: None,
        ok: 200,
        response: Some("SigningKeyList"),
    },
    Route {
        method: "post",
        path: "/oauth2/keys/rotate",
        id: "rotateSigningKey",
        summary: "Sign with a new key from now on; the previous one verifies its tokens until they expire",
        body: None,
        ok: 200,
        response: Some("RotatedKey"),
    },
    Route {
        method: "get",
        path: "/applications/{id}/access",
        id: "listAccess",
        summary: "An application's access to APIs (also at the deprecated /applications/{id}/subscriptions)",
        body: None,
        ok: 200,
        response: Some("AccessList"),
    },
    Route {
        method: "put",
        path: "/applications/{id}/access/{api}",
        id: "putAccess",
        summary: "Give an application access to an API under a plan",
        body: Some("AccessBody"),
        ok: 200,
        response: Some("AccessView"),
    },
    Route {
        method: "delete",
        path: "/applications/{id}/access/{api}",
        id: "deleteAccess",
        summary: "End an application's access to an API",
        body: None,
        ok: 200,
        response: None,
    },
    Route {
        method: "post",
        path: "/applications/{id}/access/{api}/approve",
        id: "approveAccess",
        summary: "Approve pending access",
        body: None,
        ok: 200,
        response: Some("AccessView"),
    },
    Route {
        method: "post",
        path: "/applications/{id}/access/{api}/reject",
        id: "rejectAccess",
        summary: "Reject access",
        body: None,
        ok: 200,
        response: Some("AccessView"),
    },
    Route {
        method: "get",
        path: "/openapi.json",
        id: "getOpenapi",
        summary: "This document",
        body: None,
        ok: 200,
        response: None,
    },
];

/// The tag of a route: the part of the admin API it belongs to.
pub fn tag(path: &str) -> &'static str {
    match path.split('/').nth(1).unwrap_or_default() {
        "cluster" => "Cluster",
        "subscriptions" | "endpoints" | "dead-letters" => "WebSub",
        "apis" => "APIs",
        "plans" => "Plans",
        "applications" if path.contains("/client-secrets") => "OAuth2",
        "applications" if path.contains("/access") => "Access",
        "applications" => "Applications",
        "accounts" => "Portal accounts",
        "oauth2" => "OAuth2",
        _ => "Meta",
    }
}

// ---- answers the handlers build as JSON (schema only; a test validates real answers) ----

/// `{"left": <node id>}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Left {
    left: u64,
}

/// A rotated subscription secret, shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RotatedSecret {
    id: String,
    secret: String,
    /// Until when the old secret signs too; absent when it stopped at once.
    previous_secret_until_ms: Option<u64>,
}

/// What a replay delivered.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Replayed {
    id: String,
    partition: u32,
    delivered: u64,
    last_offset: Option<u64>,
}

/// One delivery attempt of the ledger.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AttemptView {
    at_ms: u64,
    subscription: String,
    /// The delivery id (`webhook-id`, `X-Eventgate-Delivery`).
    message_id: String,
    partition: u32,
    offset: u64,
    /// 1 for the first attempt of the message.
    attempt: u32,
    /// `delivery`, `probe` (of a paused endpoint) or `manual` (replay, re-drive).
    kind: String,
    /// `succeeded`, `failed` or `gone`.
    outcome: String,
    status: Option<u16>,
    latency_ms: u64,
    error: Option<String>,
    /// The first bytes of the callback's answer.
    response: Option<String>,
    node: u64,
}

/// A subscription's recent attempts, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AttemptList {
    subscription: String,
    attempts: Vec<AttemptView>,
}

/// A subscription disabled after its endpoint's long outage.
#[derive(ToSchema)]
#[allow(dead_code)]
struct DisabledSubscription {
    subscription: String,
    origin: Option<String>,
    at_ms: u64,
    reason: String,
}

/// Paused endpoints and disabled subscriptions.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EndpointList {
    #[schema(value_type = Vec<Object>)]
    paused: Vec<Value>,
    disabled: Vec<DisabledSubscription>,
}

/// `{"count": 100, "per": "1m"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RateView {
    count: u64,
    per: String,
}

/// How an API's webhook receiver checks the provider's signature (never the secret).
#[derive(ToSchema)]
#[allow(dead_code)]
struct IngestView {
    scheme: String,
    header: Option<String>,
    tolerance_ms: Option<u64>,
}

/// A message of a channel, from the AsyncAPI document the API was imported from.
#[derive(ToSchema)]
#[allow(dead_code)]
struct MessageView {
    name: String,
    content_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
}

/// An API as the admin API shows it.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ApiView {
    name: String,
    version: String,
    description: Option<String>,
    tags: Vec<String>,
    base_path: Option<String>,
    /// Channel → gateway topic.
    channels: BTreeMap<String, String>,
    entrypoints: Vec<String>,
    security: Vec<String>,
    max_message_bytes: Option<u64>,
    /// `config` or `admin`.
    origin: String,
    updated_at_ms: u64,
    /// `created`, `published`, `deprecated` or `retired`.
    lifecycle: String,
    lifecycle_since_ms: u64,
    /// RFC 3339.
    sunset: Option<String>,
    validate_messages: bool,
    verify_ingest: Option<IngestView>,
    messages: BTreeMap<String, Vec<MessageView>>,
    /// The API's AsyncAPI document.
    asyncapi: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ApiList {
    apis: Vec<ApiView>,
}

/// A plan.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PlanView {
    name: String,
    description: Option<String>,
    publish: Option<RateView>,
    deliveries: Option<RateView>,
    max_connections: Option<u32>,
    max_subscriptions: Option<u32>,
    /// `pause` or `drop`.
    on_delivery_limit: String,
    approval_required: bool,
    origin: String,
    updated_at_ms: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct PlanList {
    plans: Vec<PlanView>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct PermissionView {
    topics: String,
    publish: bool,
    subscribe: bool,
}

/// An application.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AppView {
    id: String,
    name: Option<String>,
    description: Option<String>,
    /// The portal account that owns it, if a developer made it there.
    owner: Option<String>,
    permissions: Vec<PermissionView>,
    disabled: bool,
    origin: String,
    updated_at_ms: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AppList {
    applications: Vec<AppView>,
}

/// An application with its keys and access to APIs.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AppDetail {
    #[serde(flatten)]
    app: AppView,
    keys: Vec<KeyView>,
    access: Vec<AccessView>,
    /// The same as `access` (its older name).
    #[deprecated]
    subscriptions: Vec<AccessView>,
}

/// An API key (never the key itself).
#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyView {
    id: String,
    application: String,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
    revoked_at_ms: Option<u64>,
    origin: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyList {
    keys: Vec<KeyView>,
}

/// A new key, shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewKeyView {
    #[serde(flatten)]
    view: KeyView,
    key: String,
    note: String,
}

/// An application's access to an API.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AccessView {
    application: String,
    api: String,
    plan: String,
    /// `pending`, `approved` or `rejected`.
    state: String,
    origin: String,
    updated_at_ms: u64,
    /// WebSub subscriptions it holds (in lists).
    websub_subscriptions: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AccessList {
    access: Vec<AccessView>,
}

/// An OAuth2 client secret (never the secret itself).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SecretView {
    id: String,
    client_id: String,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
    revoked_at_ms: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct SecretList {
    client_secrets: Vec<SecretView>,
}

/// A new client secret, shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewSecretView {
    #[serde(flatten)]
    view: SecretView,
    client_secret: String,
    token_endpoint: String,
    note: String,
}

/// A developer portal account.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AccountView {
    id: String,
    email: String,
    name: Option<String>,
    /// `developer` or `admin`.
    role: String,
    /// `pending`, `active` or `disabled`.
    state: String,
    created_at_ms: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AccountList {
    accounts: Vec<AccountView>,
}

/// An open invitation (never its link).
#[derive(ToSchema)]
#[allow(dead_code)]
struct InvitationView {
    id: String,
    email: String,
    role: String,
    invited_by: Option<String>,
    created_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct InvitationList {
    invitations: Vec<InvitationView>,
}

/// A new invitation with its one-time link, shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewInvitationView {
    #[serde(flatten)]
    view: InvitationView,
    url: String,
}

/// A token signing key (public information only).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SigningKeyView {
    kid: String,
    current: bool,
    created_at_ms: u64,
    retired_at_ms: Option<u64>,
    verify_until_ms: Option<u64>,
    /// Whether its private key is sealed in the replicated state.
    sealed: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct SigningKeyList {
    keys: Vec<SigningKeyView>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct RotatedKey {
    kid: String,
}

/// `{"deleted": <name>}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Deleted {
    deleted: String,
}

/// `{"revoked": <id>}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Revoked {
    revoked: String,
}

#[derive(OpenApi)]
#[openapi(components(schemas(
    Left,
    RotatedSecret,
    Replayed,
    AttemptList,
    EndpointList,
    ApiList,
    ApiView,
    PlanList,
    PlanView,
    AppList,
    AppView,
    AppDetail,
    KeyList,
    NewKeyView,
    AccessList,
    AccessView,
    SecretList,
    NewSecretView,
    AccountList,
    AccountView,
    InvitationList,
    NewInvitationView,
    SigningKeyList,
    RotatedKey,
    Deleted,
    Revoked,
)))]
struct Views;

/// Every schema: the request and response types, and the problem document.
fn schemas() -> Value {
    let mut doc = Views::openapi();
    doc.merge(super::admin::Schemas::openapi());
    doc.merge(super::manage::Schemas::openapi());
    doc.merge(super::clients::Schemas::openapi());
    doc.merge(crate::portal::accounts::AdminSchemas::openapi());
    doc.merge(crate::portal::invitations::AdminSchemas::openapi());
    let mut schemas = serde_json::to_value(doc.components.unwrap_or_default())
        .ok()
        .and_then(|mut c| c.get_mut("schemas").map(Value::take))
        .unwrap_or_else(|| json!({}));
    schemas["Problem"] = json!({
        "type": "object",
        "description": "RFC 9457 problem details; `field` names the request field at fault.",
        "properties": {
            "type": { "type": "string", "format": "uri" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "field": { "type": "string" },
        },
    });
    schemas
}

/// A reference to schema `name` (`[Name]`: an array of them).
fn schema_ref(name: &str) -> Value {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(item) => {
            json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } })
        }
        None => json!({ "$ref": format!("#/components/schemas/{name}") }),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let problem = json!({ "description": "problem details", "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } });
        let mut responses = Map::new();
        let mut ok = json!({ "description": "success" });
        if let Some(name) = r.response {
            ok["content"] = json!({ "application/json": { "schema": schema_ref(name) } });
        }
        if r.method == "put" && r.ok == 201 {
            // Create or replace: 201 for a new one, 200 for one replaced, the same answer.
            responses.insert("200".to_owned(), ok.clone());
        }
        responses.insert(r.ok.to_string(), ok);
        for status in ["400", "401", "403", "404", "409", "503"] {
            responses.insert(status.to_owned(), problem.clone());
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": r.id,
            "tags": [tag(r.path)],
            "responses": responses,
        });
        if !parameters.is_empty() {
            op["parameters"] = json!(parameters);
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": schema_ref(body) } },
            });
        }
        let item = paths
            .entry(format!("/admin{}", r.path))
            .or_insert_with(|| json!({}));
        item[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "eventgate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cluster, WebSub records, dead letters, and API management (APIs, plans, applications, keys, access to APIs). `Authorization: Bearer <admin.token>`.",
        },
        "security": [{ "adminToken": [] }],
        "tags": [
            { "name": "Cluster", "description": "Members, leader, leaving" },
            { "name": "WebSub", "description": "Subscriptions, deliveries, endpoints, dead letters" },
            { "name": "APIs", "description": "Topics exposed as products" },
            { "name": "Plans", "description": "Rate, connection and subscription limits" },
            { "name": "Applications", "description": "Clients, their permissions and API keys" },
            { "name": "Access", "description": "Applications' access to APIs under a plan" },
            { "name": "OAuth2", "description": "Client secrets and token signing keys" },
            { "name": "Portal accounts", "description": "Developer portal accounts and invitations" },
            { "name": "Meta", "description": "This document" },
        ],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer" } },
        },
    })
}
