//! `GET /admin/openapi.json`: the OpenAPI 3.1 document of the admin API, generated from one
//! table of its routes (method, path, summary, request body schema, success status). A test
//! calls every route of the table against a running node, so the table cannot drift from the
//! router without failing.

use serde_json::{json, Map, Value};

/// One documented admin route.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: &'static str,
    /// Under `/admin`, with `{parameters}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// Schema name in `components.schemas` of the JSON body, if any.
    pub body: Option<&'static str>,
    pub ok: u16,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    ok: u16,
) -> Route {
    Route {
        method,
        path,
        summary,
        body,
        ok,
    }
}

/// Every route of the admin API.
pub const ROUTES: &[Route] = &[
    route(
        "get",
        "/cluster/status",
        "Leader, term and every member's state",
        None,
        200,
    ),
    route(
        "get",
        "/cluster/node",
        "This node's own Raft view",
        None,
        200,
    ),
    route(
        "post",
        "/cluster/leave",
        "Remove a member (this node when the body is empty)",
        Some("Leave"),
        200,
    ),
    route(
        "get",
        "/subscriptions",
        "Every WebSub subscription",
        None,
        200,
    ),
    route(
        "get",
        "/subscriptions/{id}",
        "One WebSub subscription with cursor and retries",
        None,
        200,
    ),
    route(
        "put",
        "/subscriptions/{id}",
        "Create or replace a WebSub subscription record",
        Some("SubscriptionRecord"),
        200,
    ),
    route(
        "delete",
        "/subscriptions/{id}",
        "Remove a WebSub subscription",
        None,
        204,
    ),
    route(
        "post",
        "/subscriptions/{id}/secret",
        "Rotate a subscription's secret (the old one signs too for the overlap); answers the new secret once",
        Some("RotateSecret"),
        200,
    ),
    route(
        "post",
        "/subscriptions/{id}/replay",
        "Deliver again, in order, a range of offsets or of times of one partition",
        None,
        200,
    ),
    route(
        "get",
        "/subscriptions/{id}/attempts",
        "The delivery ledger of a subscription (filters: outcome, status, message_id, since, until, limit)",
        None,
        200,
    ),
    route(
        "post",
        "/subscriptions/{id}/enable",
        "Re-enable a subscription disabled after its endpoint's long outage",
        None,
        200,
    ),
    route(
        "get",
        "/endpoints",
        "Callback endpoints paused by the circuit breaker, and disabled subscriptions",
        None,
        200,
    ),
    route(
        "post",
        "/endpoints/resume",
        "Close a paused endpoint's breaker now",
        None,
        204,
    ),
    route(
        "get",
        "/dead-letters",
        "Messages that exhausted their attempts",
        None,
        200,
    ),
    route(
        "delete",
        "/dead-letters/{id}/{partition}/{offset}",
        "Discard a dead letter",
        None,
        204,
    ),
    route(
        "post",
        "/dead-letters/{id}/{partition}/{offset}/redrive",
        "Deliver a dead letter once more",
        None,
        200,
    ),
    route("get", "/apis", "Every API", None, 200),
    route("get", "/apis/{name}", "One API", None, 200),
    route(
        "put",
        "/apis/{name}",
        "Create (201) or replace (200) an API",
        Some("Api"),
        201,
    ),
    route(
        "put",
        "/apis/{name}/lifecycle",
        "Move an API through its lifecycle (409 when the move is not allowed)",
        Some("Lifecycle"),
        200,
    ),
    route(
        "post",
        "/apis/import",
        "Create or replace an API from an AsyncAPI document (3.0, 3.1, 2.0-2.6; JSON or YAML body); query: name, base_path, validate_messages, topic.<channel id>; 400 invalid-document names the JSON pointer",
        None,
        201,
    ),
    route(
        "get",
        "/apis/{name}/asyncapi.json",
        "An API's AsyncAPI document in any lifecycle state (preview, export)",
        None,
        200,
    ),
    route(
        "get",
        "/apis/{name}/asyncapi.yaml",
        "The same as YAML",
        None,
        200,
    ),
    route(
        "delete",
        "/apis/{name}",
        "Delete an API and the applications' access to it",
        None,
        200,
    ),
    route("get", "/plans", "Every plan", None, 200),
    route("get", "/plans/{name}", "One plan", None, 200),
    route(
        "put",
        "/plans/{name}",
        "Create (201) or replace (200) a plan",
        Some("Plan"),
        201,
    ),
    route(
        "delete",
        "/plans/{name}",
        "Delete a plan no subscription uses",
        None,
        200,
    ),
    route("get", "/applications", "Every application", None, 200),
    route(
        "get",
        "/applications/{id}",
        "One application with its keys and access to APIs",
        None,
        200,
    ),
    route(
        "put",
        "/applications/{id}",
        "Create (201) or replace (200) an application",
        Some("Application"),
        201,
    ),
    route(
        "delete",
        "/applications/{id}",
        "Delete an application with its keys and access to APIs",
        None,
        200,
    ),
    route(
        "get",
        "/applications/{id}/keys",
        "An application's keys (never the secret)",
        None,
        200,
    ),
    route(
        "post",
        "/applications/{id}/keys",
        "Issue a key: shown once in the answer",
        Some("NewKey"),
        201,
    ),
    route(
        "delete",
        "/applications/{id}/keys/{key}",
        "Revoke a key on every node",
        None,
        200,
    ),
    route(
        "get",
        "/applications/{id}/client-secrets",
        "An application's OAuth2 client secrets (never the secret)",
        None,
        200,
    ),
    route(
        "post",
        "/applications/{id}/client-secrets",
        "Issue a client secret (shown once); the others keep working for the overlap",
        Some("NewClientSecret"),
        201,
    ),
    route(
        "delete",
        "/applications/{id}/client-secrets/{secret}",
        "Revoke a client secret and the access tokens issued on it",
        None,
        200,
    ),
    route(
        "get",
        "/accounts",
        "The developer portal's accounts (never their passwords)",
        None,
        200,
    ),
    route(
        "put",
        "/accounts/{id}",
        "Approve or disable a portal account (its sessions end), or change its role",
        Some("AccountUpdate"),
        200,
    ),
    route(
        "get",
        "/accounts/invitations",
        "Open invitations to the portal (never their links)",
        None,
        200,
    ),
    route(
        "post",
        "/accounts/invitations",
        "Invite an email address to the portal: answers a one-time link, shown once",
        Some("Invitation"),
        201,
    ),
    route(
        "delete",
        "/accounts/invitations/{id}",
        "Withdraw an invitation",
        None,
        200,
    ),
    route(
        "get",
        "/oauth2/keys",
        "The cluster's token signing keys (public information only)",
        None,
        200,
    ),
    route(
        "post",
        "/oauth2/keys/rotate",
        "Sign with a new key from now on; the previous one verifies its tokens until they expire",
        None,
        200,
    ),
    route(
        "get",
        "/applications/{id}/access",
        "An application's access to APIs (also at the deprecated /applications/{id}/subscriptions)",
        None,
        200,
    ),
    route(
        "put",
        "/applications/{id}/access/{api}",
        "Give an application access to an API under a plan",
        Some("Access"),
        200,
    ),
    route(
        "delete",
        "/applications/{id}/access/{api}",
        "End an application's access to an API",
        None,
        200,
    ),
    route(
        "post",
        "/applications/{id}/access/{api}/approve",
        "Approve pending access",
        None,
        200,
    ),
    route(
        "post",
        "/applications/{id}/access/{api}/reject",
        "Reject access",
        None,
        200,
    ),
    route("get", "/openapi.json", "This document", None, 200),
];

fn schemas() -> Value {
    let rate = json!({
        "type": "object", "required": ["count", "per"], "additionalProperties": false,
        "properties": {
            "count": { "type": "integer", "minimum": 1 },
            "per": { "type": "string", "description": "A duration: `1s`, `1m`, `1h`, 100ms to 24h" },
        },
    });
    json!({
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `field` names the request field at fault.",
            "properties": {
                "type": { "type": "string", "format": "uri" },
                "title": { "type": "string" },
                "status": { "type": "integer" },
                "detail": { "type": "string" },
                "field": { "type": "string" },
            },
        },
        "Leave": {
            "type": "object", "additionalProperties": false,
            "properties": { "node_id": { "type": "integer", "minimum": 1 } },
        },
        "SubscriptionRecord": {
            "type": "object", "required": ["topic", "callback", "lease_seconds"], "additionalProperties": false,
            "properties": {
                "topic": { "type": "string" },
                "callback": { "type": "string", "format": "uri" },
                "lease_seconds": { "type": "integer", "minimum": 1, "maximum": 31_536_000 },
                "secret": { "type": "string", "maxLength": 199 },
                "signing": { "enum": ["websub", "standard-webhooks"], "description": "standard-webhooks needs a whsec_<base64> secret" },
                "state": { "enum": ["pending_verification", "active", "pending_unsubscribe"] },
            },
        },
        "RotateSecret": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "secret": { "type": "string", "maxLength": 199, "description": "default: a random whsec_ secret" },
                "overlap": { "type": "string", "description": "how long the old secret signs too (`1h`; `0s`: not at all); default websub.secret_overlap" },
            },
        },
        "Invitation": {
            "type": "object", "required": ["email"], "additionalProperties": false,
            "properties": {
                "email": { "type": "string", "format": "email" },
                "role": { "enum": ["developer", "admin"] },
                "expires_in": { "type": "string", "description": "how long the link works (`7d`, the default; at most 30 days)" },
            },
        },
        "Api": {
            "type": "object", "required": ["channels"], "additionalProperties": false,
            "properties": {
                "version": { "type": "string" },
                "description": { "type": "string" },
                "tags": { "type": "array", "maxItems": 20, "items": { "type": "string", "minLength": 1, "maxLength": 50 }, "description": "words the portal's catalog shows and searches" },
                "base_path": { "type": "string", "pattern": "^(/[A-Za-z0-9._~-]+){1,8}$", "description": "the API's own routes: {base_path}/ws/{channel}, /sse/{channel}, /topics/{channel} (WebSub topic URLs), /webhook-receiver?topic={channel}, /asyncapi.json" },
                "channels": { "type": "object", "minProperties": 1, "additionalProperties": { "type": "string" }, "description": "channel name → gateway topic" },
                "entrypoints": { "type": "array", "items": { "enum": ["websub", "websocket", "sse", "webhook"] } },
                "security": { "type": "array", "items": { "enum": ["api_key", "jwt", "oauth2"] }, "description": "empty: keyless; default all three" },
                "max_message_bytes": { "type": "integer", "minimum": 1 },
                "schemas": { "type": "object", "additionalProperties": { "type": ["object", "boolean"] }, "description": "channel → JSON Schema of its messages' payloads (draft 7 unless `$schema` names another; no references outside the schema)" },
                "validate_messages": { "type": "boolean", "description": "refuse published messages that do not match their channel's schema (400 invalid-message, WebSocket close 1007)" },
                "verify_ingest": {
                    "type": "object", "required": ["scheme", "secret"], "additionalProperties": false,
                    "description": "the provider's signature required on webhook-receiver publishes (401 invalid-signature otherwise, nothing stored); the secret is never shown again",
                    "properties": {
                        "scheme": { "enum": ["github", "standard-webhooks", "hmac"] },
                        "secret": { "type": "string", "maxLength": 512, "description": "whsec_<base64> for standard-webhooks" },
                        "header": { "type": "string", "description": "hmac only; default X-Signature (hex or base64 HMAC-SHA256 of the body, optionally after sha256=)" },
                        "tolerance": { "type": "string", "description": "standard-webhooks: how far webhook-timestamp may be from now; default 5m, at most 1h" },
                    },
                },
                "lifecycle": { "enum": ["created", "published", "deprecated", "retired"], "description": "default: created for a new API, the current state for an existing one" },
                "sunset": { "type": "string", "format": "date-time", "description": "a deprecated API's planned retirement (Sunset header)" },
            },
        },
        "Lifecycle": {
            "type": "object", "required": ["state"], "additionalProperties": false,
            "properties": {
                "state": { "enum": ["created", "published", "deprecated", "retired"] },
                "sunset": { "type": "string", "format": "date-time" },
            },
        },
        "Plan": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "description": { "type": "string" },
                "publish": rate,
                "deliveries": rate,
                "max_connections": { "type": "integer", "minimum": 0 },
                "max_subscriptions": { "type": "integer", "minimum": 0 },
                "on_delivery_limit": { "enum": ["pause", "drop"] },
                "approval_required": { "type": "boolean" },
            },
        },
        "Application": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "description": "what people call it; the id stays" },
                "description": { "type": "string" },
                "disabled": { "type": "boolean" },
                "permissions": { "type": "array", "items": {
                    "type": "object", "required": ["topics"], "additionalProperties": false,
                    "properties": {
                        "topics": { "type": "string", "description": "topic name pattern; `*` matches any run of characters" },
                        "publish": { "type": "boolean" },
                        "subscribe": { "type": "boolean" },
                    },
                } },
            },
        },
        "NewKey": {
            "type": "object", "additionalProperties": false,
            "properties": { "expires_in": { "type": "string", "description": "validity, e.g. `90d`" } },
        },
        "AccountUpdate": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "state": { "enum": ["active", "disabled"] },
                "role": { "enum": ["developer", "admin"] },
            },
        },
        "NewClientSecret": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "overlap": { "type": "string", "description": "how long the application's other secrets keep working (`1h`; `0s`: stop now); default auth.oauth2.secret_overlap" },
                "expires_in": { "type": "string", "description": "validity of the new secret, e.g. `90d`" },
            },
        },
        "Access": {
            "type": "object", "required": ["plan"], "additionalProperties": false,
            "properties": { "plan": { "type": "string" } },
        },
    })
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
        responses.insert(r.ok.to_string(), json!({ "description": "success" }));
        for status in ["400", "401", "403", "404", "409", "503"] {
            responses.insert(status.to_owned(), problem.clone());
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '-', '.'], "_")),
            "responses": responses,
        });
        if !parameters.is_empty() {
            op["parameters"] = json!(parameters);
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } },
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
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer" } },
        },
    })
}
